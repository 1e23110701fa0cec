"""The grid's table on the terminal: rows for a view, the table text, the live monitor.

Shared by ``gridman grid`` and ``gridman grid --stage`` (cli/stage.py).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import typer

from ..errors import EXIT_XP_FAILED
from .common import stderr as _stderr


@dataclass(frozen=True)
class View:
    """How the table is drawn: cut histories, a sparkline column, or groups."""

    trim: Optional[int] = None
    trim_last: bool = False
    spark: Optional[str] = None
    aggregate: Optional[str] = None


def use_color(stream: Any = None) -> bool:
    """Colours only on a terminal, never with NO_COLOR."""
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def _rows(session: Any, view: View, empty: frozenset[str] = frozenset()) -> list[Any]:
    """The table's rows; ``empty``: XPs whose folders were just created (nothing to read)."""
    from ..results.table import build_rows, history_lengths

    cut = None
    if view.trim is not None:
        cut = history_lengths(session.sheeps, [session.selected[view.trim]])[0]
    elif view.trim_last:
        cut = min(history_lengths(session.sheeps, session.selected), default=0)
    explorer = session.grid.explorer
    cache = _row_cache(session) if cut is None and not view.spark else None
    rows = build_rows(explorer, session.sheeps, session.selected, session.names, cut,
                      spark=view.spark, cache=cache, empty=empty)  # fmt: skip
    if cache is not None:
        cache.save(s.sig for s in session.sheeps)
    return rows


def _row_cache(session: Any) -> Any:
    """The grid's cache of table rows (rowcache.py), keyed by the code that computes them."""
    from ..results.rowcache import RowCache, cache_path, code_fingerprint

    explorer = session.grid.explorer
    roots = [session.project.root, session.grid.path.parent]
    return RowCache.load(cache_path(session.dir, session.grid.name),
                         code_fingerprint(explorer, roots))  # fmt: skip


def _table(session: Any, rows: list[Any], color: bool, view: View = View()) -> str:
    from ..results.table import default_columns, node_columns, render

    if view.aggregate:
        return _groups(session, rows, color, view.aggregate)
    nodes = session.grid.explorer.get_grid_metrics()
    columns = node_columns(nodes) if nodes else default_columns(rows)
    return render(rows, columns, color=color, base_name=session.base_name,
                  spark=view.spark or "")  # fmt: skip


def _groups(session: Any, rows: list[Any], color: bool, param: str) -> str:
    from ..core.config import flatten
    from ..core.names import grid_items
    from ..results.aggregate import aggregate
    from ..results.table import render_groups

    sheeps = session.sheeps
    items = grid_items([s.xp.delta for s in sheeps], [s.xp.params for s in sheeps])
    metrics = [{k: v for k, v in flatten(r.metrics).items() if not isinstance(v, dict)}
               for r in rows]  # fmt: skip
    agg = aggregate([items[r.index] for r in rows], metrics, param)
    return render_groups(agg, [r.state for r in rows], color, session.base_name)


def _progress(rows: list[Any]) -> str:
    from ..results.table import summary

    counts = summary(rows)
    parts = [f"{counts['done']}/{len(rows)} done", f"{counts['running']} running",
             f"{counts['pending']} pending", f"{counts['failed']} failed"]  # fmt: skip
    if counts["cancelled"]:
        parts.append(f"{counts['cancelled']} cancelled")
    return ", ".join(parts)


def watch(
    session: Any, interval: float, view: View, monitor: bool, as_json: bool, plan: Any = None,
    created: frozenset[str] = frozenset(),
) -> int:  # fmt: skip
    from ..results.table import all_finished

    rows = _rows(session, view, created)
    if monitor and not all_finished(rows):
        try:
            rows = _monitor(session, interval, view, rows)
        except KeyboardInterrupt:
            _stderr("gridman: stopped monitoring; the XPs keep running (gridman grid "
                    f"{session.grid.name} re-attaches, -C cancels)")  # fmt: skip
            rows = _rows(session, view)
    if as_json:
        steps = {s.sig: s for s in plan.steps} if plan is not None else {}
        data = []
        for row in rows:
            item = row.to_json()
            if row.sig in steps:
                item["plan"] = {"action": steps[row.sig].action.value,
                                "reason": steps[row.sig].reason}  # fmt: skip
            data.append(item)
        from ..core import jsonsafe  # NaN/inf as null: strict JSON

        typer.echo(jsonsafe.dumps(data, indent=1))
    else:
        typer.echo(_table(session, rows, use_color(), view))
        typer.echo(_progress(rows))
    from ..results.table import summary

    return EXIT_XP_FAILED if summary(rows)["failed"] else 0


def _monitor(session: Any, interval: float, view: View, rows: list[Any]) -> list[Any]:
    from ..core.perf import thaw
    from ..results.table import all_finished

    thaw()  # refreshes for hours: their garbage must stay collectable
    if not sys.stdout.isatty():
        last = ""
        while not all_finished(rows):
            line = _progress(rows)
            if line != last:
                typer.echo(f"gridman: {line}")
                last = line
            time.sleep(min(interval, 1.0))
            session.refresh()
            rows = _rows(session, view)
        return rows
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()

    def screen(rows: list[Any]) -> Text:
        table = _table(session, rows, use_color(), view)
        lines = table.splitlines()
        room = max(5, console.height - 3)
        if len(lines) > room:
            lines = [*lines[:room], f"... {len(lines) - room} more rows (full table at the end)"]
        head = f"Monitoring grid {session.grid.name}: {_progress(rows)}  (Ctrl-C stops watching)"
        return Text.from_ansi(head + "\n" + "\n".join(lines))

    with Live(screen(rows), console=console, auto_refresh=False, transient=True) as live:
        while not all_finished(rows):
            time.sleep(interval)
            session.refresh()
            rows = _rows(session, view)
            live.update(screen(rows), refresh=True)
    return rows
