"""The tracker: the grid's XPs as rows (states, names, metrics), rendered as a table or JSON.

Rows come from each XP's history through the Explorer's ``process_sheep``/``process_history``
(by default the last value of every metric, nested dicts as column groups). One unreadable
history only marks its own row. Columns follow ``Explorer.get_grid_metrics()`` (treetable
nodes) when it returns any, else every metric seen. Colours only on a terminal and never with
``NO_COLOR``; the best value of each metric is highlighted. Metrics of stages (a test pass,
see stages.py) join each row under the stage's name. ``spark`` adds a unicode sparkline of one
metric's history; :func:`render_groups` draws an aggregation (mean ± std per group).
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
from .rowcache import RowCache, RowKeys, file_key

if TYPE_CHECKING:
    from .aggregate import Aggregation


@dataclass(frozen=True)
class Row:
    """One XP of the table."""

    index: int
    name: str
    sig: str
    state: str
    metrics: dict[str, Any]  # nested, as the Explorer returned it
    error: Optional[str]
    argv: list[str]
    folder: str
    spark: str = ""  # sparkline of one metric's history (not part of the JSON rows)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` contract: one object per XP with these keys."""
        flat = {k: v for k, v in flatten(self.metrics).items() if not isinstance(v, dict)}
        return {
            "index": self.index, "name": self.name, "sig": self.sig, "state": self.state,
            "argv": self.argv, "folder": self.folder, "metrics": flat, "error": self.error,
        }  # fmt: skip


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
            metrics = explorer.process_sheep(sheep, history) if custom else (
                explorer.process_history(history))  # fmt: skip
        elif cache is not None:
            metrics, stages = _cached_metrics(explorer, xp.sig, os.fspath(folder), cache)
        else:
            history = load_history(folder)  # no files: an empty history
            if trim is not None:
                history = history[:trim]
            metrics = explorer.process_sheep(sheep, history) if custom else (
                explorer.process_history(history))  # fmt: skip
        metrics = dict(metrics or {})
        for stage, values in (stage_metrics(folder) if stages else {}).items():
            old = metrics.get(stage)
            metrics[stage] = {**old, **values} if isinstance(old, Mapping) else values
    except Exception as exc:  # one bad history or hook marks its row, never the table
        metrics, error = {}, f"{type(exc).__name__}: {exc}"
    line = sparkline(metric_history(history, spark)) if spark else ""
    return Row(index, name, xp.sig, state_of(sheep), metrics, error, list(xp.argv), str(folder),
               line)  # fmt: skip


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


SPARKS = "▁▂▃▄▅▆▇█"


def metric_history(history: Sequence[Any], key: str) -> list[Optional[float]]:
    """One flattened metric's value in each entry (None where absent or not a number)."""
    out: list[Optional[float]] = []
    for entry in history:
        value = flatten(entry).get(key) if isinstance(entry, Mapping) else None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        out.append(float(value) if ok and math.isfinite(value) else None)  # type: ignore[arg-type]
    return out


def sparkline(values: Sequence[Optional[float]], width: int = 24) -> str:
    """``▁▃▅█``: values scaled between their min and max; gaps as spaces; longer series are
    averaged into ``width`` buckets."""
    if len(values) > width:
        buckets = []
        for b in range(width):
            part = values[b * len(values) // width : (b + 1) * len(values) // width]
            nums = [v for v in part if v is not None]
            buckets.append(sum(nums) / len(nums) if nums else None)
        values = buckets
    nums = [v for v in values if v is not None]
    if not nums:
        return ""
    low, high = min(nums), max(nums)
    top = len(SPARKS) - 1
    chars = []
    for v in values:
        if v is None:
            chars.append(" ")
        elif high == low:
            chars.append(SPARKS[top // 2])
        else:
            chars.append(SPARKS[round((v - low) / (high - low) * top)])
    return "".join(chars)


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


def fmt_value(value: Any, spec: str = "") -> str:
    if value is None:
        return ""
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        digits = max(0, 4 - len(str(int(abs(value)))))
        return f"{value:.{digits}f}"
    return str(value)


_LOWER_IS_BETTER = ("loss", "err", "ppl", "perplexity", "wer", "cer", "mse", "mae", "nll")
_STATE_STYLE = {
    "COMPLETED": "32", "RUNNING": "36", "PENDING": "33", "NEW": "2", "CANCELLED": "35",
    "FAILED": "31", "VANISHED": "31", "TIMEOUT": "31", "OUT_OF_MEMORY": "31",
    "NODE_FAIL": "31", "PREEMPTED": "33", "UNKNOWN": "2",
}  # fmt: skip


def lower_is_better(key: str) -> bool:
    """Whether a metric named ``key`` looks like a loss or an error (its last component)."""
    name = key.rsplit(".", 1)[-1].lower()
    return any(tag in name for tag in _LOWER_IS_BETTER)


def _get(metrics: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = metrics
    for key in path:  # plain dicts first: isinstance against the Mapping ABC is slow
        if (type(node) is not dict and not isinstance(node, Mapping)) or key not in node:
            return None
        node = node[key]
    if type(node) in _LEAVES:
        return node
    return None if isinstance(node, Mapping) else node


_LEAVES = frozenset({float, int, str, bool, type(None)})


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
    lower = any(tag in name for tag in _LOWER_IS_BETTER)
    return float(min(values) if lower else max(values))


def render(
    rows: Sequence[Row], columns: Sequence[Column], color: bool = False, base_name: str = "",
    spark: str = "",
) -> str:  # fmt: skip
    """The table as text; ANSI colours only when ``color``; with ``spark`` (the metric's
    key), a last column holding each row's sparkline."""
    meta = [("index", ">"), ("name", "<"), ("state", "<"), ("sig", "<")]
    if not columns and any(r.error for r in rows):
        columns = [Column(("error",), align="<")]  # somewhere to say what went wrong
    with paused_gc():  # a list per row, none in cycles
        table = [_cells(row, columns, spark) for row in rows]
    headers = [m for m, _ in meta] + [c.path[-1] for c in columns]
    aligns = [a for _, a in meta] + [c.align for c in columns]
    groups = [""] * len(meta) + [".".join(c.path[:-1]) for c in columns]
    best = [None] * len(meta) + [_best(rows, c) for c in columns]
    if spark:
        headers, aligns, groups = [*headers, spark], [*aligns, "<"], [*groups, "history"]
        best.append(None)
    widths = [max([len(h)] + [len(r[i]) for r in table if i < len(r)]) for i, h in
              enumerate(headers)]  # fmt: skip
    if any(r.error for r in rows) and columns:
        widths[len(meta)] = max(widths[len(meta)], 1)
    lines = []
    if base_name:
        lines.append(f"Base: {base_name}")
    lines += _header(headers, groups, widths, color)
    seps = [_sep(groups, i) if i else "" for i in range(len(headers))]
    if color:
        for row, cells in zip(rows, table):
            lines.append(_line(row, cells, widths, aligns, seps, best, color, len(meta)))
    else:  # the same text as _line without colours, at a fraction of the cost
        specs = list(zip(seps, widths, [a == ">" for a in aligns]))
        lines += [
            "".join([sep + (cell.rjust(w) if right else cell.ljust(w))
                     for cell, (sep, w, right) in zip(cells, specs)]).rstrip()
            for cells in table
        ]  # fmt: skip
    return "\n".join(lines)


def _cells(row: Row, columns: Sequence[Column], spark: str) -> list[str]:
    cells = [str(row.index), row.name, row.state, row.sig]
    if row.error:
        cells += [f"! {row.error}"] + [""] * (len(columns) - 1) if columns else []
    else:
        cells += [fmt_value(_get(row.metrics, c.path), c.fmt) for c in columns]
    if spark:
        cells.append(row.spark)
    return cells


def _sep(groups: Sequence[str], i: int) -> str:
    return " | " if i > 0 and (i == 4 or groups[i] != groups[i - 1]) else "  "


def _header(headers: list[str], groups: list[str], widths: list[int], color: bool) -> list[str]:
    top, bottom = [], []
    i = 0
    while i < len(headers):
        j = i
        while j + 1 < len(headers) and groups[j + 1] == groups[i] and j + 1 != 4:
            j += 1
        span = sum(widths[i : j + 1]) + 2 * (j - i)
        top.append(_sep(groups, i) if i else "")
        top.append(groups[i].center(span) if groups[i] else " " * span)
        for k in range(i, j + 1):
            bottom.append(_sep(groups, k) if k else "")
            bottom.append(headers[k].ljust(widths[k]))
        i = j + 1
    lines = ["".join(bottom).rstrip()]
    if any(groups):
        lines.insert(0, "".join(top).rstrip())
    if color:
        lines = [f"\033[1m{line}\033[0m" for line in lines]
    return lines


def _line(
    row: Row, cells: list[str], widths: list[int], aligns: list[str], seps: list[str],
    best: list[Any], color: bool, n_meta: int,
) -> str:  # fmt: skip
    out = []
    for i, cell in enumerate(cells):
        width = widths[i] if i < len(widths) else len(cell)
        text = cell.rjust(width) if aligns[i] == ">" else cell.ljust(width)
        if color:
            style = _cell_style(row, i, cell, best, n_meta)
            if style:
                text = f"\033[{style}m{text}\033[0m"
        out.append(seps[i] if i < len(seps) else "  ")
        out.append(text)
    return "".join(out).rstrip()


def _cell_style(row: Row, i: int, cell: str, best: list[Any], n_meta: int) -> str:
    if i == 2:
        return _STATE_STYLE.get(row.state, "")
    if row.error and i == n_meta:
        return "31"
    if i >= n_meta and best[i] is not None and cell:
        try:
            if math.isclose(float(cell), best[i], rel_tol=5e-4, abs_tol=1e-12):
                return "1;32"
        except ValueError:
            return ""
    return ""


def render_groups(
    agg: Aggregation, states: Sequence[str] = (), color: bool = False, base_name: str = ""
) -> str:
    """An aggregation as text: one line per group with its size, how many of its XPs are
    done, and ``mean ± std`` of each metric (``(k)`` when only k XPs have a value)."""
    paths = [tuple(k.split(".")) for k in agg.metric_keys]
    headers = ["group", "name", "n", "done"] + [p[-1] for p in paths]
    groups = ["", "", "", ""] + [".".join(p[:-1]) for p in paths]
    aligns = [">", "<", ">", ">"] + [">"] * len(paths)
    best = [None] * 4 + [_best_mean(agg, k) for k in agg.metric_keys]
    table = []
    for index, group in enumerate(agg.groups):
        done = sum(1 for m in group.members if m < len(states) and states[m] == "COMPLETED")
        cells = [str(index), group.name, str(group.size), str(done) if states else ""]
        cells += [group.stats[k].text(fmt_value, group.size) for k in agg.metric_keys]
        table.append(cells)
    widths = [max([len(h)] + [len(r[i]) for r in table]) for i, h in enumerate(headers)]
    lines = [f"Base: {base_name}"] if base_name else []
    lines.append(f"Aggregated over {agg.over}: mean ± std (count when not every XP has it)")
    lines += _header(headers, groups, widths, color)
    for group, cells in zip(agg.groups, table):
        out = []
        for i, cell in enumerate(cells):
            text = cell.rjust(widths[i]) if aligns[i] == ">" else cell.ljust(widths[i])
            mean = group.stats[agg.metric_keys[i - 4]].mean if i >= 4 else None
            top = best[i]
            if color and top is not None and mean is not None and math.isclose(mean, top):
                text = f"\033[1;32m{text}\033[0m"
            out += [_sep(groups, i) if i else "", text]
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
