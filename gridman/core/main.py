"""Decorated mains: the user's training entry point, which knows its defaults.

``@gridman.argparse_main(parser=..., dir=..., exclude=[...])`` and
``@gridman.yaml_main(config=..., dir=...)`` wrap the training function. A main turns an argv into
an XP (parsing it, computing the delta against the defaults, hashing it into a signature) and,
when called, runs the function inside that XP.

A project may hold several mains. The signature hashes the delta only (byte-identical to Dora's),
so two mains can give one signature to two different XPs: each XP records its main
(:attr:`DecoratedMain.main_id`, e.g. ``train.py:main``) and the project's main (``main:`` in
gridman.yaml; any main when none is declared) keeps ``<dir>/xps/<sig>``, while every other main
gets an XP root of its own, ``<dir>/mains/<NAME>/xps/<sig>`` (:data:`MAINS`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import io
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path, PurePath
from typing import Any, Optional

from ..errors import ArgvError, GridmanError, HelpRequested, UsageError
from . import fastargs
from .config import AttrDict, apply_overrides, flatten, load_mapping
from .signature import (
    Delta,
    _excluded,
    _same,
    canonical_of_delta,
    compute_delta,
    is_valid_sig,
    jsonable,
    sig_of_canonical,
)
from .xp import XP, init_xp, read_argv_file, xp_folder

Func = Callable[[], Any]
#: Under the project's XP root, the folder holding the XP roots of the mains other than the
#: project's own.
MAINS = "mains"


@dataclass(frozen=True)
class DoraConfig:
    """``main.dora``: Dora's names for where a main keeps its XPs and what it signs.

    ``dir`` is absolute; ``exclude`` the signature's exclude globs; ``git_save`` whether XPs
    run from a code snapshot; ``shared`` Dora's shared XP repository (read by
    :meth:`DecoratedMain.get_xp_from_sig`); ``extra`` the other Dora keys given, kept as read.
    """

    dir: Path
    exclude: tuple[str, ...] = ()
    git_save: bool = False
    shared: Optional[Path] = None
    extra: dict[str, Any] = field(default_factory=dict)


class DecoratedMain:
    """Base of the decorated mains: argv -> XP, and running the function inside it."""

    def __init__(self, func: Func, dir: str | os.PathLike[str], exclude: Sequence[str]) -> None:
        self.func = func
        self._dir = Path(dir)
        self._dir_cache: Optional[tuple[Any, Path]] = None
        self._main_id: Optional[str] = None
        self.exclude = list(exclude)
        self._git_save = False  # Dora's git_save keyword (argparse mains)
        self._shared: Optional[Path] = None  # Dora's shared keyword (argparse mains)
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
        """Where XP folders go: GRIDMAN_DIR, else gridman.yaml's ``dir``, else the decorator's;
        for a main other than the project's, ``<that>/mains/<NAME>`` (see :attr:`main_id`).

        Inside an attempt (the runner sets GRIDMAN_XP_SIG), GRIDMAN_DIR is the XP root the
        parent resolved for this very main, used as is. Resolved once per process and per
        GRIDMAN_DIR value (it is read for every XP).
        """
        env_dir, in_attempt = os.environ.get("GRIDMAN_DIR"), "GRIDMAN_XP_SIG" in os.environ
        key = (env_dir, in_attempt, os.getcwd())
        cache = getattr(self, "_dir_cache", None)
        if cache is None or cache[0] != key:
            from .project import load_project

            project = load_project(_project_start(self.source))
            self._main_id, name = self._identity(project)
            if in_attempt and env_dir:
                resolved = Path(env_dir).absolute()
            else:
                resolved = project.dir or project.resolve(self._dir)
                if not self.is_project_main(project):
                    resolved = resolved / MAINS / name
            self._dir_cache = (key, resolved)
            cache = self._dir_cache
        return cache[1]

    @property
    def dora(self) -> DoraConfig:
        """Dora's ``main.dora``: ``dir`` is this main's XP root (:attr:`dir`), ``exclude`` its
        globs, ``git_save`` and ``shared`` as given to the decorator (a Hydra main reads them
        from its config's ``dora:`` section instead)."""
        git_save = bool(self._git_save or getattr(self, "git_save", False) is True)
        return DoraConfig(dir=self.dir, exclude=tuple(self.exclude), git_save=git_save,
                          shared=self._shared)  # fmt: skip

    @property
    def main_id(self) -> str:
        """The main as recorded in argv.json: its file relative to the project root and its
        name in that file (``examples/train_yaml.py:main``)."""
        if getattr(self, "_main_id", None) is None:
            from .project import load_project

            self._main_id = self._identity(load_project(_project_start(self.source)))[0]
        return str(self._main_id)

    def _attr_name(self) -> str:
        """The name this main has in its module (``main`` preferred), else the function's."""
        module = sys.modules.get(getattr(self.func, "__module__", ""), None)
        names = [n for n, v in vars(module).items() if v is self] if module else []
        return "main" if "main" in names else (names[0] if names else self.__name__)

    def _identity(self, project: Any) -> tuple[str, str]:
        """(main_id, folder name under ``mains/``) of this main in ``project``."""
        try:
            rel = self.source.relative_to(project.root).as_posix()
        except ValueError:
            rel = self.source.as_posix()
        attr = self._attr_name()
        stem = rel[:-3] if rel.endswith(".py") else rel
        name = stem.strip("/").replace("/", ".") + ("" if attr == "main" else f".{attr}")
        return f"{rel}:{attr}", name

    def is_project_main(self, project: Any) -> bool:
        """True for the project's main: the one gridman.yaml's ``main:`` names (as the loader
        picks it: ``:NAME``, else ``main``, else the file's only main); without a declared
        main, every main is (they share ``<dir>/xps``, where argv.json refuses a merge)."""
        spec = project.main_spec
        if not spec:
            return True
        target, _, attr = spec.partition(":")
        file = _spec_file(project, target)
        if file is None or not _same_file(file, self.source):
            return False
        if attr:
            return attr == self._attr_name()
        module = sys.modules.get(getattr(self.func, "__module__", ""), None)
        found = (
            [v for n, v in vars(module).items() if isinstance(v, DecoratedMain)] if module else []
        )
        named = vars(module).get("main") if module else None
        if isinstance(named, DecoratedMain):
            return named is self
        return len(found) <= 1

    def get_xp(self, argv: Sequence[str], dir: Optional[Path] = None) -> XP:
        """Parse ``argv`` into an XP (nothing is written)."""
        argv = [str(a) for a in argv]
        cfg, values, defaults = self.parse(argv)
        delta = self.compute_delta(values, defaults)
        text = canonical_of_delta(delta)
        sig = sig_of_canonical(text)
        root = self.dir  # also resolves main_id
        return XP(cfg=cfg, argv=argv, delta=delta, sig=sig, dir=dir or root,
                  params=_shown(values), _canonical=text, main=self.main_id)  # fmt: skip

    def compute_delta(self, values: dict[str, Any], defaults: dict[str, Any]) -> Delta:
        """The signed delta of parsed ``values`` (sorted by key, excluded keys out)."""
        return compute_delta(values, defaults, self.exclude)

    def get_argv_from_sig(self, sig: str) -> list[str]:
        """The argv recorded for ``sig`` (its ``argv.json``, else Dora's shared repository)."""
        if not is_valid_sig(sig):
            raise UsageError(f"{sig!r} is not a signature", "a signature is 8 hex characters")
        folder = xp_folder(self.dir, sig)
        with contextlib.suppress(OSError, ValueError):
            return [str(a) for a in read_argv_file(folder)["argv"]]
        shared = self.dora.shared
        if shared is not None:  # Dora writes the argv alone there, as a JSON list
            with contextlib.suppress(OSError, ValueError):
                data = json.loads((shared / "xps" / sig / ".argv.json").read_text())
                if isinstance(data, list):
                    return [str(a) for a in data]
        raise UsageError(
            f"no initialised XP with signature {sig} under {folder.parent} (no argv.json)",
            "an XP is known by its signature once initialised: run `gridman grid NAME --init` "
            "(or run it once)",
        )

    def get_xp_from_sig(self, sig: str) -> XP:
        """The XP of ``sig``, rebuilt from its recorded argv (Dora's ``get_xp_from_sig``)."""
        xp = self.get_xp(self.get_argv_from_sig(sig))
        if xp.sig != sig:  # the main's parser or defaults changed since the XP was recorded
            raise UsageError(
                f"the argv recorded for {sig} now gives signature {xp.sig}",
                "the main's options or defaults changed since; its folder is "
                f"{xp_folder(self.dir, sig)}",
            )
        return xp

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


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    """The values as the grid's names and tables show them: paths as text (a ``type=Path``
    option with a string default is in every delta, so its value is in every XP's name)."""
    if not any(isinstance(v, PurePath) for v in values.values()):
        return values
    return {k: str(v) if isinstance(v, PurePath) else v for k, v in values.items()}


def _project_start(source: Path) -> Path:
    # The project is found from the current directory, else from the main's own file.
    from .project import find_root

    cwd = Path.cwd()
    return cwd if find_root(cwd) is not None else source.parent


def _spec_file(project: Any, target: str) -> Optional[Path]:
    """The file a main spec's module part names, found without importing it."""
    if target.endswith(".py") or os.sep in target:
        return Path(project.resolve(target))
    rel = Path(*target.split("."))
    for candidate in (project.root / f"{rel}.py", project.root / rel / "__init__.py"):
        if candidate.is_file():
            return Path(candidate)
    file = getattr(sys.modules.get(target), "__file__", None)
    if file:
        return Path(str(file))
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    return Path(found.origin) if found is not None and found.origin else None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.absolute() == b.absolute()


class ArgparseMain(DecoratedMain):
    """A main whose configuration is an ``argparse`` parser."""

    def __init__(
        self,
        func: Func,
        parser: argparse.ArgumentParser,
        *,
        use_underscore: Optional[bool] = None,
        slurm: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(func, **kwargs)
        self.parser = parser
        #: Dora's keyword: True keys as written, False ``_`` -> ``-``, None either matches
        self.use_underscore = use_underscore
        self._slurm = _slurm_defaults(slurm)
        self._defaults: Optional[dict[str, Any]] = None
        self._raw: dict[str, Any] = {}  # parser.get_default by key
        self._table: Any = False  # option table of fastargs, computed on first use

    def resource_defaults(self) -> dict[str, Any]:
        """The ``slurm=`` given to :func:`argparse_main`, as the XPs' default resources."""
        return dict(self._slurm)

    def compute_delta(self, values: dict[str, Any], defaults: dict[str, Any]) -> Delta:
        """Dora's delta: each value compared with ``parser.get_default`` (the raw default), so
        an option whose default is a string and whose ``type`` converts it (``type=Path``,
        ``default="data"``) is in every delta, as in Dora: it never splits XPs, it only
        changes the hash, and keeping it keeps a project's Dora signatures."""
        delta: Delta = []
        patterns = tuple(self.exclude)
        raw = self._raw
        for key in sorted(values):
            value = values[key]
            if key not in raw:
                raw[key] = self.parser.get_default(key)
            if not _differs(raw[key], value):
                continue
            if patterns and _excluded(key, patterns):
                continue
            delta.append((key, jsonable(value)))
        return delta

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
        if self.use_underscore is None:  # gridman's matching: either spelling finds the flag
            action = self._action_for(key)
            flag = _pick_option(action, key)
        else:  # Dora's: the key as written, or with `_` -> `-` (use_underscore=False)
            flag = f"--{key if self.use_underscore else key.replace('_', '-')}"
            action = self._action_for_flag(flag, key)
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

    def _action_for_flag(self, flag: str, key: str) -> argparse.Action:
        for action in self.parser._actions:
            if flag in action.option_strings:
                return action
        how = "as written" if self.use_underscore else "with `_` -> `-`"
        raise ArgvError(
            f"the training parser has no option {flag} (key {key!r}: use_underscore="
            f"{self.use_underscore} uses launcher keys {how}); options: "
            + ", ".join(o for a in self.parser._actions for o in a.option_strings if o != "-h")
        )

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


def _differs(raw: Any, value: Any) -> bool:
    """Dora's test, ``raw != value`` (so ``True`` equals a default of 1, a list differs from
    a tuple default and a NaN default differs from itself); a comparison that raises or is
    not a bool (an array) is decided by gridman's own rule instead."""
    try:
        result = raw != value
    except Exception:
        return not _same(value, raw)
    return result if type(result) is bool else not _same(value, raw)


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
    slurm: Any = None,
    shared: Optional[str | os.PathLike[str]] = None,
    use_underscore: Optional[bool] = None,
    **kwargs: Any,
) -> Callable[[Func], ArgparseMain]:
    """Decorate a training function whose arguments come from ``parser``.

    Dora's keywords keep Dora's meaning: ``slurm`` (a mapping or Dora's ``SlurmConfig``) gives
    the XPs' default resources, ``shared`` Dora's shared XP repository, ``use_underscore``
    how launcher keys become flags (not given: ``batch_size`` finds ``--batch_size`` or
    ``--batch-size``), and Dora's ``DoraConfig`` keys (``git_save`` ...) go through
    ``**kwargs``; a key gridman cannot honour raises :class:`UsageError` saying why.
    """
    git_save = _dora_keywords(kwargs)
    defaults = _slurm_defaults(slurm)  # checked now, at decoration

    def decorator(func: Func) -> ArgparseMain:
        main = ArgparseMain(func, parser=parser, dir=dir, exclude=exclude,
                            use_underscore=use_underscore, slurm=defaults)  # fmt: skip
        main._git_save = git_save
        main._shared = None if shared is None else Path(shared).absolute()
        return main

    return decorator


#: Dora's ``DoraConfig`` keys gridman cannot honour, with the value that means "as Dora's
#: default" (accepted) and why another value is refused.
_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "post_git_save_commands": ([], "gridman's code snapshot is a plain git checkout of the "
                               "commit; run such commands at the start of the main"),
    "local_code": (False, "XPs run from the snapshot where it lies (<dir>/codes); there is no "
                   "copy to /tmp"),
    "grid_package": (None, "grids are found from gridman.yaml (`main:` package's grids/, or "
                     "`grids_dir:`): set it there"),
    "history": ("history.json", "gridman keeps metrics in <dir>/xps/<sig>/history.json"),
    "xps": ("xps", "gridman keeps XPs in <dir>/xps/<sig>"),
    "shep": (None, "Dora's Shepherd file names: gridman records jobs in its own files"),
    "rendezvous_file": ("rendezvous.txt", "gridman.distrib sets up distributed runs itself"),
    "use_rendezvous": (False, "gridman.distrib sets up distributed runs itself (no file "
                       "rendezvous)"),
    "_grids": ("grids", "a Dora internal"),
    "_codes": ("codes", "a Dora internal"),
}  # fmt: skip


def _dora_keywords(kwargs: Mapping[str, Any]) -> bool:
    """Check Dora's ``DoraConfig`` keywords given to argparse_main; returns ``git_save``."""
    for key, value in kwargs.items():
        if key == "git_save":
            if not isinstance(value, bool):
                raise UsageError(f"argparse_main(git_save={value!r}): give True or False")
        elif key in _UNSUPPORTED:
            default, why = _UNSUPPORTED[key]
            if value != default:
                hint = f"remove {key}= (Dora's default, {default!r}, is accepted)"
                raise UsageError(f"argparse_main({key}={value!r}) is not supported: {why}", hint)
        else:
            known = ", ".join(["dir", "exclude", "slurm", "shared", "use_underscore",
                               "git_save", *_UNSUPPORTED])  # fmt: skip
            raise UsageError(f"argparse_main() got an unknown keyword {key!r}",
                             f"Dora's keywords: {known}")  # fmt: skip
    return bool(kwargs.get("git_save", False))


#: Keys of Dora's ``SlurmConfig`` that gridman's resources have no use for (no error, unused).
_DORA_ONLY_SLURM = frozenset({"dependents", "container_chdir", "force_chdir", "python",
                              "mem_per_task"})  # fmt: skip


def _slurm_defaults(slurm: Any) -> dict[str, Any]:
    """``slurm=`` (a mapping, or a dataclass such as Dora's ``SlurmConfig``, all of whose
    fields count, as in Dora) as resource defaults; an unknown key raises UsageError."""
    from .resources import FIELD_NAMES

    if slurm is None:
        return {}
    if is_dataclass(slurm) and not isinstance(slurm, type):
        items = asdict(slurm)
    elif isinstance(slurm, Mapping):
        items = dict(slurm)
    else:
        raise UsageError(f"argparse_main(slurm={slurm!r}): give a mapping of resources")
    unknown = sorted(k for k in items if k not in FIELD_NAMES and k not in _DORA_ONLY_SLURM)
    if unknown:
        raise UsageError(f"argparse_main(slurm=...): unknown key(s) {', '.join(unknown)}",
                         f"valid: {', '.join(FIELD_NAMES)}")  # fmt: skip
    return {k: v for k, v in items.items() if k in FIELD_NAMES and v is not None}


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
