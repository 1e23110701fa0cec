"""Decorated mains: the user's training entry point, which knows its defaults.

``@gridman.argparse_main(parser=..., dir=..., exclude=[...])`` and
``@gridman.yaml_main(config=..., dir=...)`` wrap the training function. A main turns an argv into
an XP (parsing it, computing the delta against the defaults, hashing it into a signature) and,
when called, runs the function inside that XP.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from ..errors import ArgvError, GridmanError, HelpRequested
from . import fastargs
from .config import AttrDict, apply_overrides, flatten, load_mapping
from .signature import canonical_of_delta, compute_delta, sig_of_canonical
from .xp import XP, init_xp

Func = Callable[[], Any]


class DecoratedMain:
    """Base of the decorated mains: argv -> XP, and running the function inside it."""

    def __init__(self, func: Func, dir: str | os.PathLike[str], exclude: Sequence[str]) -> None:
        self.func = func
        self._dir = Path(dir)
        self._dir_cache: Optional[tuple[tuple[Optional[str], str], Path]] = None
        self.exclude = list(exclude)
        self.source = Path(inspect.getfile(func)).absolute()
        self.__doc__ = func.__doc__
        self.__name__ = getattr(func, "__name__", "main")

    # -- what subclasses provide -------------------------------------------------------
    def parse(self, argv: Sequence[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """argv -> (cfg, parsed values by key, default values by key). Raises ArgvError."""
        raise NotImplementedError

    def value_to_argv(self, key: str, value: Any) -> list[str]:
        """The argv tokens that set ``key`` to ``value`` (used by grid launchers)."""
        raise NotImplementedError

    # -- shared behaviour ---------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """Where XP folders go: GRIDMAN_DIR, else gridman.yaml's ``dir``, else the decorator's.

        Resolved once per process and per GRIDMAN_DIR value (it is read for every XP).
        """
        key = (os.environ.get("GRIDMAN_DIR"), os.getcwd())
        if self._dir_cache is None or self._dir_cache[0] != key:
            from .project import load_project

            project = load_project(_project_start(self.source))
            resolved = project.dir or project.resolve(self._dir)
            self._dir_cache = (key, resolved)
        return self._dir_cache[1]

    def get_xp(self, argv: Sequence[str], dir: Optional[Path] = None) -> XP:
        """Parse ``argv`` into an XP (nothing is written)."""
        argv = [str(a) for a in argv]
        cfg, values, defaults = self.parse(argv)
        delta = compute_delta(values, defaults, self.exclude)
        text = canonical_of_delta(delta)
        sig = sig_of_canonical(text)
        return XP(cfg=cfg, argv=argv, delta=delta, sig=sig, dir=dir or self.dir, params=values,
                  _canonical=text)  # fmt: skip

    def run_argv(self, argv: Sequence[str]) -> Any:
        """Build the XP for ``argv``, create its folder and run the function inside it."""
        xp = self.get_xp(argv)
        init_xp(xp)
        with xp.enter():
            return self.func()

    def __call__(self, argv: Optional[Sequence[str]] = None) -> Any:
        """Entry point of ``python train.py ...``: errors print like a script's and exit."""
        try:
            return self.run_argv(sys.argv[1:] if argv is None else argv)
        except HelpRequested as exc:
            print(exc.message)
            raise SystemExit(0) from None
        except GridmanError as exc:
            print(str(exc), file=sys.stderr)
            raise SystemExit(exc.exit_code) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source}:{self.__name__})"


def _project_start(source: Path) -> Path:
    # The project is found from the current directory, else from the main's own file.
    from .project import find_root

    cwd = Path.cwd()
    return cwd if find_root(cwd) is not None else source.parent


class ArgparseMain(DecoratedMain):
    """A main whose configuration is an ``argparse`` parser."""

    def __init__(self, func: Func, parser: argparse.ArgumentParser, **kwargs: Any) -> None:
        super().__init__(func, **kwargs)
        self.parser = parser
        self._defaults: Optional[dict[str, Any]] = None
        self._table: Any = False  # option table of fastargs, computed on first use

    def parse(self, argv: Sequence[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        defaults = self.defaults()
        if self._table is False:
            self._table = fastargs.option_table(self.parser)
        if self._table is not None:
            values = fastargs.fast_parse(self._table, defaults, argv)
            if values is not None:
                return argparse.Namespace(**values), values, defaults
        return self.slow_parse(argv)

    def slow_parse(self, argv: Sequence[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Parse with argparse itself (the reference; it also writes the error messages)."""
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                namespace = self.parser.parse_args(list(argv))
        except SystemExit as exc:
            if not exc.code:
                raise HelpRequested(out.getvalue().rstrip()) from None
            raise ArgvError(err.getvalue().rstrip() or f"bad arguments: {argv}") from None
        return namespace, vars(namespace), self.defaults()

    def defaults(self) -> dict[str, Any]:
        """Each destination's default, converted by its ``type`` as argparse itself does."""
        if self._defaults is None:
            self._defaults = self._compute_defaults()
        return dict(self._defaults)

    def _compute_defaults(self) -> dict[str, Any]:
        # set_defaults() values for destinations without an action, then every action's default
        defaults: dict[str, Any] = dict(getattr(self.parser, "_defaults", {}))
        for action in self.parser._actions:
            if action.dest == argparse.SUPPRESS or action.default == argparse.SUPPRESS:
                continue
            default = action.default
            if isinstance(default, str) and action.type is not None:
                with contextlib.suppress(Exception):
                    default = self.parser._get_value(action, default)
            defaults[action.dest] = default
        return defaults

    def value_to_argv(self, key: str, value: Any) -> list[str]:
        action = self._action_for(key)
        flag = _pick_option(action, key)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            wanted = not action.default
            if value is wanted:
                return [flag]
            if value is (not wanted):
                return []
            raise ArgvError(f"{key}={value!r}: {flag} is a flag, give True or False")
        if value is True and isinstance(action, argparse._StoreConstAction):
            return [flag]
        if isinstance(value, (list, tuple)):
            return [flag, *(_scalar(v) for v in value)]
        return [f"{flag}={_scalar(value)}"]

    def _action_for(self, key: str) -> argparse.Action:
        wanted = key.replace("-", "_")
        for action in self.parser._actions:
            if action.dest == wanted and action.option_strings:
                return action
        options = sorted(a.dest for a in self.parser._actions if a.option_strings)
        import difflib

        close = difflib.get_close_matches(wanted, options, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ArgvError(
            f"the training parser has no option for {key!r}; {hint}options: "
            f"{', '.join(o for o in options if o != 'help')}"
        )


def _pick_option(action: argparse.Action, key: str) -> str:
    for candidate in (f"--{key}", f"--{key.replace('_', '-')}", f"--{key.replace('-', '_')}"):
        if candidate in action.option_strings:
            return candidate
    longs = [o for o in action.option_strings if o.startswith("--")]
    return (longs or action.option_strings)[0]


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)  # what json.dumps writes for a number, at a fraction of the cost
    return json.dumps(value)


class YamlMain(DecoratedMain):
    """A main configured by a YAML file, overridden by ``key=value`` tokens."""

    def __init__(self, func: Func, config: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(func, **kwargs)
        path = Path(config)
        self.config_path = path if path.is_absolute() else self.source.parent / path
        self._base: Optional[dict[str, Any]] = None

    @property
    def base(self) -> dict[str, Any]:
        """The configuration file's content (loaded once)."""
        if self._base is None:
            self._base = load_mapping(self.config_path)
        return self._base

    def parse(self, argv: Sequence[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        if any(a in ("-h", "--help") for a in argv):
            raise HelpRequested(self.help_text())
        cfg = apply_overrides(self.base, argv, str(self.config_path))
        return AttrDict(cfg), flatten(cfg), flatten(self.base)

    def help_text(self) -> str:
        lines = [f"{self.__name__}: configured by {self.config_path}", "override with key=value:"]
        lines += [f"  {k}={json.dumps(v)}" for k, v in flatten(self.base).items()]
        return "\n".join(lines)

    def value_to_argv(self, key: str, value: Any) -> list[str]:
        text = value if isinstance(value, str) else json.dumps(value)
        prefix = "" if key in flatten(self.base) else "+"
        return [f"{prefix}{key}={text}"]


def argparse_main(
    parser: argparse.ArgumentParser,
    *,
    dir: str | os.PathLike[str] = "./outputs",
    exclude: Sequence[str] = (),
) -> Callable[[Func], ArgparseMain]:
    """Decorate a training function whose arguments come from ``parser``."""

    def decorator(func: Func) -> ArgparseMain:
        return ArgparseMain(func, parser=parser, dir=dir, exclude=exclude)

    return decorator


def yaml_main(
    config: str | os.PathLike[str],
    *,
    dir: str | os.PathLike[str] = "./outputs",
    exclude: Sequence[str] = (),
) -> Callable[[Func], YamlMain]:
    """Decorate a training function configured by the YAML file ``config``.

    ``config`` is relative to the file that defines the function.
    """

    def decorator(func: Func) -> YamlMain:
        return YamlMain(func, config=config, dir=dir, exclude=exclude)

    return decorator
