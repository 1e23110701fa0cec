"""Explore functions: ``Explorer``, ``Launcher`` and the ``Herd`` they fill.

API-compatible with Dora's ``dora.explore``: a grid file written for Dora runs after changing its
imports. Every launcher call becomes an XP, validated at once (parsed by the main); a bad
argument aborts the whole grid with the grid file and line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import GridmanError, SignatureCollisionError, UsageError
from .perf import memoised, paused_gc
from .resources import Resources

if TYPE_CHECKING:
    from .jobs import JobRecord
    from .main import DecoratedMain
    from .xp import XP


#: ``value_to_argv`` results by (key, value type, value), shared by the launchers of a grid.
ArgvMemo = dict[tuple[str, type, Any], list[str]]


class GridFileError(UsageError):
    """A launcher call in a grid file is invalid; the message names the file and line."""


@dataclass
class Sheep:
    """An XP of a grid together with its latest job record."""

    xp: XP
    resources: Resources
    array: int
    job: Optional[JobRecord] = None
    origin: str = ""

    @property
    def sig(self) -> str:
        return self.xp.sig

    @property
    def state(self) -> Optional[str]:
        return self.job.state.value if self.job and self.job.state else None

    @property
    def log(self) -> Optional[Path]:
        """The latest attempt's log file (Dora's ``sheep.log``); None when there is no job."""
        latest = self.job.latest if self.job else None
        if latest is None or not latest.log:
            return None
        return self.xp.folder / latest.log

    def for_explorer(self) -> ExplorerSheep:
        """What ``Explorer.process_sheep`` gets: this XP as Dora's Sheep shows it."""
        job = None
        if self.job is not None:
            latest = self.job.latest
            job = SheepJob(latest.job_id if latest else None, self.state, self.job)
        return ExplorerSheep(self.xp, job, self.log, self.resources, self.origin)


@dataclass(frozen=True)
class SheepJob:
    """Dora's ``sheep.job`` (a submitit job there): the latest attempt's ``job_id`` (a Slurm
    job id, a local pool's queue entry ...), the XP's ``state`` (``"COMPLETED"``, ...) and the
    whole job record."""

    job_id: Optional[str]
    state: Optional[str]
    record: JobRecord


@dataclass(frozen=True)
class ExplorerSheep:
    """The Sheep that ``process_sheep(sheep, history)`` gets, shaped as Dora's: ``xp``, ``job``
    (None when the XP never ran) and ``log`` (the latest attempt's log path, None without a
    job), plus what gridman knows besides (``resources``, ``origin``: the grid file's line)."""

    xp: XP
    job: Optional[SheepJob]
    log: Optional[Path]
    resources: Resources
    origin: str = ""

    @property
    def sig(self) -> str:
        return self.xp.sig

    @property
    def state(self) -> Optional[str]:
        return self.job.state if self.job else None


@dataclass(frozen=True)
class Merged:
    """Launcher calls whose arguments differ only in excluded keys: one XP for both.

    ``count``: how many calls were merged into an XP asked for before; ``first`` and
    ``second``: the first such pair (origins and the values that differ, by key)."""

    count: int
    sig: str
    first: tuple[str, dict[str, Any]]
    second: tuple[str, dict[str, Any]]

    def keys(self) -> list[str]:
        return sorted(self.first[1])


@dataclass
class Herd:
    """The deduplicated XPs a grid asks for, in order, grouped into job arrays."""

    sheeps: dict[str, Sheep] = field(default_factory=dict)
    job_arrays: list[list[str]] = field(default_factory=list)
    duplicates: int = 0
    #: resources of the open ``job_array()`` block, None outside one
    array_resources: Optional[Resources] = None
    #: where the XPs go (the main's ``dir``, read once per herd rather than once per XP)
    xp_dir: Optional[Path] = None
    #: ``value_to_argv`` results by (key, value type, value): a grid repeats its values
    argv_memo: ArgvMemo = field(default_factory=dict)
    #: calls merged into an earlier XP although their values differ (an ``exclude`` did it)
    merged: Optional[Merged] = None

    def add(self, xp: XP, resources: Resources, origin: str) -> None:
        old = self.sheeps.get(xp.sig)
        if old is not None:
            if old.xp.canonical != xp.canonical:
                raise SignatureCollisionError(
                    f"{origin}: signature collision: {xp.sig} is both "
                    f"{old.xp.canonical} ({old.origin}) and {xp.canonical}",
                    "exclude or rename a parameter so that these XPs differ",
                )
            self.duplicates += 1
            if old.xp.params != xp.params:  # not the same call twice (Dora grids do that)
                self._merged(old, xp, origin)
            return
        if self.array_resources is None:
            self.job_arrays.append([])  # a call outside job_array() is an array of one
        self.sheeps[xp.sig] = Sheep(xp, resources, len(self.job_arrays) - 1, origin=origin)
        self.job_arrays[-1].append(xp.sig)

    def _merged(self, old: Sheep, xp: XP, origin: str) -> None:
        """Count a call whose values differ from ``old``'s only where the signature does not
        look (excluded keys); the first pair is kept as the example."""
        if self.merged is not None:
            self.merged = replace(self.merged, count=self.merged.count + 1)
            return
        a, b = old.xp.params, xp.params
        keys = sorted(k for k in {*a, *b} if a.get(k, _MISSING) != b.get(k, _MISSING))
        self.merged = Merged(
            1,
            xp.sig,
            (old.origin, {k: a.get(k) for k in keys}),
            (origin, {k: b.get(k) for k in keys}),
        )


class Launcher:
    """Passed to explore functions; each call schedules an XP (see Dora's ``Launcher``)."""

    def __init__(
        self,
        main: DecoratedMain,
        herd: Herd,
        resources: Optional[Resources] = None,
        argv: Sequence[str] = (),
        grid_file: Optional[Path] = None,
    ) -> None:
        self._main = main
        self._herd = herd
        self._resources = resources or Resources()
        self._argv = list(argv)
        self._grid_file = grid_file
        self._target = str(grid_file) if grid_file else None  # for _caller, once per XP
        self._array_resources: Optional[Resources] = None

    def _copy(self) -> Launcher:
        return Launcher(self._main, self._herd, self._resources, self._argv, self._grid_file)

    def bind(self, *args: Any, **kwargs: Any) -> Launcher:
        """A new launcher whose XPs get these extra arguments (dicts, strings, lists)."""
        return self._copy().bind_(*args, **kwargs)

    def bind_(self, *args: Any, **kwargs: Any) -> Launcher:
        """In-place :meth:`bind`."""
        with self._located():
            for arg in args:
                self._argv += to_argv(self._main, arg)
            self._argv += to_argv(self._main, kwargs)
        return self

    def slurm(self, **kwargs: Any) -> Launcher:
        """A new launcher with other resources (``gpus``, ``time``, ``partition`` ...)."""
        return self._copy().slurm_(**kwargs)

    def slurm_(self, **kwargs: Any) -> Launcher:
        """In-place :meth:`slurm`."""
        with self._located():
            self._resources = self._resources.with_changes(kwargs)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        """Schedule one XP with this launcher's arguments plus these."""
        # Runs once per XP of the grid: errors are re-raised as _located() does, inline.
        herd = self._herd
        try:
            argv = list(self._argv)
            for arg in args:
                argv += to_argv(self._main, arg, herd.argv_memo)
            if kwargs:
                argv += to_argv(self._main, kwargs, herd.argv_memo)
            if herd.array_resources is not None and herd.array_resources != self._resources:
                raise UsageError("cannot change resources inside a job array")
            check_argv_size(argv)
            if herd.xp_dir is None:
                herd.xp_dir = self._main.dir
            xp = self._main.get_xp(argv, herd.xp_dir)
            xp.folder  # noqa: B018 - made here, with the GC paused, rather than when first used
            herd.add(xp, self._resources, _caller(self._grid_file, self._target))
        except GridFileError:
            raise
        except GridmanError as exc:
            raise self._relocated(exc) from None

    @contextlib.contextmanager
    def job_array(self) -> Iterator[None]:
        """XPs scheduled inside this block go out as one job array (same resources)."""
        herd = self._herd
        if herd.array_resources is not None:
            raise GridFileError(f"{_caller(self._grid_file)}: job arrays cannot be nested")
        herd.array_resources = self._resources
        herd.job_arrays.append([])
        try:
            yield
        finally:
            herd.array_resources = None

    @contextlib.contextmanager
    def _located(self) -> Iterator[None]:
        """Re-raise errors with the grid file and line of the launcher call."""
        try:
            yield
        except GridFileError:
            raise
        except GridmanError as exc:
            raise self._relocated(exc) from None

    def _relocated(self, exc: GridmanError) -> GridFileError:
        where = _caller(self._grid_file)
        message = exc.message
        if where and not message.startswith(where):
            message = f"{where}: {message}"
        return GridFileError(message, exc.hint)


def to_argv(main: DecoratedMain, arg: Any, memo: Optional[ArgvMemo] = None) -> list[str]:
    """Launcher arguments -> argv: strings as is, dicts through the main, lists concatenated.

    ``memo`` keeps ``main.value_to_argv`` results for hashable values (by key, value type and
    value, so ``1``, ``1.0`` and ``True`` stay apart) across the calls of one grid."""
    if isinstance(arg, str):
        return [arg]
    if isinstance(arg, Mapping):
        out: list[str] = []
        for key, value in arg.items():
            out += _value_argv(main, str(key), value, memo)
        return out
    if isinstance(arg, (list, tuple)):
        out = []
        for item in arg:
            out += to_argv(main, item, memo)
        return out
    raise UsageError(f"launcher arguments must be str, dict or list, got {type(arg).__name__}")


def _value_argv(
    main: DecoratedMain,
    key: str,
    value: Any,
    memo: Optional[ArgvMemo],
) -> list[str]:
    if memo is None:
        return main.value_to_argv(key, value)
    return memoised(memo, key, value, main.value_to_argv)


#: Linux's limit on one argument of a command line, its NUL included (MAX_ARG_STRLEN).
MAX_ARG_STRLEN = 131072
#: Room left for what the backends add around the XP's own arguments (the interpreter, the
#: worker module, the main and the project root, a few environment variables).
ARGV_MARGIN = 16384


def check_argv_size(argv: Sequence[str]) -> None:
    """Refuse an argv that the XP's process could not start with (execve answers E2BIG): an
    argument over :data:`MAX_ARG_STRLEN`, or a command line that, with this environment,
    exceeds the system's ``ARG_MAX``. Checked at plan time, where the grid file's line is
    known, rather than when a backend starts the XP."""
    chars = 0
    for arg in argv:
        chars += len(arg)
    # A character is at most 4 bytes in UTF-8: most grids stop here, with one sum per XP.
    if chars * 4 + 9 * len(argv) < min(MAX_ARG_STRLEN, _argv_budget()):
        return
    total = 0
    for index, arg in enumerate(argv):
        size = len(arg.encode("utf8", "surrogateescape")) + 1
        if size > MAX_ARG_STRLEN:
            raise UsageError(
                f"argument {index} of the XP ({_arg_name(argv, index)}{_shorten(arg)}) is "
                f"{size:,} bytes: over "
                f"Linux's limit of {MAX_ARG_STRLEN:,} bytes for one argument of a command "
                "line (MAX_ARG_STRLEN, its NUL included); the XP's process could not start",
                "pass a big value through a file (give the XP its path) rather than on the "
                "command line",
            )
        total += size + 8  # and its pointer in argv[]
    if total > _argv_budget():
        raise UsageError(
            f"the XP's {len(argv)} arguments take {total:,} bytes: with this environment "
            f"({_env_size():,} bytes), over the system's limit of {_arg_max():,} bytes for a "
            "command line (ARG_MAX); the XP's process could not start",
            "shorten the arguments or pass big values through a file (give the XP its path)",
        )


def _arg_name(argv: Sequence[str], index: int) -> str:
    """Which parameter an argument sets, when it says (``--key=...``, ``key=...``) or follows
    its option (``--key VALUE``): ``"--key: "``, else nothing."""
    key, equals, _ = argv[index][:200].partition("=")
    if equals and key and " " not in key:
        return f"{key}: "
    if index > 0 and argv[index - 1].startswith("-") and len(argv[index - 1]) < 200:
        return f"{argv[index - 1]}: "
    return ""


def _shorten(arg: str, width: int = 40) -> str:
    return repr(arg if len(arg) <= width else arg[:width] + "...")


def _arg_max() -> int:
    try:
        return int(os.sysconf("SC_ARG_MAX"))
    except (ValueError, OSError):
        return 2 * 1024 * 1024  # Linux's usual 8 MiB stack / 4


#: (when, number of variables, size) of the last measure of the environment.
_ENV_SIZE: list[tuple[float, int, int]] = []


def _env_size() -> int:
    """Bytes the environment takes on a command line. Measured at most once a second while
    the number of variables stays the same: a grid of 10,000 XPs asks once per XP, and
    walking ``os.environ`` (decoding every entry) cost more than building the XPs."""
    now = time.monotonic()
    count = len(os.environ)
    if _ENV_SIZE and _ENV_SIZE[0][1] == count and now - _ENV_SIZE[0][0] < 1.0:
        return _ENV_SIZE[0][2]
    size = sum(len(k) + len(v) + 2 + 8 for k, v in os.environ.items())
    _ENV_SIZE[:] = [(now, count, size)]
    return size


def _argv_budget() -> int:
    """Bytes left for the XP's arguments (with their pointers) on a command line."""
    return _arg_max() - _env_size() - ARGV_MARGIN


def _caller(grid_file: Optional[Path], target: Optional[str] = None) -> str:
    """``file:line`` of the innermost frame in the grid file (else the first outside gridman);
    ``target``: ``str(grid_file)`` when the caller has it already."""
    if target is None:
        target = str(grid_file) if grid_file else None
    frame: Any = sys._getframe(2)
    if frame is not None and frame.f_code.co_filename == target:
        return f"{target}:{frame.f_lineno}"  # the usual case: called right from the grid file
    frame = sys._getframe(1)
    first = None
    while frame is not None:
        if frame.f_code is _EXPLORE_CALL:
            break  # what called the explore function: gridman and the CLI, never the grid file
        name = frame.f_code.co_filename
        if name == target:
            return f"{name}:{frame.f_lineno}"
        if first is None and not name.startswith(_OWN) and "contextlib" not in name:
            first = f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return first or ""


_OWN = str(Path(__file__).parent.parent)  # the gridman package


class Explorer:
    """Decorator around ``explore(launcher)``; subclass it to define the grid's table."""

    #: Whether the table may reuse rows computed from unchanged histories (see rowcache.py).
    #: Set it to False when ``process_history`` reads anything besides the history it is given.
    cache_rows: bool = True

    def __init__(self, explore: Callable[[Launcher], Any]) -> None:
        self.explore = explore
        self.__doc__ = explore.__doc__

    def __call__(self, launcher: Launcher) -> None:
        with paused_gc():  # a big grid creates ~10 objects per XP, none in cycles
            self.explore(launcher)

    def get_grid_metrics(self) -> list[Any]:
        """treetable nodes of the metric columns; empty means every metric, flattened."""
        return []

    def get_grid_meta(self) -> list[Any]:
        """treetable leaves of the meta columns."""
        import treetable as tt

        return [
            tt.leaf("index", align=">"),
            tt.leaf("name"),
            tt.leaf("state"),
            tt.leaf("sig", align=">"),
        ]

    def get_colors(self) -> list[str]:
        """ANSI colour codes cycled over rows (only used on a terminal)."""
        return ["0", "38;5;245"]

    def process_sheep(self, sheep: ExplorerSheep, history: list[Any]) -> dict[str, Any]:
        """Override to build a row from the XP and its history; wins over process_history.
        ``sheep`` is shaped as Dora's: ``sheep.xp``, ``sheep.job`` (``job_id``, ``state``;
        None when it never ran) and ``sheep.log`` (None without a job)."""
        raise NotImplementedError()

    def process_history(self, history: list[Any]) -> dict[str, Any]:
        """The row's metrics: the last value of every metric, plus ``epoch``."""
        out: dict[str, Any] = {"epoch": len(history)}
        for metrics in history:
            if type(metrics) is not dict and not isinstance(metrics, Mapping):
                continue
            # the scalar case inline: this loop runs for every entry of every row
            for key, value in metrics.items():
                if type(value) in _SCALARS or not isinstance(value, Mapping):
                    out[key] = value
                else:
                    _merge_nested(out, key, value)
        return out


_SCALARS = (float, int, str, bool, type(None))
_MISSING = object()
_EXPLORE_CALL = Explorer.__call__.__code__


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Deep-merge ``new`` into ``into``: later values win, nested dicts merge (into copies, so
    the history is never modified). Concrete type checks first: this runs for every entry of
    every history of the table (isinstance against the Mapping ABC is several times slower)."""
    for key, value in new.items():
        if type(value) in _SCALARS or not isinstance(value, Mapping):
            into[key] = value
        else:
            _merge_nested(into, key, value)


def _merge_nested(into: dict[str, Any], key: str, value: Mapping[str, Any]) -> None:
    old = into.get(key)
    if type(old) is not dict:
        old = into[key] = {}
    _merge(old, value)
