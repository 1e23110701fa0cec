"""The grid's table on the terminal: the table text, the JSON, the live monitor.

Shared by ``gridman grid`` and ``gridman grid --stage`` (cli/stage.py). The rows, columns and
groups come from api/table.py; this module only renders them and refreshes them while
monitoring.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..api.table import View, grid_aggregation, grid_rows, json_rows, table_columns
from ..errors import EXIT_XP_FAILED
from .common import stderr as _stderr

if TYPE_CHECKING:
    from ..api.grid import GridSession
    from ..core.shep import Plan
    from ..results.rows import Row

__all__ = ["View", "use_color", "watch"]


def use_color(stream: Any = None) -> bool:
    """Colours on a terminal: never with a non-empty ``NO_COLOR`` or ``TERM=dumb``, always
    with a non-empty ``FORCE_COLOR`` (the conventions of no-color.org and force-color.org)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def _table(session: GridSession, rows: list[Row], color: bool, view: View = View()) -> str:
    from ..results.table import grid_style, render, render_groups

    if view.aggregate:
        agg = grid_aggregation(session, rows, view.aggregate)
        return render_groups(agg, [r.state for r in rows], color, session.base_name)
    meta, colors = grid_style(session.grid.explorer)  # Dora's get_grid_meta / get_colors
    return render(rows, table_columns(session, rows), color=color, base_name=session.base_name,
                  spark=view.spark or "", meta=meta, colors=colors)  # fmt: skip


def _progress(rows: list[Row]) -> str:
    from ..results.table import summary

    counts = summary(rows)
    parts = [f"{counts['done']}/{len(rows)} done", f"{counts['running']} running",
             f"{counts['pending']} pending", f"{counts['failed']} failed"]  # fmt: skip
    if counts["cancelled"]:
        parts.append(f"{counts['cancelled']} cancelled")
    return ", ".join(parts)


def watch(
    session: GridSession, interval: float, view: View, monitor: bool, as_json: bool,
    plan: Optional[Plan] = None, created: frozenset[str] = frozenset(),
) -> int:  # fmt: skip
    from ..results.table import all_finished

    rows = grid_rows(session, view, created)
    if monitor and not all_finished(rows):
        try:
            rows = _monitor(session, interval, view, rows)
        except KeyboardInterrupt:
            _stderr("gridman: stopped monitoring; the XPs keep running\n  (gridman grid "
                    f"{session.grid.name} re-attaches, -C cancels)")  # fmt: skip
            session.refresh()  # the last table shows the states of now, not of the last poll
            rows = grid_rows(session, view)
    if as_json:
        from ..api.table import resource_requests
        from ..core import jsonsafe  # NaN/inf as null: strict JSON

        typer.echo(jsonsafe.dumps(json_rows(rows, plan, resource_requests(session)), indent=1))
    else:
        typer.echo(_table(session, rows, use_color(), view))
        typer.echo(_progress(rows))
    from ..results.table import summary

    return EXIT_XP_FAILED if summary(rows)["failed"] else 0


def _monitor(session: GridSession, interval: float, view: View, rows: list[Row]) -> list[Row]:
    from ..core.perf import thaw
    from ..results.table import all_finished

    thaw()  # refreshes for hours: their garbage must stay collectable
    if not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return _progress_lines(session, interval, view, rows)
    from rich.console import Console
    from rich.live import Live

    from .screen import monitor_screen

    color = use_color()
    console = Console(color_system="auto" if color else None, force_terminal=True,
                      no_color=not color, highlight=False)  # fmt: skip

    def screen(rows: list[Row]) -> Any:
        return monitor_screen(session, rows, view, console.size, _progress(rows))

    with Live(screen(rows), console=console, auto_refresh=False, transient=True) as live:
        while not all_finished(rows):
            time.sleep(interval)
            session.refresh()
            rows = grid_rows(session, view)
            live.update(screen(rows), refresh=True)
    return rows


def _progress_lines(
    session: GridSession, interval: float, view: View, rows: list[Row]
) -> list[Row]:
    """No terminal to redraw (a pipe, a log file, ``TERM=dumb``): a line when progress changes."""
    from ..results.table import all_finished

    last = ""
    while not all_finished(rows):
        line = _progress(rows)
        if line != last:
            typer.echo(f"gridman: {line}")
            last = line
        time.sleep(min(interval, 1.0))
        session.refresh()
        rows = grid_rows(session, view)
    return rows
