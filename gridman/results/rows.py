"""The one row model: an XP as every view of results sees it.

The grid table and its ``--json``, ``gridman export``, ``gridman plot`` and ``gridman.load``
all describe an XP with a :class:`Row`: named meta fields (index, name, sig, state, folder,
argv), the grid's parameters it sets, its metrics, which history entry they are from, and the
error that kept them from being read. Each view picks its meta columns *by name* from the
tuples below, so that the same XP shows the same meta values everywhere.

A row's ``metrics`` may be nested (``{"valid": {"acc": 0.9}}``, as an Explorer's
``process_history`` returns them, nested dicts being column groups) or flat
(``{"valid.acc": 0.9}``, as records pick them from a history); both name the column
``valid.acc``, and :meth:`Row.flat_metrics` gives the flat form whichever was stored.

:class:`Table` (columns and rows of raw values) is what exports write from many rows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from ..core.config import flatten

#: What identifies an XP in every view, in the order of the table's ``--json`` objects.
META_FIELDS = ("index", "name", "sig", "state", "argv", "folder")
#: The text table's meta columns, left to right, with their alignment.
TABLE_META: tuple[tuple[str, str], ...] = (
    ("index", ">"), ("name", "<"), ("state", "<"), ("sig", "<"),
)  # fmt: skip
#: The columns every export row and record starts with, before parameters and metrics.
EXPORT_META = ("sig", "name", "state", "epoch")


@dataclass(frozen=True, kw_only=True, slots=True)  # slots: 10,000 rows are built per table
class Row:
    """One XP: its meta fields, parameters and metrics (see the module's docstring)."""

    index: int  # its position in the grid (or in the list of signatures asked for)
    name: str  # the parameters that vary across the grid, as the table shows them
    sig: str
    state: str  # its latest job's state, NEW when it never ran
    folder: str
    argv: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)  # the grid's parameters it sets
    metrics: Mapping[str, Any] = field(default_factory=dict)  # nested or flat (see above)
    epoch: Optional[int] = None  # the 1-based history entry the metrics are from, if picked
    error: Optional[str] = None  # why its history or hook could not be read
    spark: str = ""  # sparkline of one metric's history (the text table only)

    def meta(self, name: str) -> Any:
        """The meta field ``name`` (one of :data:`META_FIELDS` or ``epoch``)."""
        return getattr(self, name)

    def flat_metrics(self) -> dict[str, Any]:
        """The metrics with flat keys (``valid.acc``), leaves only."""
        return {k: v for k, v in flatten(self.metrics).items() if not isinstance(v, Mapping)}

    def to_json(self) -> dict[str, Any]:
        """The ``gridman grid --json`` contract: one object per XP with these keys."""
        out: dict[str, Any] = {name: getattr(self, name) for name in META_FIELDS}
        out["argv"] = list(self.argv)
        out["metrics"] = self.flat_metrics()
        out["error"] = self.error
        return out

    def export_values(self, param_keys: Collection[str] = ()) -> dict[str, Any]:
        """Export meta, parameters and metrics in one flat dict (see ``Results.columns``); a
        metric named like a parameter (of ``param_keys`` too) becomes ``metrics.KEY``."""
        out: dict[str, Any] = {name: getattr(self, name) for name in EXPORT_META}
        for key, value in self.params.items():
            out[param_column(key)] = value
        for key, value in self.flat_metrics().items():
            out[metric_column(key, self.params, param_keys)] = value
        return out


def table_meta_cells(row: Row) -> list[str]:
    """A row's meta cells in :data:`TABLE_META`'s order (spelled out: the table builds one
    list per row, and a generic getter costs as much as the rest of the row's text)."""
    return [str(row.index), row.name, row.state, row.sig]


def param_column(key: str) -> str:
    """A parameter's export column: ``params.KEY`` when KEY is a meta column's name."""
    return f"params.{key}" if key in EXPORT_META else key


def metric_column(key: str, params: Collection[str], more: Collection[str] = ()) -> str:
    """A metric's export column: ``metrics.KEY`` when KEY names a meta column or a parameter."""
    return f"metrics.{key}" if key in EXPORT_META or key in params or key in more else key


@dataclass(frozen=True)
class Table:
    """Columns and rows of raw values (None = missing), what exports write."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
