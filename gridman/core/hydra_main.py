"""Hydra mains: ``@gridman.hydra_main(config_path, config_name, version_base=None)``.

A Hydra main turns an argv of Hydra overrides (``dset=studio optim.lr=0.001 +extra.tag=x``) into
an XP whose signature is the one Dora 0.1.13 gives the same argv, so a project moving over keeps
its XPs:

- a repeated key keeps its last value, at the place of its last occurrence;
- the delta is the config-group choices as written (``dset=studio`` is in the delta even when
  ``studio`` is the default) plus every dotted key whose resolved value differs between the
  config composed with those group choices only and the full config (interpolations included,
  a ``+key`` addition counts; a list or dict value is recorded unresolved, as Dora does);
- the config's ``dora:`` section gives ``dir`` (relative to where gridman runs), ``exclude``
  (fnmatch globs on dotted keys), ``git_save`` and ``shared``; ``dora.*`` and ``slurm.*`` never
  enter the delta; the ``slurm:`` section gives the XPs' default resources
  (:meth:`HydraMain.resource_defaults`).

Planning a grid composes once per distinct set of group choices (Hydra's composition costs
milliseconds): the other overrides of an XP are applied by Hydra's own override code to a copy
of that cached composition, which is what Hydra's composition does after the defaults list.
Anything else (``+group=x``, ``hydra.*`` keys, sweeps, packages) is composed from scratch.

Running an XP calls Hydra itself (``hydra.main``) with ``hydra.run.dir`` set to the XP folder,
so ``main(cfg)`` gets Hydra's composed config and, with ``version_base="1.1"``, runs with the XP
folder as working directory (Hydra's ``.hydra/`` lands there).

hydra-core and omegaconf are an extra (``pip install 'gridman[hydra]'``), imported only when a
Hydra main is defined: ``import gridman`` never imports them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast

from ..errors import ArgvError, ConfigError, HelpRequested, UsageError
from .config import flatten
from .main import MAINS, DecoratedMain, DoraConfig
from .project import find_root, load_project
from .resources import FIELD_NAMES
from .signature import Delta, canonical_of_delta, is_excluded, jsonable, sig_of_canonical
from .xp import XP, init_xp

HydraFunc = Callable[[Any], Any]

#: Keys Dora always leaves out of a Hydra XP's signature.
ALWAYS_EXCLUDED = ("dora.*", "slurm.*")
INSTALL_HINT = "install the extra: pip install 'gridman[hydra]' (hydra-core>=1.3, omegaconf>=2.3)"
#: Keys of Dora's ``DoraConfig``: a ``dora:`` section with another key is refused, as Dora does.
DORA_KEYS = frozenset({
    "dir", "exclude", "git_save", "post_git_save_commands", "local_code", "shared",
    "grid_package", "history", "xps", "shep", "rendezvous_file", "use_rendezvous",
})  # fmt: skip
#: Keys of Dora's ``SlurmConfig`` that gridman's resources have no use for (no error, unused).
DORA_ONLY_SLURM_KEYS = frozenset(
    {"dependents", "container_chdir", "force_chdir", "python", "mem_per_task"}
)
#: Hydra reads the module it names its job after from this variable (see _job_module).
_MODULE_ENV = "HYDRA_MAIN_MODULE"
_PLAIN_PATH = re.compile(r"[\w/.\-]+")


class HydraConfigError(ConfigError):
    """A Hydra main whose configuration cannot be loaded, composed or signed."""


def _require_hydra() -> None:
    """Fail at decoration time, with the install line, when the extra is missing."""
    try:
        import hydra  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError as exc:
        raise HydraConfigError(f"a Hydra main needs hydra-core and omegaconf ({exc})",
                               INSTALL_HINT) from None  # fmt: skip


#: The ``dora:`` section of a Hydra config: the ``main.dora`` object every main has (Dora's
#: names and meanings; ``dir`` absolute, a relative one taken from where gridman runs; ``extra``
#: the other keys Dora knows, which gridman reads but does not use).
DoraSection = DoraConfig


@dataclass
class _Composed:
    """A composition with group overrides only: what every XP of these choices starts from."""

    cfg: Any  # DictConfig, struct mode, without the hydra node
    plain: dict[str, Any]  # its values, resolved
    choices: dict[str, Any]  # every config group's choice (for names and tables)


class HydraMain(DecoratedMain):
    """A main configured by Hydra: argv = Hydra overrides, ``main(cfg)`` gets the config."""

    def __init__(
        self,
        func: HydraFunc,
        config_path: Optional[str],
        config_name: Optional[str],
        version_base: Optional[str] = None,
    ) -> None:
        _require_hydra()
        # DecoratedMain types its function as taking no argument; a Hydra main's takes cfg.
        super().__init__(cast("Callable[[], Any]", func), dir="./outputs", exclude=())
        self.hydra_func = func
        folder = self.source.parent
        # As hydra.main: config_path is relative to the file that defines the main.
        self.config_dir = (folder / config_path if config_path else folder).resolve()
        self.config_name = config_name
        self.version_base = version_base
        #: the job name Hydra gives a script run directly (logs: <job_name>.log)
        self.job_name = self.source.stem
        self._groups: Optional[frozenset[str]] = None
        self._composed: dict[tuple[str, ...], _Composed] = {}
        self._overrides: dict[str, Any] = {}  # parsed Override by argv token
        self._dora: Optional[DoraSection] = None

    # -- configuration read once ---------------------------------------------------------
    @property
    def exclude(self) -> list[str]:
        """Globs left out of signatures: ``dora.exclude``, then ``dora.*`` and ``slurm.*``."""
        return [*self._extra_exclude, *self.dora.exclude, *ALWAYS_EXCLUDED]

    @exclude.setter
    def exclude(self, value: Sequence[str]) -> None:
        self._extra_exclude = list(value)
        self._excluded: dict[str, bool] = {}  # by key, for these globs

    @property
    def dora(self) -> DoraSection:
        """The config's ``dora:`` section (read from the config composed without overrides)."""
        if self._dora is None:
            self._dora = _dora_section(self.defaults().get("dora"), self.config_dir)
        return self._dora

    def defaults(self) -> dict[str, Any]:
        """The resolved config composed without any override."""
        return self._compose_groups(()).plain

    def resource_defaults(self) -> dict[str, Any]:
        """The ``slurm:`` section as resource defaults of this main's XPs (Dora's key names;
        keys of Dora's that gridman does not use are dropped). A grid's ``launcher.slurm_()``
        and the command line's flags override them."""
        section = self.defaults().get("slurm") or {}
        if not isinstance(section, Mapping):
            raise HydraConfigError(f"{self.config_dir}: `slurm` must be a mapping, got {section!r}")
        unknown = sorted(
            k for k in section if k not in FIELD_NAMES and k not in DORA_ONLY_SLURM_KEYS
        )
        if unknown:
            raise HydraConfigError(
                f"{self.config_dir}: unknown key(s) in the `slurm` section: {', '.join(unknown)}",
                f"valid: {', '.join(FIELD_NAMES)}",
            )
        return {k: v for k, v in section.items() if k in FIELD_NAMES and v is not None}

    @property
    def dir(self) -> Path:
        """Where XP folders go: GRIDMAN_DIR, else gridman.yaml's ``dir``, else ``dora.dir``;
        for a main other than the project's, ``<that>/mains/<NAME>`` (as for every main)."""
        env_dir, in_attempt = os.environ.get("GRIDMAN_DIR"), "GRIDMAN_XP_SIG" in os.environ
        key = (env_dir, in_attempt, os.getcwd())
        cache = self._dir_cache
        if cache is None or cache[0] != key:
            cwd = Path.cwd()
            project = load_project(cwd if find_root(cwd) is not None else self.source.parent)
            self._main_id, name = self._identity(project)
            if in_attempt and env_dir:
                resolved = Path(env_dir).absolute()  # the root the parent chose for this main
            else:
                resolved = project.dir or self.dora.dir
                if not self.is_project_main(project):
                    resolved = resolved / MAINS / name
            self._dir_cache = cache = (key, resolved)
        return cache[1]

    def config_groups(self) -> frozenset[str]:
        """Every config group Hydra knows here, nested ones as ``model/scale`` (and Hydra's own)."""
        if self._groups is None:
            with self._hydra():
                from hydra.core.global_hydra import GlobalHydra

                hydra = GlobalHydra.instance().hydra
                assert hydra is not None
                self._groups = frozenset(hydra.list_all_config_groups())
        return self._groups

    # -- argv -> XP ----------------------------------------------------------------------
    def value_to_argv(self, key: str, value: Any) -> list[str]:
        # A group choice stays as written; any other value goes through Hydra's grammar.
        if key in self.config_groups():
            return [f"{key}={value}"]
        return [f"{key}={override_text(value)}"]

    def get_xp(self, argv: Sequence[str], dir: Optional[Path] = None) -> XP:
        if any(a in ("-h", "--help") for a in argv):
            raise HelpRequested(self.help_text())
        argv = simplify_argv([str(a) for a in argv])
        cfg, plain, delta, choices = self._evaluate(argv)
        delta = self._signed(delta)
        text = canonical_of_delta(delta)
        own = {k: v for k, v in choices.items() if k != "hydra" and not k.startswith("hydra/")}
        params = {**own, **flatten(plain)}
        root = dir or self.dir  # also resolves main_id
        return XP(cfg=cfg, argv=argv, delta=delta, sig=sig_of_canonical(text),
                  dir=root, params=params, _canonical=text, main=self.main_id)  # fmt: skip

    def parse(self, argv: Sequence[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(composed config, its flattened values, the flattened defaults). The delta of a
        Hydra main is not values-minus-defaults: :meth:`get_xp` computes it."""
        cfg, plain, _, _ = self._evaluate(simplify_argv([str(a) for a in argv]))
        return cfg, flatten(plain), flatten(self.defaults())

    def _evaluate(self, argv: list[str]) -> tuple[Any, dict[str, Any], Delta, dict[str, Any]]:
        """(full config, its resolved values, unsigned delta, group choices) of ``argv``."""
        groups = self.config_groups()
        kept = [a for a in argv if a.partition("=")[0] in groups]  # Dora's group choices
        rest = [a for a in argv if a.partition("=")[0] not in groups]
        base = self._compose_groups(tuple(kept))
        apply = _value_applier()
        if apply is not None and self._only_values(kept, rest, groups):
            cfg = copy.deepcopy(base.cfg)
            apply([self._override(a) for a in rest], cfg)
        else:
            cfg = self._compose(argv)[0]
        plain = _resolved(cfg, argv)
        delta: Delta = [(a.partition("=")[0], a.partition("=")[2]) for a in kept]
        delta += list(config_diff(base.plain, plain, cfg))
        return cfg, plain, delta, base.choices

    def _signed(self, delta: Delta) -> Delta:
        """The delta as signed: excluded keys out, sorted by key, values as JSON data."""
        patterns = self.exclude
        out = []
        for key, value in delta:
            excluded = self._excluded.get(key)
            if excluded is None:
                excluded = self._excluded[key] = is_excluded(key, patterns)
            if not excluded:
                out.append((key, jsonable(value)))
        out.sort(key=lambda pair: pair[0])
        return out

    def _only_values(self, kept: list[str], rest: list[str], groups: frozenset[str]) -> bool:
        """Whether ``rest`` only sets values (so the cached composition of ``kept`` plus these
        values is what Hydra composes): no other group override, no sweep, no package, no
        ``hydra.*`` key, and ``kept`` only plain group choices."""
        for arg in kept:
            o = self._override(arg)
            if o.package is not None or o.is_add() or o.is_delete() or o.is_force_add():
                return False
            if o.is_sweep_override() or isinstance(o.value(), dict):
                return False
        for arg in rest:
            o = self._override(arg)
            if o.package is not None or o.is_sweep_override() or o.is_hydra_override():
                return False
            if o.key_or_group in groups or o.key_or_group.startswith("hydra"):
                return False
        return True

    def _override(self, arg: str) -> Any:
        """Hydra's parse of one override, once per distinct token (grids repeat them)."""
        parsed = self._overrides.get(arg)
        if parsed is None:
            from hydra.core.override_parser.overrides_parser import OverridesParser
            from hydra.errors import HydraException

            try:
                parsed = _parser(OverridesParser).parse_overrides([arg])[0]
            except HydraException as exc:
                raise ArgvError(f"{arg!r} is not a Hydra override: {exc}") from None
            self._overrides[arg] = parsed
        return parsed

    # -- composition -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _hydra(self) -> Iterator[None]:
        """Hydra initialised on the config folder (its global state is restored after)."""
        from hydra import initialize_config_dir
        from hydra.errors import HydraException

        if not self.config_dir.is_dir():
            raise HydraConfigError(
                f"Hydra config folder {self.config_dir} does not exist",
                "config_path is relative to the file that defines the main",
            )
        with warnings.catch_warnings():
            # Hydra's notice about version_base="1.1" is for the run (Hydra shows it there),
            # not for each composition of a grid's plan.
            warnings.filterwarnings("ignore", message=r"\s*version_base")
            try:
                context = initialize_config_dir(
                    str(self.config_dir), job_name=self.job_name, version_base=self.version_base
                )
            except HydraException as exc:
                raise HydraConfigError(f"{self.config_dir}: {exc}") from None
            with context:
                yield

    def _compose_groups(self, kept: tuple[str, ...]) -> _Composed:
        """The composition with these group overrides only (cached: it depends on them alone)."""
        found = self._composed.get(kept)
        if found is None:
            cfg, choices = self._compose(list(kept))
            found = self._composed[kept] = _Composed(cfg, _resolved(cfg, kept), choices)
        return found

    def _compose(self, overrides: list[str]) -> tuple[Any, dict[str, Any]]:
        """Hydra's composition of ``overrides``: (config without the hydra node, choices)."""
        from hydra import compose
        from hydra.errors import HydraException
        from omegaconf import OmegaConf, open_dict
        from omegaconf.errors import OmegaConfBaseException

        with self._hydra():
            try:
                cfg = compose(self.config_name, overrides, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as exc:
                if not overrides:  # the config itself is wrong, not an XP's arguments
                    raise HydraConfigError(f"{self.config_dir}: {exc}") from None
                raise ArgvError(f"Hydra cannot compose {' '.join(overrides)}: {exc}") from None
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]  # what compose() leaves out of the config itself
        return cfg, dict(choices) if isinstance(choices, dict) else {}

    # -- running ---------------------------------------------------------------------------
    def run_argv(self, argv: Sequence[str]) -> Any:
        """Run the main on ``argv`` through Hydra, inside its XP (folder = hydra.run.dir).

        Hydra's own flags (``--help``, ``--cfg job``, ``-m``) go to Hydra alone, without an XP.
        """
        argv = [str(a) for a in argv]
        if any(a.startswith("-") for a in argv):
            return self._call_hydra(argv, None)
        xp = self.get_xp(argv)
        init_xp(xp)
        extra = [f"hydra.run.dir={_override_path(xp.folder)}"]
        if int(os.environ.get("RANK", "0") or 0) > 0:
            extra.append("hydra.output_subdir=null")  # one .hydra/ per XP: rank 0 writes it
        with xp.enter():
            return self._call_hydra([*xp.argv, *extra], xp)

    def _call_hydra(self, args: list[str], xp: Optional[XP]) -> Any:
        """``hydra.main`` on this main's function with ``args`` as its command line."""
        import hydra

        results: list[Any] = []
        previous = os.environ.get(_MODULE_ENV)

        @functools.wraps(self.func)
        def task(cfg: Any) -> None:
            _restore_env(_MODULE_ENV, previous)  # Hydra has read it: the XP's code never sees it
            if xp is not None:
                xp.cfg = cfg
            results.append(self.hydra_func(cfg))

        saved_argv = sys.argv
        sys.argv = [str(self.source), *args]
        # Hydra names its job (and log file) after the calling module: the script's name, as
        # when the script runs directly (gridman may import it under another module name).
        os.environ[_MODULE_ENV] = self.job_name
        try:
            hydra.main(config_path=str(self.config_dir), config_name=self.config_name,
                       version_base=self.version_base)(task)()  # fmt: skip
        finally:
            sys.argv = saved_argv
            _restore_env(_MODULE_ENV, previous)
        return results[0] if results else None

    def help_text(self) -> str:
        groups = sorted(g for g in self.config_groups() if not g.startswith("hydra"))
        lines = [f"{self.__name__}: Hydra config {self.config_name} in {self.config_dir}",
                 f"config groups: {', '.join(groups) or '(none)'}",
                 "override with key=value (+key=value adds a key); values:"]  # fmt: skip
        lines += [f"  {k}={json.dumps(v)}" for k, v in flatten(self.defaults()).items()]
        return "\n".join(lines)


def hydra_main(
    config_path: Optional[str] = None,
    config_name: Optional[str] = None,
    version_base: Optional[str] = None,
) -> Callable[[HydraFunc], HydraMain]:
    """Decorate ``main(cfg)`` configured by Hydra (Dora's ``hydra_main``).

    ``config_path`` is relative to the file defining the function; ``version_base`` is given
    to Hydra as is (``"1.1"``: the XP folder is the working directory during the run).
    """

    def decorator(func: HydraFunc) -> HydraMain:
        return HydraMain(func, config_path=config_path, config_name=config_name,
                         version_base=version_base)  # fmt: skip

    return decorator


# -- helpers (pure) -----------------------------------------------------------------------
def simplify_argv(argv: Sequence[str]) -> list[str]:
    """Each key once: a repeated key keeps its last value, at the place of its last occurrence
    (keys compared as written before ``=``, spaces around them ignored)."""
    last: dict[str, int] = {}
    for index, arg in enumerate(argv):
        key, sep, _ = arg.partition("=")
        if not sep and not arg.startswith("~"):  # ~key (a deletion) needs no value
            raise ArgvError(
                f"{arg!r} is not a Hydra override: a Hydra main takes key=value, "
                "+key=value (new key) or group=choice"
            )
        last[key.strip()] = index
    kept = set(last.values())
    return [arg for index, arg in enumerate(argv) if index in kept]


def override_text(value: Any) -> str:
    """``value`` written in Hydra's override grammar, which reads it back as the same value:
    JSON for scalars and lists (``1e-05``, ``true``, ``"linear"``, ``[3, 5, 7]``); Hydra has no
    JSON objects, so dicts are ``{key: value, ...}``."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, str)):
        return json.dumps(value)
    if isinstance(value, Mapping):
        items = (f"{_key_text(k)}: {override_text(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(override_text(v) for v in value) + "]"
    if isinstance(value, os.PathLike):
        return json.dumps(os.fspath(value))
    raise UsageError(
        f"cannot give {value!r} ({type(value).__name__}) to a Hydra main",
        "use str, int, float, bool, None, lists or dicts",
    )


def _key_text(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, (bool, int, float)):
        return str(key)
    if isinstance(key, str) and ":" not in key:
        return key
    raise UsageError(f"dict key {key!r} cannot be written as a Hydra override")


def config_diff(
    ref: Mapping[Any, Any], other: Mapping[Any, Any], cfg: Any, path: tuple[Any, ...] = ()
) -> Iterator[tuple[str, Any]]:
    """(dotted key, value in ``other``) for each leaf that differs, keys of ``ref`` first in
    sorted order, then keys only ``other`` has (whole subtrees). Values compare as Python
    does (``1 == 1.0``); a list or dict is recorded unresolved, as found in ``cfg``."""
    for key in _sorted(ref):
        here = (*path, key)
        if key not in other:
            raise ArgvError(
                f"the overrides delete {_dotted(here)!r}: an XP cannot be signed without it",
                # Dora's signature requires every key of the base config.
            )
        mine, theirs = ref[key], other[key]
        if isinstance(mine, dict) and isinstance(theirs, dict):
            yield from config_diff(mine, theirs, cfg, here)
        elif theirs != mine:
            yield _dotted(here), _recorded(theirs, cfg, here)
    for key in _sorted(k for k in other if k not in ref):
        here = (*path, key)
        yield _dotted(here), _recorded(other[key], cfg, here)


def _sorted(keys: Iterable[Any]) -> list[Any]:
    keys = list(keys)
    try:
        return sorted(keys)
    except TypeError:  # keys of several types (OmegaConf allows int keys)
        return sorted(keys, key=str)


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(k) for k in path)


def _recorded(value: Any, cfg: Any, path: tuple[Any, ...]) -> Any:
    """A scalar as resolved; a container as OmegaConf gives it without resolving (Dora's)."""
    if not isinstance(value, (dict, list)):
        return value
    from omegaconf import OmegaConf

    node = cfg
    for key in path:
        node = node[key]
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


def _resolved(cfg: Any, argv: Sequence[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ArgvError(f"the config of {' '.join(argv) or '(no override)'}: {exc}") from None
    assert isinstance(plain, dict)
    return cast("dict[str, Any]", plain)


@functools.lru_cache(maxsize=1)
def _value_applier() -> Optional[Callable[[list[Any], Any], None]]:
    """Hydra's own application of value overrides, which its composition does last; None
    where this Hydra has no such function (every XP is then composed from scratch)."""
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        method = ConfigLoaderImpl._apply_overrides_to_config
    except (ImportError, AttributeError):
        return None

    def apply(overrides: list[Any], cfg: Any) -> None:
        from hydra.errors import HydraException

        try:
            method(overrides, cfg)
        except HydraException as exc:
            raise ArgvError(str(exc).strip()) from None

    return apply


@functools.lru_cache(maxsize=1)
def _parser(cls: Any) -> Any:
    return cls.create()


def _override_path(path: Path) -> str:
    """A path as an override value (quoted unless Hydra's grammar reads it plain)."""
    text = str(path)
    if _PLAIN_PATH.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _restore_env(name: str, value: Optional[str]) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _dora_section(section: Any, where: Path) -> DoraSection:
    """Read a ``dora:`` section (Dora's keys; the ones gridman cannot honour are refused)."""
    section = dict(section or {}) if isinstance(section, Mapping) or section is None else section
    if not isinstance(section, dict):
        raise HydraConfigError(f"{where}: `dora` must be a mapping, got {section!r}")
    unknown = sorted(k for k in section if k not in DORA_KEYS)
    if unknown:
        listed = ", ".join(unknown)
        raise HydraConfigError(f"{where}: unknown key(s) in the `dora` section: {listed}",
                               f"valid: {', '.join(sorted(DORA_KEYS))}")  # fmt: skip
    for key, fixed in (("xps", "xps"), ("history", "history.json")):
        if section.get(key, fixed) != fixed:
            raise HydraConfigError(
                f"{where}: dora.{key}={section[key]!r} is not supported",
                f"gridman keeps XPs in <dir>/xps/<sig> with history.json: remove dora.{key}",
            )
    exclude = section.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(p, str) for p in exclude):
        raise HydraConfigError(f"{where}: dora.exclude must be a list of globs, got {exclude!r}")
    shared = section.get("shared")
    return DoraSection(
        dir=(Path.cwd() / str(section.get("dir") or "./outputs")).absolute(),
        exclude=tuple(exclude),
        git_save=bool(section.get("git_save", False)),
        shared=(Path.cwd() / str(shared)).absolute() if shared else None,
        extra={
            k: v for k, v in section.items() if k not in ("dir", "exclude", "git_save", "shared")
        },
    )
