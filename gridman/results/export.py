"""Writers for result tables: CSV, JSON, Markdown and LaTeX (pure: they return text).

A :class:`Table` (rows.py) is columns plus rows of raw values (None = missing: an empty cell,
``null`` in JSON). CSV and JSON keep full precision; Markdown and LaTeX are for reading and
reports, so numbers are shortened as in the grid table. Aggregated results write ``KEY:mean``,
``KEY:std`` and ``KEY:count`` columns to CSV/JSON and ``mean ± std`` cells to Markdown/LaTeX.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any, Union

from ..core import jsonsafe
from ..errors import UsageError
from .aggregate import Aggregation
from .format import fmt_value
from .records import Results
from .rows import EXPORT_META, Table

FORMATS = ("csv", "json", "markdown", "latex")
_EXTENSIONS = {".csv": "csv", ".json": "json", ".md": "markdown", ".markdown": "markdown",
               ".tex": "latex"}  # fmt: skip


def format_for(option: str | None, path: str | None) -> str:
    """The format asked for, else the one the output file's extension names, else csv."""
    if option:
        wanted = option.lower()
        if wanted == "md":
            wanted = "markdown"
        if wanted == "tex":
            wanted = "latex"
        if wanted not in FORMATS:
            raise UsageError(f"unknown format {option!r}", f"formats: {', '.join(FORMATS)}")
        return wanted
    if path:
        for ext, fmt in _EXTENSIONS.items():
            if path.lower().endswith(ext):
                return fmt
    return "csv"


def render(results: Union[Results, Aggregation], fmt: str) -> str:
    """``results`` (records or an aggregation) as text in format ``fmt``."""
    if fmt in ("csv", "json"):
        table = results.table() if isinstance(results, Results) else aggregation_table(results)
        return to_csv(table) if fmt == "csv" else to_json(table)
    shown = display_table(results)
    return to_markdown(shown) if fmt == "markdown" else to_latex(shown)


# -- tables ------------------------------------------------------------------------------
def aggregation_table(agg: Aggregation) -> Table:
    """Group parameters, ``n``, then ``KEY:mean``, ``KEY:std``, ``KEY:count`` per metric."""
    columns = [*agg.param_keys, "n"]
    for key in agg.metric_keys:
        columns += [f"{key}:mean", f"{key}:std", f"{key}:count"]
    rows = []
    for group in agg.groups:
        values = dict(group.params)
        row: list[Any] = [values.get(k) for k in agg.param_keys]
        row.append(group.size)
        for key in agg.metric_keys:
            stat = group.stats[key]
            row += [stat.mean, stat.std, stat.count]
        rows.append(row)
    return Table(tuple(columns), tuple(tuple(r) for r in rows))


def display_table(results: Union[Results, Aggregation]) -> Table:
    """Text cells for reading: records as they are, groups as ``mean ± std`` (with ``(k)``
    when only k of the group's n XPs have the metric)."""
    if isinstance(results, Results):
        table = results.table()
        plain = set(results.columns()[: len(EXPORT_META) + len(results.param_keys)])
        shows = [raw_text if c in plain else fmt_value for c in table.columns]
        return Table(table.columns, tuple(tuple(_text(v, f) for v, f in zip(row, shows))
                                          for row in table.rows))  # fmt: skip
    columns = [*results.param_keys, "n", *results.metric_keys]
    rows = []
    for group in results.groups:
        values = dict(group.params)
        row = [_text(values.get(k), raw_text) for k in results.param_keys]
        row.append(str(group.size))
        row += [group.stats[k].text(fmt_value, group.size) for k in results.metric_keys]
        rows.append(tuple(row))
    return Table(tuple(columns), tuple(rows))


def _text(value: Any, fmt: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(fmt(value))
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def raw_text(value: Any) -> str:
    """A CSV cell: full precision, booleans and lists as JSON, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


# -- writers -----------------------------------------------------------------------------
def to_csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([raw_text(v) for v in row])
    return out.getvalue()


def to_json(table: Table) -> str:
    """A JSON array with one object per row (NaN and infinities as null)."""
    data = [dict(zip(table.columns, row)) for row in table.rows]
    return jsonsafe.dumps(data, indent=1) + "\n"  # the rule of every JSON output


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_md(c) for c in cells) + " |"

    numeric = [_numeric_column(table, i) for i in range(len(table.columns))]
    rule = "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"
    lines = [line(table.columns), rule]
    lines += [line([str(c) for c in row]) for row in table.rows]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$",
}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``±`` becomes ``$\\pm$``)."""
    return "".join(_LATEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A ``tabular`` with booktabs rules (``\\usepackage{booktabs}``)."""
    numeric = [_numeric_column(table, i) for i in range(len(table.columns))]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(c) for c in table.columns) + r" \\")
    lines.append(r"\midrule")
    for row in table.rows:
        lines.append(" & ".join(latex_escape(str(c)) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _numeric_column(table: Table, index: int) -> bool:
    cells = [str(row[index]) for row in table.rows if str(row[index])]
    return bool(cells) and all(_looks_numeric(c) for c in cells)


def _looks_numeric(text: str) -> bool:
    head = text.split(" ± ")[0]
    try:
        float(head)
    except ValueError:
        return False
    return True
