"""``gridman export``, ``gridman plot`` and ``gridman info --diff``: typer commands that render
what api/load.py finds and results/ (records, export, plot, diff) computes (rendering only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import UsageError
from .common import exit_for


def _source(
    name: Optional[str], patterns: Optional[list[str]], sigs: Optional[list[str]],
    grids_dir: Optional[str], main: Optional[str],
) -> Any:  # fmt: skip
    from ..api.load import grid_source, sigs_source
    from ..core.project import load_project

    project = load_project()
    if sigs:
        if name or patterns:
            raise UsageError("give a grid NAME (and patterns) or --sig SIG..., not both")
        return sigs_source(project, sigs, main)
    if not name:
        from ..core.grids import grids_dir as folder_of
        from ..core.grids import unknown_grid

        raise unknown_grid(folder_of(project, grids_dir), None)
    return grid_source(project, name, patterns or (), grids_dir, main)


def _write_out(text: str, output: Optional[str]) -> None:
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output)
    try:
        path.write_text(text, encoding="utf8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


def export(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Grid file grids/NAME.py."),
    patterns: Optional[list[str]] = typer.Argument(
        None, metavar="PATTERN", help="Select XPs: lr=0.1, !pat, 3 (the table's index)."
    ),
    fmt: Optional[str] = typer.Option(
        None,
        "--format",
        "-F",
        metavar="FORMAT",
        help="csv, json, markdown or latex (default: from -o, else csv).",
    ),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write to FILE."
    ),
    best: Optional[str] = typer.Option(
        None, "--best", metavar="KEY[:max|:min]", help="Metrics of the entry with the best KEY."
    ),
    epoch: Optional[int] = typer.Option(
        None, "--epoch", metavar="N", help="Metrics of entry N (1-based)."
    ),
    aggregate: Optional[str] = typer.Option(
        None,
        "--aggregate",
        metavar="PARAM",
        help="Group by every parameter but PARAM: mean, std, count.",
    ),
    sigs: Optional[list[str]] = typer.Option(
        None, "--sig", "-s", metavar="SIG", help="XPs by signature (or a unique prefix)."
    ),
    grids_dir: Optional[str] = typer.Option(
        None, "--grids-dir", metavar="DIR", help="Folder of grid files."
    ),
    main: Optional[str] = typer.Option(
        None, "--main", metavar="MAIN", help="The main (module or path)."
    ),
) -> None:
    """Export a grid's results: one row per XP (sig, name, state, epoch, parameters, metrics).

    \b
    Examples:
      gridman export mygrid                     CSV of the last values
      gridman export mygrid -o results.md       Markdown (from the extension)
      gridman export mygrid --best valid.acc:max      each XP at its best
      gridman export mygrid --epoch 10 lr=0.1   after 10 epochs, lr=0.1 only
      gridman export mygrid --aggregate seed -F latex   mean ± std over seeds
      gridman export --sig 3f9a2c1b --sig 7c0e11aa      XPs by signature

    Exit status: 0 when every XP exported is fine, 1 when some failed (the
    table is written all the same), 2 for bad usage or input (a pattern or a
    --best metric that matches nothing), 3 for a bug in gridman.
    """
    from ..results.export import format_for, render
    from ..results.records import Selection, build_results

    chosen = format_for(fmt, output)
    selection = Selection.parse(best, epoch)
    results = build_results(_source(name, patterns, sigs, grids_dir, main), selection)
    if not len(results):
        raise UsageError("no XP selected", "check the patterns")
    data = results.aggregate(aggregate) if aggregate else results
    _write_out(render(data, chosen), output)
    if output not in (None, "-"):
        count = len(data.groups) if aggregate else len(results)  # type: ignore[union-attr]
        what = "groups" if aggregate else "XPs"
        typer.echo(f"gridman: wrote {count} {what} ({selection.describe()}) to {output}", err=True)
    raise typer.Exit(exit_for(r.state for r in results))


def plot(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Grid file grids/NAME.py."),
    patterns: Optional[list[str]] = typer.Argument(
        None, metavar="PATTERN", help="Select XPs: lr=0.1, !pat, 3 (the table's index)."
    ),
    metric: str = typer.Option(
        ..., "--metric", "-m", metavar="METRIC", help="The metric to draw (valid.acc)."
    ),
    output: Optional[str] = typer.Option(
        None,
        "--output",
        "-o",
        metavar="FILE",
        help="A .png, .svg or .html file (default: NAME-METRIC.html).",
    ),
    width: int = typer.Option(800, "--width", metavar="PIXELS", help="Width in pixels."),
    height: int = typer.Option(500, "--height", metavar="PIXELS", help="Height in pixels."),
    sigs: Optional[list[str]] = typer.Option(
        None, "--sig", "-s", metavar="SIG", help="XPs by signature (or a unique prefix)."
    ),
    grids_dir: Optional[str] = typer.Option(
        None, "--grids-dir", metavar="DIR", help="Folder of grid files."
    ),
    main: Optional[str] = typer.Option(
        None, "--main", metavar="MAIN", help="The main (module or path)."
    ),
) -> None:
    """Draw a metric's history, one curve per XP (legend: the XPs' short names).

    \b
    Examples:
      gridman plot mygrid --metric valid.acc        mygrid-valid.acc.html
      gridman plot mygrid -m train.loss -o loss.png PNG (needs gridman[plot])
      gridman plot mygrid seed=0 -m valid.acc -o acc.svg    some XPs, as SVG

    Exit status: 0 when every XP selected is fine, 1 when some failed (the plot
    is written all the same), 2 for bad usage or input (a pattern or metric
    that matches nothing), 3 for a bug in gridman.
    """
    from ..results.plot import collect, write

    source = _source(name, patterns, sigs, grids_dir, main)
    if not source.refs:
        raise UsageError("no XP selected", "check the patterns")
    path = Path(output or f"{name or 'xps'}-{metric}.html")
    title = f"{source.grid}: {metric}" if source.grid else metric
    curves = collect(source, metric, title)
    write(curves, path, width, height)
    typer.echo(f"gridman: wrote {path} ({len(curves.series)} curves of {metric})")
    raise typer.Exit(exit_for(r.state for r in source.refs))


def show_diff(
    project: Any, main: Optional[str], sig: Optional[str], argv: Optional[list[str]],
    other: str, as_json: bool,
) -> int:  # fmt: skip
    """``gridman info --sig A --diff B``: print what differs between two XPs; returns the exit
    status (1 when either of them failed)."""
    from ..api.load import diff_xps

    if sig is None:
        if not argv:
            raise UsageError("--diff compares two XPs", "gridman info --sig A --diff B")
        from ..api.xp import prepare

        sig = prepare(project, main, None, argv).xp.sig
    found = diff_xps(project, main, sig, other)
    if as_json:
        from ..core import jsonsafe  # NaN/inf as null: strict JSON

        typer.echo(jsonsafe.dumps(found.to_json(), indent=2))
    else:
        typer.echo(render_diff(found))
    return exit_for([found.a.state, found.b.state])


def render_diff(found: Any) -> str:
    from ..results.export import raw_text
    from ..results.format import fmt_value

    def cell(change: Any, side: str, default: str) -> str:
        present = change.in_a if side == "a" else change.in_b
        value = change.a if side == "a" else change.b
        if not present:
            return default
        if isinstance(value, (dict, list, bool)) or value is None:
            return json.dumps(value)
        return raw_text(value) if default == "(default)" else fmt_value(value)  # params as given

    a, b = found.a, found.b
    lines = [f"A  {a.sig}  {a.state:<10} {a.name}", f"B  {b.sig}  {b.state:<10} {b.name}"]
    for title, items, default in (("parameters", found.params, "(default)"),
                                  ("final metrics", found.metrics, "-")):  # fmt: skip
        if not items:
            lines.append(f"{title}: the same")
            continue
        table = [(c.key, cell(c, "a", default), cell(c, "b", default),
                  "" if c.delta is None else f"{c.delta:+.4g}") for c in items]  # fmt: skip
        heads = ("", "A", "B", "B - A")
        widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(heads)]
        lines.append(f"{title} that differ:")
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
        for row in table:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)
