"""Writers (CSV, JSON, Markdown, LaTeX), ``gridman export`` and ``gridman info --diff``."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from gridman.errors import UsageError
from gridman.results.export import (
    Table,
    format_for,
    latex_escape,
    to_csv,
    to_json,
    to_latex,
    to_markdown,
)
from gridman.testing import run_cli
from gridman.testing.grids import trained_grid_project

NASTY = "a_b & c% $5 #1 {x} ~y ^z \\w <q>"
TABLE = Table(
    ("name", "acc", "note"),
    (("lr=0.1", 0.5, NASTY), ("x|y", None, ""), ("z", 1e-05, "±")),
)


def parse_markdown(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a Markdown table (escaped pipes kept inside cells)."""
    lines = text.strip().splitlines()
    cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
             for line in lines]  # fmt: skip
    assert all(re.fullmatch(r"-+:?", c) for c in cells[1])
    return cells[0], cells[2:]


UNESCAPE = [
    (r"\textbackslash{}", "\\"), (r"\textasciitilde{}", "~"), (r"\textasciicircum{}", "^"),
    (r"\textless{}", "<"), (r"\textgreater{}", ">"), (r"$\pm$", "±"), (r"\&", "&"),
    (r"\%", "%"), (r"\$", "$"), (r"\#", "#"), (r"\_", "_"), (r"\{", "{"), (r"\}", "}"),
]  # fmt: skip


def unlatex(text: str) -> str:
    for escaped, plain in UNESCAPE:
        text = text.replace(escaped, plain)
    return text


def parse_latex(text: str) -> tuple[list[str], list[list[str]]]:
    lines = text.strip().splitlines()
    assert lines[0].startswith(r"\begin{tabular}") and lines[-1] == r"\end{tabular}"
    body = [line for line in lines if line.endswith(r"\\")]
    rows = [[unlatex(c.strip()) for c in line[: -len(r"\\")].split(" & ")] for line in body]
    return rows[0], rows[1:]


def test_markdown_round_trip() -> None:
    header, rows = parse_markdown(to_markdown(TABLE))
    assert header == list(TABLE.columns)
    assert rows == [[str(c) for c in row] for row in TABLE.rows]


def test_latex_round_trip_and_escapes() -> None:
    text = to_latex(TABLE)
    header, rows = parse_latex(text)
    assert header == list(TABLE.columns)
    assert rows == [[str(c) for c in row] for row in TABLE.rows]
    escaped = latex_escape(NASTY)
    assert not re.search(r"(?<!\\)[&%#_{}$]", escaped.replace(r"\textbackslash{}", "")
                         .replace(r"\textasciitilde{}", "").replace(r"\textasciicircum{}", "")
                         .replace(r"\textless{}", "").replace(r"\textgreater{}", ""))  # fmt: skip
    assert unlatex(escaped) == NASTY
    assert r"\begin{tabular}{lrl}" not in text  # a column with text is left-aligned


def test_csv_and_json_keep_full_precision() -> None:
    rows = list(csv.reader(io.StringIO(to_csv(TABLE))))
    assert rows[0] == ["name", "acc", "note"] and rows[1] == ["lr=0.1", "0.5", NASTY]
    assert rows[2] == ["x|y", "", ""] and rows[3][1] == "1e-05"
    data = json.loads(to_json(Table(("a", "b"), ((float("nan"), [1, 2]),))))
    assert data == [{"a": None, "b": [1, 2]}]


def test_format_from_option_or_extension() -> None:
    assert format_for(None, None) == "csv"
    assert format_for(None, "out.MD") == "markdown" and format_for(None, "t.tex") == "latex"
    assert format_for("md", "out.csv") == "markdown" and format_for("JSON", None) == "json"
    with pytest.raises(UsageError, match="formats: csv, json, markdown, latex"):
        format_for("xlsx", None)


# -- the command -----------------------------------------------------------------------------
GRIDS = {
    "main": "for lr in [0.2, 0.3]:\n    for seed in [0, 1, 2]:\n"
    "        launcher(lr=lr, seed=seed, epochs=3)",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_grid_project(tmp_path_factory.mktemp("export") / "proj", GRIDS)


def loss(lr: float, seed: int, epoch: int) -> float:
    """What GRID_TRAIN_SOURCE pushes as train.loss at (0-based) ``epoch``."""
    return 1.0 / (1.0 + epoch + lr + seed)


def test_export_every_format(trained: Path) -> None:
    result = run_cli(["export", "main"], trained)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6 and rows[0]["name"] == "lr=0.2 seed=0"
    assert float(rows[0]["train.loss"]) == loss(0.2, 0, 2) and rows[0]["epoch"] == "3"
    data = json.loads(run_cli(["export", "main", "-F", "json"], trained).stdout)
    assert data[5]["lr"] == 0.3 and data[5]["seed"] == 2 and data[5]["state"] == "COMPLETED"
    header, md_rows = parse_markdown(run_cli(["export", "main", "-F", "markdown"], trained).stdout)
    assert header[:7] == ["sig", "name", "state", "epoch", "lr", "epochs", "seed"]  # parser order
    assert [r[1] for r in md_rows] == [r["name"] for r in rows]
    header, tex_rows = parse_latex(run_cli(["export", "main", "-F", "latex"], trained).stdout)
    assert "train.loss" in header and len(tex_rows) == 6


def test_export_best_and_epoch(trained: Path) -> None:
    best = json.loads(run_cli(["export", "main", "--best", "train.loss:max", "-F", "json"],
                              trained).stdout)  # fmt: skip
    assert all(r["epoch"] == 1 for r in best)  # the loss only decreases: its max is epoch 1
    assert best[0]["train.loss"] == loss(0.2, 0, 0)
    at = json.loads(run_cli(["export", "main", "--epoch", "2", "-F", "json", "seed=1"],
                            trained).stdout)  # fmt: skip
    assert [r["name"] for r in at] == ["lr=0.2 seed=1", "lr=0.3 seed=1"]
    assert at[1]["train.loss"] == loss(0.3, 1, 1) and at[1]["epoch"] == 2
    late = json.loads(run_cli(["export", "main", "--epoch", "9", "-F", "json"], trained).stdout)
    assert all(r["epoch"] is None and r.get("train.loss") is None for r in late)
    for bad in (["--best", "x:sideways"], ["--epoch", "0"], ["--best", "a", "--epoch", "1"]):
        result = run_cli(["export", "main", *bad], trained)
        assert result.exit_code == 2, (bad, result.output)


def test_export_aggregated_to_a_file(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "agg.csv"
    result = run_cli(["export", "main", "--aggregate", "seed", "-o", str(out)], trained)
    assert result.exit_code == 0, result.output
    assert "wrote 2 groups" in result.stderr and result.stdout == ""
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["lr"] for r in rows] == ["0.2", "0.3"] and rows[0]["n"] == "3"
    values = [loss(0.3, s, 2) for s in range(3)]
    mean = sum(values) / 3
    std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    assert float(rows[1]["train.loss:mean"]) == pytest.approx(mean, rel=1e-12)
    assert float(rows[1]["train.loss:std"]) == pytest.approx(std, rel=1e-12)
    assert rows[1]["train.loss:count"] == "3"
    md = tmp_path / "agg.md"
    run_cli(["export", "main", "--aggregate", "seed", "-o", str(md)], trained)
    header, md_rows = parse_markdown(md.read_text())
    assert header[:3] == ["lr", "epochs", "n"]
    assert " ± " in md_rows[0][header.index("train.loss")]
    bad = run_cli(["export", "main", "--aggregate", "depth"], trained)
    assert bad.exit_code == 2 and "parameters that vary: lr, epochs, seed" in bad.output


def test_export_usage_errors(trained: Path) -> None:
    for args, needle in (
        (["export"], "name a grid"),
        (["export", "nope"], "no grid named 'nope'"),
        (["export", "main", "--sig", "aaaa0001"], "not both"),
        (["export", "main", "lr=0.9"], "pattern 'lr=0.9' matches no XP"),
        (["export", "main", "-F", "xlsx"], "unknown format"),
    ):
        result = run_cli(args, trained)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)


def test_sig_prefixes_name_xps_as_info_takes_them(trained: Path) -> None:
    data = json.loads(run_cli(["export", "main", "-F", "json"], trained).stdout)
    sigs = [row["sig"] for row in data]
    full = run_cli(["export", "--sig", sigs[0], "--sig", sigs[1], "-F", "json"], trained)
    # the shortest prefix of each that no other XP shares, then the same XP twice
    short = [next(s[:n] for n in range(1, 9) if sum(o.startswith(s[:n]) for o in sigs) == 1)
             for s in sigs[:2]]  # fmt: skip
    by_prefix = run_cli(["export", "--sig", short[0], "--sig", short[1], "--sig", sigs[1],
                         "-F", "json"], trained)  # fmt: skip
    assert by_prefix.exit_code == 0, by_prefix.output
    assert json.loads(by_prefix.stdout) == json.loads(full.stdout)
    assert [r["sig"] for r in json.loads(by_prefix.stdout)] == sigs[:2]
    diff = run_cli(["info", "--sig", short[0], "--diff", short[1]], trained)
    assert diff.exit_code == 0 and f"B  {sigs[1]}" in diff.stdout, diff.output
    bad = run_cli(["export", "--sig", "../x"], trained)
    assert bad.exit_code == 2 and "is not a signature" in bad.output


# -- info --diff -----------------------------------------------------------------------------
def test_info_diff(trained: Path) -> None:
    data = json.loads(run_cli(["export", "main", "-F", "json"], trained).stdout)
    a, b = data[0]["sig"], data[4]["sig"]  # lr=0.2 seed=0 vs lr=0.3 seed=1
    result = run_cli(["info", "--sig", a, "--diff", b], trained)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert f"A  {a}  COMPLETED" in text and f"B  {b}  COMPLETED" in text
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert lines["lr"] == ["0.2", "0.3", "+0.1"]
    assert lines["seed"] == ["(default)", "1", "+1"] or lines["seed"][:2] == ["(default)", "1"]
    assert "train.loss" in lines and "epochs" not in lines  # same epochs: not shown
    found = json.loads(run_cli(["info", "--sig", a, "--diff", b, "--json"], trained).stdout)
    keys = [c["key"] for c in found["params"]]
    assert keys == ["lr", "seed"]
    seed = found["params"][1]
    assert seed == {"key": "seed", "a": None, "b": 1, "in_a": False, "in_b": True}
    metric = next(c for c in found["metrics"] if c["key"] == "train.loss")
    assert metric["a"] == loss(0.2, 0, 2) and metric["b"] == loss(0.3, 1, 2)
    same = run_cli(["info", "--sig", a, "--diff", a], trained)
    assert "parameters: the same" in same.stdout and "final metrics: the same" in same.stdout
    missing = run_cli(["info", "--sig", a, "--diff", "0000beef"], trained)
    assert missing.exit_code == 2 and "no XP with signature 0000beef" in missing.output
    noxp = run_cli(["info", "--diff", a], trained)
    assert noxp.exit_code == 2 and "--diff compares two XPs" in noxp.output
