"""The grid table's data: rows for a view of an opened grid, its columns, groups and JSON.

``gridman grid`` (and ``gridman grid --stage``) ask for :func:`grid_rows` after each refresh;
the CLI only renders what comes back (cli/view.py) and monitors. Rows are the one row model
(results/rows.py) that exports and ``gridman.load`` share; they are read through the grid's
row cache (results/rowcache.py) when the view allows it. ``View`` is imported by the CLI's
command modules at start-up, so everything else here is imported when first used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from ..core.shep import Plan
    from ..results.aggregate import Aggregation
    from ..results.rowcache import RowCache
    from ..results.rows import Row
    from ..results.table import Column
    from .grid import GridSession


@dataclass(frozen=True)
class View:
    """How the table is drawn: cut histories, a sparkline column, or groups."""

    trim: Optional[int] = None  # cut every history to the length of the selected XP #trim
    trim_last: bool = False  # cut every history to the shortest one
    spark: Optional[str] = None  # a flattened metric key: its sparkline in a last column
    aggregate: Optional[str] = None  # group by every parameter but this one


def grid_rows(session: GridSession, view: View, empty: frozenset[str] = frozenset()) -> list[Row]:
    """The table's rows for the selected XPs; ``empty``: XPs whose folders were just created
    (nothing to read in them). Unchanged histories come from the grid's row cache, which is
    saved again when this view could use it."""
    from ..results.table import build_rows, history_lengths

    cut = None
    if view.trim is not None:  # a grid index, as the table shows it
        cut = history_lengths(session.sheeps, [view.trim])[0]
    elif view.trim_last:  # XPs without history (failed at start, not started) take no part
        lengths = history_lengths(session.sheeps, session.selected)
        cut = min((n for n in lengths if n > 0), default=None)
    cache = row_cache(session) if cut is None and not view.spark else None
    rows = build_rows(session.grid.explorer, session.sheeps, session.selected, session.names,
                      cut, spark=view.spark, cache=cache, empty=empty)  # fmt: skip
    if cache is not None:
        cache.save(s.sig for s in session.sheeps)
    return rows


def row_cache(session: GridSession) -> RowCache:
    """The grid's cache of table rows (rowcache.py), keyed by the code that computes them."""
    from ..results.rowcache import RowCache, cache_path, code_fingerprint

    explorer = session.grid.explorer
    roots = [session.project.root, session.grid.path.parent]
    return RowCache.load(cache_path(session.dir, session.record_key),
                         code_fingerprint(explorer, roots))  # fmt: skip


def table_columns(session: GridSession, rows: list[Row]) -> list[Column]:
    """The Explorer's metric columns (``get_grid_metrics``), else every metric the rows have."""
    from ..results.table import default_columns, node_columns

    nodes = session.grid.explorer.get_grid_metrics()
    return node_columns(nodes) if nodes else default_columns(rows)


def grid_aggregation(session: GridSession, rows: list[Row], param: str) -> Aggregation:
    """The rows grouped by every parameter of the grid but ``param`` (``--aggregate``)."""
    from ..core.names import grid_items
    from ..results.aggregate import aggregate

    sheeps = session.sheeps
    items = grid_items([s.xp.delta for s in sheeps], [s.xp.params for s in sheeps])
    return aggregate([items[r.index] for r in rows], [_history_metrics(r) for r in rows], param)


def _history_metrics(row: Row) -> dict[str, Any]:
    """The row's flat metrics, less the ``epoch`` that the default ``process_history`` gives an
    XP without history (0): such an XP takes no part in the group's epoch statistics."""
    flat = row.flat_metrics()
    if flat.get("epoch") == 0 and type(flat["epoch"]) is int:
        del flat["epoch"]
    return flat


def json_rows(
    rows: list[Row],
    plan: Optional[Plan] = None,
    requests: Optional[Mapping[str, dict[str, Any]]] = None,
) -> list[dict[str, Any]]:
    """``gridman grid --json``: one object per row, with what the plan does to it if any and,
    with ``requests`` (:func:`resource_requests`), what a job of it asks for (``resources``)."""
    steps = {s.sig: s for s in plan.steps} if plan is not None else {}
    data = []
    for row in rows:
        item = row.to_json()
        if row.sig in steps:
            item["plan"] = {"action": steps[row.sig].action.value,
                            "reason": steps[row.sig].reason}  # fmt: skip
        if requests and row.sig in requests:
            item["resources"] = requests[row.sig]
        data.append(item)
    return data


def resource_requests(session: Any) -> dict[str, dict[str, Any]]:
    """What a job of each XP asks for, with Slurm's option names (``nodes``,
    ``ntasks_per_node``, ``gpus_per_node``, ``cpus_per_task``, ``mem``: Dora's mapping, the
    project's ``slurm.max_gpus_per_node``). XPs whose GPUs cannot fill whole nodes are left out
    (submitting them to Slurm is refused with the reason)."""
    from ..core.resources import DEFAULT_MAX_GPUS_PER_NODE, slurm_request
    from ..errors import UsageError

    section = session.project.settings.get("slurm")
    limit = section.get("max_gpus_per_node") if isinstance(section, Mapping) else None
    out: dict[str, dict[str, Any]] = {}
    seen: dict[Any, Optional[dict[str, Any]]] = {}
    for sheep in session.sheeps:
        if sheep.resources not in seen:  # resources are shared frozen objects: map each once
            try:
                found = slurm_request(sheep.resources, limit or DEFAULT_MAX_GPUS_PER_NODE)
                seen[sheep.resources] = found.to_json()
            except UsageError:
                seen[sheep.resources] = None
        request = seen[sheep.resources]
        if request is not None:
            out[sheep.sig] = request
    return out
