"""Results of many XPs as records: one per XP, with its parameters and chosen metrics.

A record holds the XP's sig, name, state, every parameter of the grid's deltas (one column
each) and its metrics, flattened (``valid.acc``): by default the last value of every metric
(as the grid table shows them); with ``best="valid.acc:max"`` the metrics of the history entry
with the best value (and that entry's epoch); with ``epoch=N`` those of the N-th entry
(1-based: the state after N epochs). Metrics written by stages (``stages/test``, see
stages.py) join under their namespace (``test.acc``) whatever the selection. Records with
different keys merge into one table; a missing cell is None (empty in exports), as in
MI-Prometheus' GridAnalyzer.

``load`` (``gridman.load``) is the Python entry point; ``gridman export`` renders the same.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..core.config import flatten
from ..errors import UsageError

if TYPE_CHECKING:
    from ..api.grid import GridSession
    from ..core.project import Project
    from .aggregate import Aggregation
    from .export import Table

#: Columns every record has, before its parameters and metrics.
META = ("sig", "name", "state", "epoch")


@dataclass(frozen=True)
class Selection:
    """Which history entry gives a record its metrics: the last values, the best, or epoch N."""

    best: Optional[str] = None  # a flattened metric key
    mode: str = "max"  # "max" or "min", with best
    epoch: Optional[int] = None  # 1-based

    @classmethod
    def parse(cls, best: Optional[str] = None, epoch: Optional[int] = None) -> Selection:
        """``best="valid.acc:max"`` (``:min``; without one, ``min`` for names that look like
        losses or errors, else ``max``) or ``epoch=N`` (N >= 1), not both."""
        if best is not None and epoch is not None:
            raise UsageError("choose either --best or --epoch, not both")
        if epoch is not None:
            if epoch < 1:
                raise UsageError(
                    f"--epoch must be >= 1, got {epoch}", "epochs count from 1 (N entries)"
                )
            return cls(epoch=epoch)
        if best is None:
            return cls()
        key, sep, mode = best.rpartition(":")
        if not sep:
            from .table import lower_is_better

            key = best
            mode = "min" if lower_is_better(key) else "max"
        if not key or mode not in ("max", "min"):
            raise UsageError(f"bad --best {best!r}", "give METRIC:max or METRIC:min")
        return cls(best=key, mode=mode)

    def describe(self) -> str:
        if self.best:
            return f"best {self.best} ({self.mode})"
        if self.epoch:
            return f"epoch {self.epoch}"
        return "last values"


@dataclass(frozen=True)
class Pick:
    """The metrics chosen from a history, and the (1-based) epoch they are from."""

    metrics: Mapping[str, Any]
    epoch: Optional[int]


def pick(history: Sequence[Any], selection: Selection) -> Pick:
    """Apply ``selection`` to one XP's history (entries that are not dicts are skipped)."""
    from .aggregate import is_number

    entries = [flatten(e) if isinstance(e, Mapping) else None for e in history]
    if selection.epoch is not None:
        if selection.epoch > len(entries):
            return Pick({}, None)
        chosen = entries[selection.epoch - 1]
        return Pick(_leaves(chosen or {}), selection.epoch)
    if selection.best is not None:
        best_index: Optional[int] = None
        best_value = 0.0
        for index, entry in enumerate(entries):
            value = (entry or {}).get(selection.best)
            if not is_number(value):
                continue
            number = float(value)  # type: ignore[arg-type]
            better = number > best_value if selection.mode == "max" else number < best_value
            if best_index is None or better:  # ties keep the earliest entry
                best_index, best_value = index, number
        if best_index is None:
            return Pick({}, None)
        return Pick(_leaves(entries[best_index] or {}), best_index + 1)
    merged: dict[str, Any] = {}
    for entry in entries:
        merged.update(_leaves(entry or {}))
    return Pick(merged, len(entries))


def _leaves(flat: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if not isinstance(v, Mapping)}


# -- where records come from -------------------------------------------------------------
@dataclass(frozen=True)
class XPRef:
    """An XP to report on: what identifies it, its name and parameters, its state."""

    sig: str
    name: str
    folder: Path
    params: tuple[tuple[str, Any], ...]
    state: str
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """The XPs of a grid (or of a list of sigs), in order."""

    refs: tuple[XPRef, ...]
    base_name: str = ""
    grid: Optional[str] = None


def session_source(session: GridSession) -> Source:
    """The selected XPs of an opened grid (their states as of its last refresh)."""
    from ..core.names import grid_items

    items = grid_items([s.xp.delta for s in session.sheeps], [s.xp.params for s in session.sheeps])
    refs = []
    for i in session.selected:
        sheep = session.sheeps[i]
        refs.append(XPRef(sheep.sig, session.names[i], sheep.xp.folder, tuple(items[i]),
                          sheep.state or "NEW", tuple(sheep.xp.argv)))  # fmt: skip
    return Source(tuple(refs), session.base_name, session.grid.name)


def grid_source(
    project: Project,
    name: str,
    patterns: Sequence[str] = (),
    grids_dir: Optional[str] = None,
    main: Optional[str] = None,
) -> Source:
    """Load grid ``name`` (running its explore function), select, refresh states."""
    from ..api.grid import GridOptions, open_grid

    options = GridOptions(name=name, patterns=tuple(patterns), grids_dir=grids_dir, main=main)
    session = open_grid(project, options)
    session.refresh()
    return session_source(session)


def sigs_source(project: Project, sigs: Sequence[str], main: Optional[str] = None) -> Source:
    """XPs by signature. Parameters come from each ``argv.json`` delta: a parameter an XP left
    at its default has an empty cell (the main is not imported)."""
    from ..api.xp import xp_root
    from ..core.liveness import mark_vanished
    from ..core.names import grid_names
    from ..core.signature import delta_from_json
    from ..core.xp import check_sig, read_argv_file, require_xp_folder

    if not sigs:
        raise UsageError("no XP named", "give a grid name or signatures")
    root = xp_root(project, main)
    found = []
    for sig in dict.fromkeys(sigs):
        folder = require_xp_folder(root, check_sig(sig))
        try:
            stored = read_argv_file(folder)
            argv, delta = tuple(str(a) for a in stored["argv"]), delta_from_json(stored["delta"])
        except (OSError, ValueError, KeyError, TypeError):
            argv, delta = (), []
        record = mark_vanished(folder)
        state = record.state.value if record and record.state else "NEW"
        found.append((sig, folder, tuple(delta), state, argv))
    base, names = grid_names([d for _, _, d, _, _ in found])
    refs = tuple(
        XPRef(sig, name, folder, delta, state, argv)
        for (sig, folder, delta, state, argv), name in zip(found, names)
    )
    return Source(refs, base)


# -- records -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One XP: identity, parameters and chosen metrics (flat keys)."""

    sig: str
    name: str
    state: str
    folder: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    epoch: Optional[int]
    error: Optional[str] = None

    def row(self, param_keys: Collection[str] = ()) -> dict[str, Any]:
        """Meta, parameters and metrics in one flat dict (see :meth:`Results.columns`); a
        metric named like a parameter (of ``param_keys`` too) becomes ``metrics.KEY``."""
        out: dict[str, Any] = {"sig": self.sig, "name": self.name, "state": self.state,
                               "epoch": self.epoch}  # fmt: skip
        for key, value in self.params.items():
            out[_param_column(key)] = value
        for key, value in self.metrics.items():
            out[_metric_column(key, self.params, param_keys)] = value
        return out


def _param_column(key: str) -> str:
    return f"params.{key}" if key in META else key


def _metric_column(key: str, params: Collection[str], more: Collection[str] = ()) -> str:
    return f"metrics.{key}" if key in META or key in params or key in more else key


@dataclass(frozen=True)
class Results:
    """Records of many XPs, merged: every key of any record is a column."""

    records: tuple[Record, ...]
    param_keys: tuple[str, ...]
    metric_keys: tuple[str, ...]
    selection: Selection = field(default_factory=Selection)
    base_name: str = ""
    grid: Optional[str] = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    def columns(self) -> list[str]:
        """sig, name, state, epoch, the parameters, the metrics (``error`` when any)."""
        params = [_param_column(k) for k in self.param_keys]
        metrics = [_metric_column(k, self.param_keys) for k in self.metric_keys]
        extra = ["error"] if any(r.error for r in self.records) else []
        return list(dict.fromkeys([*META, *params, *metrics, *extra]))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per record with every column (None where a record has no value)."""
        columns = self.columns()
        out = []
        for record in self.records:
            row = record.row(self.param_keys)
            if record.error:
                row["error"] = record.error
            out.append({c: row.get(c) for c in columns})
        return out

    def table(self) -> Table:
        from .export import Table

        columns = self.columns()
        return Table(tuple(columns), tuple(tuple(r[c] for c in columns) for r in self.rows()))

    def aggregate(self, over: str) -> Aggregation:
        """Group by every parameter but ``over``: mean, std and count of each metric."""
        from .aggregate import aggregate

        return aggregate(
            [tuple(r.params.items()) for r in self.records],
            [r.metrics for r in self.records],
            over,
            self.metric_keys,
        )

    def to_pandas(self) -> Any:
        """A pandas DataFrame with :meth:`columns` (pandas is not a dependency of gridman)."""
        try:
            import pandas
        except ImportError:
            raise UsageError(
                "to_pandas() needs pandas, which is not installed",
                "pip install pandas (gridman itself does not depend on it)",
            ) from None
        return pandas.DataFrame(self.rows(), columns=self.columns())


def build_results(source: Source, selection: Optional[Selection] = None) -> Results:
    """Read each XP's history (and stage metrics) and make its record."""
    from ..core.link import load_history
    from ..core.stages import stage_metrics

    selection = selection or Selection()
    records = []
    for ref in source.refs:
        error = None
        try:
            history = load_history(ref.folder) if ref.folder.exists() else []
            chosen = pick(history, selection)
            metrics, epoch = dict(chosen.metrics), chosen.epoch
        except Exception as exc:  # one unreadable history marks its own record only
            metrics, epoch, error = {}, None, f"{type(exc).__name__}: {exc}"
        for stage, values in stage_metrics(ref.folder).items():
            metrics.update({f"{stage}.{k}": v for k, v in flatten(values).items()})
        records.append(Record(ref.sig, ref.name, ref.state, str(ref.folder), dict(ref.params),
                              metrics, epoch, error))  # fmt: skip
    params = tuple(dict.fromkeys(k for r in source.refs for k, _ in r.params))
    metric_keys = tuple(dict.fromkeys(k for r in records for k in r.metrics))
    return Results(tuple(records), params, metric_keys, selection, source.base_name, source.grid)


def load(
    grid_or_sigs: Union[str, Sequence[str]],
    patterns: Sequence[str] = (),
    *,
    best: Optional[str] = None,
    epoch: Optional[int] = None,
    root: Union[str, Path, None] = None,
    main: Optional[str] = None,
    grids_dir: Optional[str] = None,
) -> Results:
    """Records of a grid's XPs (a grid name, with optional patterns) or of XPs by signature.

    >>> results = gridman.load("demo", best="valid.acc:max")   # doctest: +SKIP
    >>> results.to_pandas()                                     # doctest: +SKIP

    ``root`` is where to look for the project (default: the current directory); the grid's
    explore function then runs from the project's root, as ``gridman grid`` would.
    """
    from ..core.project import load_project

    selection = Selection.parse(best, epoch)
    project = load_project(Path(root) if root is not None else None)
    if not isinstance(grid_or_sigs, str) and patterns:
        raise UsageError("patterns select XPs of a grid; with signatures, list them all")
    # A main finds its XP root from the current directory, as the CLI does from the project.
    with _inside(project.root if root is not None else None):
        if isinstance(grid_or_sigs, str):
            source = grid_source(project, grid_or_sigs, patterns, grids_dir, main)
        else:
            source = sigs_source(project, [str(s) for s in grid_or_sigs], main)
        return build_results(source, selection)


@contextlib.contextmanager
def _inside(folder: Optional[Path]) -> Iterator[None]:
    previous = os.getcwd()
    if folder is not None:
        os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
