"""The live monitor's screen: rich's own ``Table``, fitted to the terminal.

Every line fits the terminal's width (columns are narrowed, cells cropped with an ellipsis,
never wrapped), the first line says when the states were last read, and when the grid is
taller than the terminal the rows that matter stay on screen (running, failed, then the best
value of each metric), the others counted on a last "N more" line. The full table is printed
as text when monitoring ends (view.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .common import FINE_STATES

if TYPE_CHECKING:
    from ..api.grid import GridSession
    from ..api.table import View
    from ..results.rows import Row

#: rich styles of the states (the text table's ANSI colours, by name).
STATE_STYLES = {
    "COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow", "NEW": "dim",
    "CANCELLED": "magenta", "UNKNOWN": "dim", "PREEMPTED": "yellow",
}  # fmt: skip

#: Lines the screen needs besides the rows: the title, the base name, the table's header,
#: the "N more" line, and one for the cursor rich leaves below a live display.
_CHROME = 5


def monitor_screen(
    session: GridSession, rows: Sequence[Row], view: View, size: Any, progress: str
) -> Any:
    """What the monitor shows now, for a terminal of ``size`` (rich's ConsoleDimensions)."""
    from rich.console import Group
    from rich.text import Text

    stamp = time.strftime("%H:%M:%S")
    title = f"updated {stamp}  grid {session.grid.name}: {progress}  (Ctrl-C: stop watching)"
    parts: list[Any] = [_line(title, "bold")]
    if session.base_name:
        parts.append(_line(f"Base: {session.base_name}", "dim"))
    room = max(3, size.height - _CHROME)
    if view.aggregate:
        parts += _groups(session, list(rows), view, room)
        return Group(*parts)
    shown = keep_rows(rows, room, session, view)
    parts.append(_rich_table(session, rows, shown, view))
    hidden = len(rows) - len(shown)
    if hidden:
        parts.append(Text(f"... {hidden} more rows ({_counts(rows, shown)}); the full table "
                          "prints when monitoring ends", style="dim", no_wrap=True,
                          overflow="ellipsis"))  # fmt: skip
    return Group(*parts)


def _line(text: str, style: str = "") -> Any:
    from rich.text import Text

    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def keep_rows(rows: Sequence[Row], room: int, session: Any = None, view: Any = None) -> list[int]:
    """Positions in ``rows`` of at most ``room`` rows to show, in table order: running first,
    then failed, then each metric's best, then the others in order."""
    if len(rows) <= room:
        return list(range(len(rows)))
    order = [i for i, r in enumerate(rows) if r.state == "RUNNING"]
    order += [i for i, r in enumerate(rows) if r.state not in FINE_STATES]
    if session is not None and view is not None:
        order += _best_rows(session, rows, view)
    order += range(len(rows))
    return sorted(list(dict.fromkeys(order))[:room])


def _best_rows(session: Any, rows: Sequence[Row], view: Any) -> list[int]:
    from ..api.table import table_columns
    from ..results.table import best_values, is_best, row_cells

    columns = table_columns(session, list(rows))
    bests = best_values(rows, columns)
    found = []
    for i, row in enumerate(rows):
        cells = row_cells(row, columns)[-len(columns) :] if columns else []
        if any(is_best(c, b) for c, b in zip(cells, bests)):
            found.append(i)
    return found


def _counts(rows: Sequence[Row], shown: Sequence[int]) -> str:
    kept = set(shown)
    counts: dict[str, int] = {}
    for i, row in enumerate(rows):
        if i not in kept:
            counts[row.state.lower()] = counts.get(row.state.lower(), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def _rich_table(session: Any, rows: Sequence[Row], shown: Sequence[int], view: Any) -> Any:
    from rich.table import Table

    from ..api.table import table_columns
    from ..results.rows import TABLE_META
    from ..results.table import best_values, is_best, row_cells

    columns = table_columns(session, list(rows))
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1), highlight=False,
                  header_style="bold", collapse_padding=True)  # fmt: skip
    for name, align in TABLE_META:
        # only the name may narrow first (rich collapses wrappable columns before the others);
        # its cells still never wrap: each is a one-line Text cropped with an ellipsis
        table.add_column(name, justify="right" if align == ">" else "left",
                         no_wrap=name != "name", overflow="ellipsis")  # fmt: skip
    for col in columns:
        table.add_column(".".join(col.path), justify="right" if col.align == ">" else "left",
                         no_wrap=True, overflow="ellipsis")  # fmt: skip
    if view.spark:
        table.add_column(view.spark, no_wrap=True, overflow="crop")
    bests = [None] * len(TABLE_META) + best_values(rows, columns) + [None] * bool(view.spark)
    state_at = [name for name, _ in TABLE_META].index("state")
    for i in shown:
        row = rows[i]
        cells = row_cells(row, columns, view.spark or "")
        styled = [_styled(c, "bold green" if is_best(c, b) else "") for c, b in zip(cells, bests)]
        style = STATE_STYLES.get(row.state, "" if row.state in FINE_STATES else "red")
        styled[state_at] = _styled(cells[state_at], style)
        table.add_row(*styled)
    return table


def _styled(text: str, style: str) -> Any:
    from rich.text import Text

    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _groups(session: Any, rows: list[Row], view: Any, room: int) -> list[Any]:
    """An aggregated view: the groups' text, each line cropped to the terminal."""
    from rich.text import Text

    from ..api.table import grid_aggregation
    from ..results.table import render_groups

    agg = grid_aggregation(session, rows, view.aggregate)
    lines = render_groups(agg, [r.state for r in rows]).splitlines()
    if session.base_name and lines and lines[0].startswith("Base: "):
        lines = lines[1:]
    hidden = max(0, len(lines) - room - 1)
    out = [Text(line, no_wrap=True, overflow="ellipsis") for line in lines[: len(lines) - hidden]]
    if hidden:
        out.append(_line(f"... {hidden} more groups; the full table prints when monitoring ends"))
    return out
