"""The tracker: the grid's XPs as rows (states, names, metrics), rendered as a table.

Rows (:class:`~gridman.results.rows.Row`) come from each XP's history through the Explorer's
``process_sheep``/``process_history`` (by default the last value of every metric, nested dicts
as column groups). One unreadable history only marks its own row. Columns follow
``Explorer.get_grid_metrics()`` (treetable nodes) when it returns any, else every metric seen.
Colours only on a terminal and never with ``NO_COLOR``; the best value of each metric is
highlighted. Metrics of stages (a test pass, see stages.py) join each row under the stage's
name. ``spark`` adds a unicode sparkline of one metric's history; :func:`render_groups` draws an
aggregation (mean ± std per group). Meta columns are the row's named fields (rows.TABLE_META).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..core.config import flatten
from ..core.explore import Explorer, Sheep
from ..core.link import load_history
from ..core.perf import paused_gc
from .format import LOWER_IS_BETTER_TAGS, fmt_value, lower_is_better, metric_history, sparkline
from .rowcache import RowCache, RowKeys, file_key
from .rows import TABLE_META, Row, table_meta_cells

if TYPE_CHECKING:  # the aggregation's statistics are imported only when a view needs them
    from .aggregate import Aggregation


def state_of(sheep: Sheep) -> str:
    return sheep.state or "NEW"


def build_rows(
    explorer: Explorer,
    sheeps: Sequence[Sheep],
    indices: Sequence[int],
    names: Sequence[str],
    trim: Optional[int] = None,
    spark: Optional[str] = None,
    cache: Optional[RowCache] = None,
    empty: Collection[str] = (),
) -> list[Row]:
    """Rows for ``sheeps[i]`` for i in indices; histories cut to ``trim`` entries if given;
    with ``spark`` (a flattened metric key), each row's sparkline of that metric. With a
    ``cache`` (see rowcache.py), rows whose history files did not change are not re-read
    (not for ``process_sheep`` overrides, ``trim`` or ``spark``, which need the history).
    ``empty``: signatures of XPs whose folders this command has just created, with nothing
    to read in them (no history, no stage): their files are not even looked for."""
    custom = type(explorer).process_sheep is not Explorer.process_sheep
    if custom or trim is not None or spark or not getattr(explorer, "cache_rows", True):
        cache = None
    from ..core.stages import stage_metrics

    with paused_gc():  # a few objects per row, none in cycles
        return [_row(explorer, sheeps[i], i, names[i], trim, spark, custom, cache, stage_metrics,
                     sheeps[i].sig in empty) for i in indices]  # fmt: skip


def _row(
    explorer: Explorer, sheep: Sheep, index: int, name: str, trim: Optional[int],
    spark: Optional[str], custom: bool, cache: Optional[RowCache],
    stage_metrics: Callable[[Path], dict[str, dict[str, Any]]], empty: bool = False,
) -> Row:  # fmt: skip
    xp = sheep.xp
    folder = xp.folder
    error = None
    history: list[Any] = []
    try:
        stages = True  # whether stages/ may hold results (the cache knows when it cannot)
        if empty:  # a folder this command created: nothing in it to read
            stages = False
            metrics = explorer.process_sheep(sheep.for_explorer(), history) if custom else (
                explorer.process_history(history))  # fmt: skip
        elif cache is not None:
            metrics, stages = _cached_metrics(explorer, xp.sig, os.fspath(folder), cache)
        else:
            history = load_history(folder)  # no files: an empty history
            if trim is not None:
                history = history[:trim]
            metrics = explorer.process_sheep(sheep.for_explorer(), history) if custom else (
                explorer.process_history(history))  # fmt: skip
        metrics = dict(metrics or {})
        for stage, values in (stage_metrics(folder) if stages else {}).items():
            old = metrics.get(stage)
            metrics[stage] = {**old, **values} if isinstance(old, Mapping) else values
    except Exception as exc:  # one bad history or hook marks its row, never the table
        metrics, error = {}, f"{type(exc).__name__}: {exc}"
    line = sparkline(metric_history(history, spark)) if spark else ""
    return Row(index=index, name=name, sig=xp.sig, state=state_of(sheep), folder=str(folder),
               argv=tuple(xp.argv), metrics=metrics, error=error, spark=line)  # fmt: skip


def _cached_metrics(explorer: Explorer, sig: str, folder: str, cache: RowCache) -> tuple[Any, bool]:
    """(``process_history`` of the XP's history, whether it may have stage results), from the
    cache when its folder and files are unchanged. A missing folder is not read at all."""
    try:
        folder_key = file_key(folder)
        if folder_key is None:
            return explorer.process_history([]), False
        hit = cache.get(sig, folder, folder_key)
        if hit is not None:
            return hit
        keys: Optional[RowKeys] = RowKeys.of(folder, folder_key)
    except OSError:  # cannot even stat: read the history as usual (and fail the row)
        keys = None
    if keys is None:
        return explorer.process_history(load_history(folder)), True
    if keys.journal is None and keys.history is None:
        history = []
    else:
        history = load_history(folder, journal=keys.journal is not None)
    metrics = explorer.process_history(history)
    cache.put(sig, keys, metrics)
    return metrics, keys.stages


def history_lengths(sheeps: Sequence[Sheep], indices: Sequence[int]) -> list[int]:
    out = []
    for i in indices:
        try:
            out.append(len(load_history(sheeps[i].xp.folder)))
        except Exception:
            out.append(0)
    return out


# -- rendering ------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    path: tuple[str, ...]  # keys into the row's nested metrics, or ("meta", name)
    fmt: str = ""
    align: str = ">"


def default_columns(rows: Sequence[Row]) -> list[Column]:
    """Every metric seen, in first-seen order, grouped by their first key."""
    seen: dict[tuple[str, ...], None] = {}
    for row in rows:
        for key in flatten(row.metrics):
            seen.setdefault(tuple(key.split(".")), None)
    groups: dict[str, list[tuple[str, ...]]] = {}
    for path in seen:
        groups.setdefault(path[0] if len(path) > 1 else "", []).append(path)
    return [Column(p) for paths in groups.values() for p in paths]


def node_columns(nodes: Sequence[Any], prefix: tuple[str, ...] = ()) -> list[Column]:
    """Columns from treetable nodes (``tt.group``/``tt.leaf``), keeping their formats."""
    out = []
    for node in nodes:
        path = (*prefix, str(node.key))
        if getattr(node, "groups", None) is None:
            out.append(Column(path, node.format or "", node.align or ">"))
        else:
            out += node_columns(node.groups, path)
    return out


#: The meta fields a table may show, by name (an Explorer's ``get_grid_meta`` picks them).
_META: dict[str, Callable[[Row], str]] = {
    "index": lambda r: str(r.index), "name": lambda r: r.name, "state": lambda r: r.state,
    "sig": lambda r: r.sig, "folder": lambda r: r.folder,
}  # fmt: skip


def grid_style(explorer: Explorer) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(meta columns, row colours) as ``explorer`` asks with Dora's ``get_grid_meta`` (its
    leaves, in their order, with their alignment: those naming fields a row has; Dora's
    ``sid`` has no column here) and ``get_colors`` (ANSI codes cycled over rows; ``"0"``: none).
    The default table's when the Explorer does not override them, or its answer is unusable."""
    meta: tuple[tuple[str, str], ...] = TABLE_META
    if type(explorer).get_grid_meta is not Explorer.get_grid_meta:
        try:
            leaves = list(explorer.get_grid_meta())
        except Exception:  # a broken hook must not cost the table
            leaves = []
        keys = [(str(getattr(x, "key", "")), getattr(x, "align", None)) for x in leaves]
        picked = [(key, align or "<") for key, align in keys if key in _META]
        meta = tuple(dict(picked).items()) or TABLE_META  # a name twice: one column
    try:
        colors = tuple(str(c) for c in explorer.get_colors() or ())
    except Exception:
        colors = ()
    return meta, colors


def _row_color(colors: Sequence[str], index: int) -> str:
    """The ANSI code of row ``index`` (``"0"`` and ``""``: the terminal's own)."""
    code = colors[index % len(colors)] if colors else ""
    return "" if code in ("", "0") else code


_STATE_STYLE = {
    "COMPLETED": "32", "RUNNING": "36", "PENDING": "33", "NEW": "2", "CANCELLED": "35",
    "FAILED": "31", "VANISHED": "31", "TIMEOUT": "31", "OUT_OF_MEMORY": "31",
    "NODE_FAIL": "31", "PREEMPTED": "33", "UNKNOWN": "2",
}  # fmt: skip


def _get(metrics: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The leaf at ``path`` in nested metrics, or under its flat key (rows.py's two forms)."""
    node: Any = metrics
    for key in path:  # plain dicts first: isinstance against the Mapping ABC is slow
        if (type(node) is not dict and not isinstance(node, Mapping)) or key not in node:
            if len(path) > 1 and node is not metrics:
                return None
            node = metrics.get(".".join(path)) if len(path) > 1 else None
            break
        node = node[key]
    if type(node) in _LEAVES:
        return node
    return None if isinstance(node, Mapping) else node


_LEAVES = frozenset({float, int, str, bool, type(None)})


def best_rule(key: str) -> Optional[str]:
    """How the table picks a metric column's best value (see :func:`_best`): ``"min"`` for a
    loss or an error (its last key holds one of LOWER_IS_BETTER_TAGS), ``None`` for a counter
    (epoch, step) that has no best, else ``"max"``."""
    name = key.rsplit(".", 1)[-1].lower()
    if name in ("epoch", "step", "epochs"):
        return None
    return "min" if any(tag in name for tag in LOWER_IS_BETTER_TAGS) else "max"


def _best(rows: Sequence[Row], col: Column) -> Optional[float]:
    name = col.path[-1].lower()
    if name in ("epoch", "step", "epochs") or len(rows) < 2:
        return None
    values = [
        v
        for r in rows
        if isinstance(v := _get(r.metrics, col.path), (int, float))
        and not isinstance(v, bool)
        and not (isinstance(v, float) and math.isnan(v))
    ]
    if len(values) < 2:
        return None
    lower = any(tag in name for tag in LOWER_IS_BETTER_TAGS)  # the whole leaf key
    return float(min(values) if lower else max(values))


@dataclass(frozen=True)
class _Head:
    """One column of the text: its header, the group title above it, how its cells align,
    the meta field it shows (None for a metric) and the best value to highlight."""

    title: str
    group: str = ""
    align: str = ">"
    meta: Optional[str] = None
    best: Optional[float] = None

    @property
    def block(self) -> tuple[Optional[str], str]:
        """Columns of one block share a group header; `` | `` separates blocks."""
        return (None, "") if self.meta is not None else ("metric", self.group)


def render(
    rows: Sequence[Row], columns: Sequence[Column], color: bool = False, base_name: str = "",
    spark: str = "", meta: Sequence[tuple[str, str]] = TABLE_META, colors: Sequence[str] = (),
) -> str:  # fmt: skip
    """The table as text; ANSI colours only when ``color``; with ``spark`` (the metric's
    key), a last column holding each row's sparkline. ``meta`` and ``colors``: the Explorer's
    meta columns and row colours (see :func:`grid_style`)."""
    if not columns and any(r.error for r in rows):
        columns = [Column(("error",), align="<")]  # somewhere to say what went wrong
    with paused_gc():  # a list per row, none in cycles
        table = [_cells(row, columns, spark, meta) for row in rows]
    heads = [_Head(name, align=align, meta=name) for name, align in meta]
    heads += [_Head(c.path[-1], ".".join(c.path[:-1]), c.align, best=_best(rows, c))
              for c in columns]  # fmt: skip
    if spark:
        heads.append(_Head(spark, "history", "<"))
    widths = [max([len(h.title)] + [len(r[i]) for r in table if i < len(r)]) for i, h in
              enumerate(heads)]  # fmt: skip
    first_metric = len(meta)
    if any(r.error for r in rows) and columns:
        widths[first_metric] = max(widths[first_metric], 1)
    lines = [f"Base: {base_name}"] if base_name else []
    lines += _header(heads, widths, color)
    seps = _seps(heads)
    if color:
        lines += [_line(row, cells, heads, widths, seps, _row_color(colors, i))
                  for i, (row, cells) in enumerate(zip(rows, table))]  # fmt: skip
    else:  # the same text as _line without colours, at a fraction of the cost
        specs = list(zip(seps, widths, [h.align == ">" for h in heads]))
        lines += [
            "".join([sep + (cell.rjust(w) if right else cell.ljust(w))
                     for cell, (sep, w, right) in zip(cells, specs)]).rstrip()
            for cells in table
        ]  # fmt: skip
    return "\n".join(lines)


def row_cells(row: Row, columns: Sequence[Column], spark: str = "") -> list[str]:
    """A row's cells as the text table shows them: meta fields, metrics, the sparkline."""
    return _cells(row, columns, spark)


def best_values(rows: Sequence[Row], columns: Sequence[Column]) -> list[Optional[float]]:
    """Each column's best value among ``rows`` (None where no best is highlighted)."""
    return [_best(rows, c) for c in columns]


def is_best(cell: str, best: Optional[float]) -> bool:
    """Whether a cell's text shows the column's best value (as the table highlights it)."""
    if best is None or not cell:
        return False
    try:
        return math.isclose(float(cell), best, rel_tol=5e-4, abs_tol=1e-12)
    except ValueError:
        return False


def _cells(
    row: Row, columns: Sequence[Column], spark: str, meta: Sequence[tuple[str, str]] = TABLE_META
) -> list[str]:
    cells = table_meta_cells(row) if meta is TABLE_META else [_META[n](row) for n, _ in meta]
    if row.error:
        cells += [f"! {row.error}"] + [""] * (len(columns) - 1) if columns else []
    else:
        cells += [fmt_value(_get(row.metrics, c.path), c.fmt) for c in columns]
    if spark:
        cells.append(row.spark)
    return cells


def _seps(heads: Sequence[_Head]) -> list[str]:
    """What goes before each column: nothing first, `` | `` where a block starts."""
    return [
        "" if i == 0 else " | " if head.block != heads[i - 1].block else "  "
        for i, head in enumerate(heads)
    ]


def _header(heads: Sequence[_Head], widths: list[int], color: bool) -> list[str]:
    """The column titles, under a line of group titles (each spanning its block's columns)
    when any column has a group."""
    seps = _seps(heads)
    top, bottom = [], []
    i = 0
    while i < len(heads):
        j = i
        while j + 1 < len(heads) and heads[j + 1].block == heads[i].block:
            j += 1
        span = sum(widths[i : j + 1]) + 2 * (j - i)
        group = heads[i].group
        top += [seps[i], group.center(span) if group else " " * span]
        for k in range(i, j + 1):
            bottom += [seps[k], heads[k].title.ljust(widths[k])]
        i = j + 1
    lines = ["".join(bottom).rstrip()]
    if any(h.group for h in heads):
        lines.insert(0, "".join(top).rstrip())
    if color:
        lines = [f"\033[1m{line}\033[0m" for line in lines]
    return lines


def _line(
    row: Row, cells: list[str], heads: Sequence[_Head], widths: list[int], seps: list[str],
    base: str = "",
) -> str:  # fmt: skip
    """A row in colour; ``base``: the row's own colour (the Explorer's ``get_colors``), for
    the cells that have none of their own."""
    out = []
    first_metric = sum(1 for h in heads if h.meta is not None)
    for i, cell in enumerate(cells):
        width = widths[i] if i < len(widths) else len(cell)
        head = heads[i] if i < len(heads) else _Head("")
        text = cell.rjust(width) if head.align == ">" else cell.ljust(width)
        style = _cell_style(row, head, cell, first=i == first_metric) or base
        if style:
            text = f"\033[{style}m{text}\033[0m"
        out.append(seps[i] if i < len(seps) else "  ")
        out.append(text)
    return "".join(out).rstrip()


def _cell_style(row: Row, head: _Head, cell: str, first: bool) -> str:
    """A cell's colour: the state's, red for the error (in the first metric column), bold
    green for a column's best value."""
    if head.meta == "state":
        return _STATE_STYLE.get(row.state, "")
    if head.meta is not None:
        return ""
    if row.error and first:
        return "31"
    if head.best is not None and cell:
        try:
            if math.isclose(float(cell), head.best, rel_tol=5e-4, abs_tol=1e-12):
                return "1;32"
        except ValueError:
            return ""
    return ""


#: The meta columns of an aggregated table (render_groups), with their alignment.
GROUP_META: tuple[tuple[str, str], ...] = (("group", ">"), ("name", "<"), ("n", ">"),
                                           ("done", ">"))  # fmt: skip


def render_groups(
    agg: Aggregation, states: Sequence[str] = (), color: bool = False, base_name: str = ""
) -> str:
    """An aggregation as text: one line per group with its size, how many of its XPs are
    done, and ``mean ± std`` of each metric (``(k)`` when only k XPs have a value)."""
    heads = [_Head(name, align=align, meta=name) for name, align in GROUP_META]
    for key in agg.metric_keys:
        path = key.split(".")
        heads.append(_Head(path[-1], ".".join(path[:-1]), best=_best_mean(agg, key)))
    table = []
    for index, group in enumerate(agg.groups):
        done = sum(1 for m in group.members if m < len(states) and states[m] == "COMPLETED")
        cells = [str(index), group.name, str(group.size), str(done) if states else ""]
        cells += [group.stats[k].text(fmt_value, group.size) for k in agg.metric_keys]
        table.append(cells)
    widths = [max([len(h.title)] + [len(r[i]) for r in table]) for i, h in enumerate(heads)]
    lines = [f"Base: {base_name}"] if base_name else []
    lines.append(f"Aggregated over {agg.over}: mean ± std (count when not every XP has it)")
    lines += _header(heads, widths, color)
    seps = _seps(heads)
    keys: list[Optional[str]] = [None] * len(GROUP_META)
    keys += agg.metric_keys
    for group, cells in zip(agg.groups, table):
        out = []
        for i, (cell, head, metric) in enumerate(zip(cells, heads, keys)):
            text = cell.rjust(widths[i]) if head.align == ">" else cell.ljust(widths[i])
            mean = group.stats[metric].mean if metric is not None else None
            if color and head.best is not None and mean is not None and (
                    math.isclose(mean, head.best)):  # fmt: skip
                text = f"\033[1;32m{text}\033[0m"
            out += [seps[i], text]
        lines.append("".join(out).rstrip())
    return "\n".join(lines)


def _best_mean(agg: Aggregation, key: str) -> Optional[float]:
    name = key.rsplit(".", 1)[-1].lower()
    means = [g.stats[key].mean for g in agg.groups if g.stats[key].mean is not None]
    if name in ("epoch", "step", "epochs") or len(means) < 2:
        return None
    return min(means) if lower_is_better(key) else max(means)  # type: ignore[type-var]


def summary(rows: Sequence[Row]) -> dict[str, int]:
    """Counts for the progress line: done / running / pending / failed / other."""
    out = {"done": 0, "running": 0, "pending": 0, "failed": 0, "cancelled": 0, "new": 0}
    for row in rows:
        state = row.state
        if state == "COMPLETED":
            out["done"] += 1
        elif state == "RUNNING":
            out["running"] += 1
        elif state in ("PENDING", "UNKNOWN"):
            out["pending"] += 1
        elif state == "NEW":
            out["new"] += 1
        elif state == "CANCELLED":
            out["cancelled"] += 1
        else:
            out["failed"] += 1
    return out


def all_finished(rows: Sequence[Row]) -> bool:
    return all(r.state not in ("RUNNING", "PENDING", "UNKNOWN") for r in rows)
