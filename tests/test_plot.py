"""Pictures: ``gridman plot`` (PNG, SVG, HTML), sparklines and the aggregated grid table."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from gridman.results.format import SPARKS, fmt_value, metric_history, sparkline
from gridman.results.plot import Curves, Series, figure, nice_ticks, style, to_svg, write
from gridman.testing import run_cli
from gridman.testing.grids import png_size, trained_grid_project

GRIDS = {
    "main": "for lr in [0.2, 0.3]:\n    for seed in [0, 1]:\n"
    "        launcher(lr=lr, seed=seed, epochs=4)",
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_grid_project(tmp_path_factory.mktemp("plot") / "proj", GRIDS)


def sigs_of(root: Path, *patterns: str) -> dict[str, str]:
    result = run_cli(["export", "main", *patterns, "-F", "json"], root)
    return {row["sig"]: row["name"] for row in json.loads(result.stdout)}


def test_html_has_one_series_per_xp(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.html"
    result = run_cli(["plot", "main", "--metric", "train.loss", "-o", str(out)], trained)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (4 curves of train.loss)" in result.stdout
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    series = re.findall(r'<g class="series" data-sig="([0-9a-f]{8})" data-name="([^"]*)"', page)
    assert dict(series) == sigs_of(trained)  # one series per XP, named by its short name
    for sig in dict(series):
        group = re.search(rf'data-sig="{sig}".*?</g>', page, re.S)
        assert group is not None
        assert group.group(0).count("<circle") == 4  # one point per epoch
    legend = re.findall(r'class="legend"/>\s*<text[^>]*>([^<]*)</text>', page)
    assert legend == [name for _, name in series]
    # self-contained: no script, nothing fetched
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert "@import" not in page and "url(" not in page


def test_svg_and_patterns(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "acc.svg"
    result = run_cli(["plot", "main", "seed=0", "-m", "train.loss", "-o", str(out)], trained)
    assert result.exit_code == 0, result.output
    svg = out.read_text()
    assert svg.startswith("<svg") and svg.count('class="series"') == 2
    assert 'width="800" height="500"' in svg


def test_png_has_the_asked_size(trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "grid.png"
    args = ["plot", "main", "--metric", "train.loss", "-o", str(out), "--width", "640",
            "--height", "480"]  # fmt: skip
    result = run_cli(args, trained)
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5000
    assert png_size(out) == (640, 480)
    default = tmp_path / "default.png"
    run_cli(["plot", "main", "-m", "train.loss", "-o", str(default)], trained)
    assert png_size(default) == (800, 500)


def test_png_without_matplotlib(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "grid.png"
    result = run_cli(["plot", "main", "--metric", "train.loss", "-o", str(out)], trained)
    assert result.exit_code == 2
    assert "pip install 'gridman[plot]'" in result.output and not out.exists()


def test_plot_usage_errors(trained: Path, tmp_path: Path) -> None:
    cases = [
        (["-m", "valid.acc"], "no selected XP has a history of 'valid.acc'"),
        (["-m", "train.loss", "-o", str(tmp_path / "x.gif")], "give a file ending in .png"),
        (["-m", "train.loss", "--width", "10"], "at least 100x100"),
        (["-m", "train.loss", "lr=0.9"], "pattern 'lr=0.9' matches no XP"),
    ]
    for args, needle in cases:
        result = run_cli(["plot", "main", *args], trained)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)
    missing = run_cli(["plot", "main", "-m", "valid.acc"], trained)
    assert "train.loss" in missing.output  # lists what can be plotted


def test_default_output_name(trained: Path) -> None:
    result = run_cli(["plot", "main", "-m", "train.loss"], trained)
    assert result.exit_code == 0, result.output
    path = trained / "main-train.loss.html"
    assert path.is_file() and path.read_text().count('class="series"') == 4
    path.unlink()


def test_nice_ticks() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.13, 0.31) == pytest.approx([0.15, 0.2, 0.25, 0.3])
    assert nice_ticks(1.0, 1.0) == [1.0]


# -- sparklines -----------------------------------------------------------------------------
def test_sparkline() -> None:
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == SPARKS
    assert sparkline([3.0, None, 1.0]) == "█ ▁"
    assert sparkline([2.0, 2.0]) == SPARKS[3] * 2
    assert sparkline([]) == "" and sparkline([None]) == ""
    long = sparkline([float(i) for i in range(100)], width=10)
    assert len(long) == 10 and long[0] == SPARKS[0] and long[-1] == SPARKS[-1]
    history = [{"a": {"b": 1}}, {"c": 2}, {"a": {"b": True}}, "junk", {"a": {"b": 4.5}}]
    assert metric_history(history, "a.b") == [1.0, None, None, None, 4.5]


def test_grid_spark_column(trained: Path) -> None:
    result = run_cli(["grid", "main", "--backend", "inline", "--spark", "train.loss"], trained)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("index"))
    assert header.split()[-1] == "train.loss"
    assert any(line.rstrip().endswith("history") for line in lines)
    rows = [line for line in lines if re.search(r"\b[0-9a-f]{8}\b", line)]
    assert len(rows) == 4
    assert all(line.endswith("█▄▂▁") or line.endswith("█▃▂▁") for line in rows), rows
    bad = run_cli(["grid", "main", "--backend", "inline", "--spark", "x", "--json"], trained)
    assert bad.exit_code == 2 and "gridman export" in bad.output


def test_grid_aggregate_table(trained: Path) -> None:
    result = run_cli(["grid", "main", "--backend", "inline", "--aggregate", "seed"], trained)
    assert result.exit_code == 0, result.output
    text = ANSI.sub("", result.stdout)
    assert "Aggregated over seed" in text
    groups = [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s+lr=", line)]
    assert [g[1] for g in groups] == ["lr=0.2", "lr=0.3"]
    # group, name, n, done | epoch mean ± std | loss mean ± std
    first = groups[0]
    assert first[2:4] == ["2", "2"]
    losses = [1 / (1 + 3 + 0.2 + s) for s in (0, 1)]
    mean = sum(losses) / 2
    std = abs(losses[0] - losses[1]) / 2**0.5
    assert first[-3:] == [fmt_value(mean), "±", fmt_value(std)] == ["0.215", "±", "0.032"]
    bad = run_cli(["grid", "main", "--backend", "inline", "--aggregate", "depth"], trained)
    assert bad.exit_code == 2 and "parameters of the grid: epochs, lr, seed" in bad.output
    assert "plan" not in bad.stdout  # refused before planning


def _hex(line: Any) -> str:
    from matplotlib.colors import to_hex

    return str(to_hex(line.get_color()))


def _many_curves(count: int, epochs: int = 5) -> Curves:
    series = tuple(
        Series(f"xp{i}", f"{i:08x}", tuple((e, float(i + e)) for e in range(1, epochs + 1)))
        for i in range(count)
    )
    return Curves("loss", "loss", series)


def test_25_png_curves_have_distinct_styles(tmp_path: Path) -> None:
    """Issue 14 case 14: from the 11th curve on, the colour came back with nothing else to
    tell two curves apart. Inspect the Line2D objects matplotlib really draws."""
    pytest.importorskip("matplotlib")
    curves = _many_curves(25)
    fig = figure(curves, 800, 500)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == [s.name for s in curves.series]
    looks = {(_hex(line), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(looks) == 25
    # the 1st and the 11th curve share their colour, and nothing else
    first, eleventh = lines[0], lines[10]
    assert _hex(first) == _hex(eleventh)
    assert first.get_linestyle() != eleventh.get_linestyle()
    assert first.get_marker() != eleventh.get_marker()
    # the legend shows the same styles
    handles = fig.axes[0].get_legend().legend_handles
    assert [(h.get_linestyle(), h.get_marker()) for h in handles] == [
        (line.get_linestyle(), line.get_marker()) for line in lines
    ]
    write(curves, tmp_path / "many.png")
    assert png_size(tmp_path / "many.png") == (800, 500)


def test_long_png_curves_stay_distinct_without_markers() -> None:
    """Curves of more than 30 points draw no markers: colour and dash alone must differ."""
    pytest.importorskip("matplotlib")
    lines = figure(_many_curves(40, epochs=31), 800, 500).axes[0].get_lines()
    assert {line.get_marker() for line in lines} == {"None"}
    assert len({(_hex(line), line.get_linestyle()) for line in lines}) == 40


def test_styles_unique_over_200_curves() -> None:
    looks = [style(i) for i in range(200)]
    assert len(set(looks)) == 200
    assert len({(look.color, look.dash) for look in looks[:40]}) == 40
    assert style(200) == style(0)


def test_25_svg_curves_have_distinct_styles() -> None:
    svg = to_svg(_many_curves(25))
    groups = re.findall(r'<g class="series".*?</g>', svg, re.S)
    assert len(groups) == 25
    looks, shapes = set(), []
    for group in groups:
        line = re.search(r'<polyline fill="none" stroke="([^"]+)" stroke-width="2"'
                         r'(?: stroke-dasharray="([^"]+)")?', group)  # fmt: skip
        shape = re.search(r"<(circle|rect|polygon) ", group)
        assert line is not None and shape is not None
        looks.add((line.group(1), line.group(2)))
        shapes.append(shape.group(1))
    assert len(looks) == 25  # colour and dash: unique up to 40 curves
    assert shapes[0:21:10] == ["circle", "rect", "polygon"]  # markers move on every 10
    legend = re.findall(r'<line [^>]*stroke="([^"]+)" stroke-width="3"'
                        r'(?: stroke-dasharray="([^"]+)")? class="legend"/>', svg)  # fmt: skip
    assert len(set(legend)) == 25
