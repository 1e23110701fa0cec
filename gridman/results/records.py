"""Results of many XPs as records: one per XP, with its parameters and chosen metrics.

A record holds the XP's sig, name, state, every parameter of the grid's deltas (one column
each) and its metrics, flattened (``valid.acc``): by default the last value of every metric
(as the grid table shows them); with ``best="valid.acc:max"`` the metrics of the history entry
with the best value (and that entry's epoch); with ``epoch=N`` those of the N-th entry
(1-based: the state after N epochs). Metrics written by stages (``stages/test``, see
stages.py) join under their namespace (``test.acc``) whatever the selection. Records with
different keys merge into one table; a missing cell is None (empty in exports), as in
MI-Prometheus' GridAnalyzer.

Records are rows (rows.py, the model the grid table shares) whose metrics are flat. Where
the XPs come from (a grid, signatures) is the api's business: ``gridman.load`` is
api/load.py; ``gridman export`` renders the same records.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from ..core.config import flatten
from ..errors import UsageError
from .aggregate import Aggregation, aggregate
from .format import is_number, lower_is_better
from .rows import EXPORT_META, Row, Table, metric_column, param_column


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
    return Pick(merged, len(entries) or None)  # no history: no epoch (never epoch 0)


def _leaves(flat: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat.items() if not isinstance(v, Mapping)}


# -- where records come from -------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """The XPs to report on, in order: rows with their meta fields and parameters, no metrics
    yet (api/load.py makes them from a grid or from signatures)."""

    refs: tuple[Row, ...]
    base_name: str = ""
    grid: Optional[str] = None


# -- records -----------------------------------------------------------------------------
#: A record is a row (rows.py) whose metrics are flat and picked by a :class:`Selection`.
Record = Row


@dataclass(frozen=True)
class Results:
    """Records of many XPs, merged: every key of any record is a column."""

    records: tuple[Row, ...]
    param_keys: tuple[str, ...]
    metric_keys: tuple[str, ...]
    selection: Selection = field(default_factory=Selection)
    base_name: str = ""
    grid: Optional[str] = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Row:
        return self.records[index]

    def columns(self) -> list[str]:
        """sig, name, state, epoch, the parameters, the metrics (``error`` when any)."""
        params = [param_column(k) for k in self.param_keys]
        metrics = [metric_column(k, self.param_keys) for k in self.metric_keys]
        extra = ["error"] if any(r.error for r in self.records) else []
        return list(dict.fromkeys([*EXPORT_META, *params, *metrics, *extra]))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per record with every column (None where a record has no value)."""
        columns = self.columns()
        out = []
        for record in self.records:
            row = record.export_values(self.param_keys)
            if record.error:
                row["error"] = record.error
            out.append({c: row.get(c) for c in columns})
        return out

    def table(self) -> Table:
        columns = self.columns()
        return Table(tuple(columns), tuple(tuple(r[c] for c in columns) for r in self.rows()))

    def aggregate(self, over: str) -> Aggregation:
        """Group by every parameter but ``over``: mean, std and count of each metric."""
        return aggregate(
            [tuple(r.params.items()) for r in self.records],
            [r.flat_metrics() for r in self.records],
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
    seen: dict[str, None] = {}  # the metric keys of the histories, for a --best that is none
    for ref in source.refs:
        error = None
        folder = Path(ref.folder)
        try:
            history = load_history(folder) if folder.exists() else []
            if selection.best is not None:
                metric_keys_of(history, seen)
            chosen = pick(history, selection)
            metrics, epoch = dict(chosen.metrics), chosen.epoch
        except Exception as exc:  # one unreadable history marks its own record only
            metrics, epoch, error = {}, None, f"{type(exc).__name__}: {exc}"
        for stage, values in stage_metrics(folder).items():
            metrics.update({f"{stage}.{k}": v for k, v in flatten(values).items()})
        records.append(replace(ref, metrics=metrics, epoch=epoch, error=error))
    if selection.best is not None and seen and selection.best not in seen:
        raise unknown_metric(selection.best, list(seen), "--best")
    params = tuple(dict.fromkeys(k for r in source.refs for k in r.params))
    metric_keys = tuple(dict.fromkeys(k for r in records for k in r.metrics))
    return Results(tuple(records), params, metric_keys, selection, source.base_name, source.grid)


def metric_keys_of(history: Sequence[Any], into: dict[str, None]) -> None:
    """Add the flattened metric keys of ``history``'s entries to ``into``."""
    for entry in history:
        if isinstance(entry, Mapping):
            into.update(dict.fromkeys(k for k, v in flatten(entry).items()
                                      if not isinstance(v, Mapping)))  # fmt: skip


def unknown_metric(key: str, known: Sequence[str], flag: str) -> UsageError:
    """A metric that no selected history holds (exit 2), with the ones they hold and the
    closest of them."""
    import difflib

    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    guess = f"; did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(list(known)[:12]) + (", ..." if len(known) > 12 else "")
    return UsageError(f"{flag} {key!r}: no selected XP has that metric",
                      f"metrics in their histories: {shown}{guess}")  # fmt: skip
