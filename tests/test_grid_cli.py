"""``gridman grid`` in-process (typer's CliRunner), mostly with the inline backend for speed."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from gridman.cli import grid as cli_grid
from gridman.core.link import load_history
from gridman.testing import run_cli, xp_folders, xps_dir
from gridman.testing.grids import attempts_of, job_state, make_grid_project, parse_json_rows

GRIDS = {
    "main": "for lr in [0.2, 0.3]:\n    for seed in [0, 1]:\n        launcher(lr=lr, seed=seed)",
    "mixed": "launcher(lr=0.2)\nlauncher(lr=0.3, fail=True)\nlauncher(lr=0.4)",
    "lengths": "launcher(lr=0.2)\nlauncher(lr=0.3, epochs=4)",
    "defaults": "for lr in [0.01, 0.1, 1.0]:\n    launcher(lr=lr)",
}
INLINE = ("--backend", "inline")
KEYS = {"index", "name", "sig", "state", "argv", "folder", "metrics"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_grid_project(tmp_path / "proj", GRIDS)


def grid(root: Path, *args: str, **kwargs: Any) -> Result:
    return run_cli(["grid", *args], root, **kwargs)


def grid_ok(root: Path, *args: str) -> Result:
    result = grid(root, *args)
    assert result.exit_code == 0, result.output
    return result


def rows(root: Path, *args: str, code: int = 0) -> list[dict[str, Any]]:
    result = grid(root, *args, "--json")
    assert result.exit_code == code, result.output
    return parse_json_rows(result.stdout)


def plan_lines(result: Result) -> list[list[str]]:
    """The plan's step lines: [action, sig, ...]."""
    return [
        line.split()
        for line in result.stdout.splitlines()
        if line.startswith("  ")
        and line.split()[0] in ("submit", "keep", "cancel", "resubmit")
        and re.fullmatch(r"[0-9a-f]{8}", line.split()[1])
    ]


# -- dry run and init ---------------------------------------------------------------------
def test_dry_run_prints_the_plan_and_touches_nothing(root: Path) -> None:
    result = grid_ok(root, "main", "--dry-run", *INLINE)
    assert "plan for grid main: 4 submit" in result.stdout
    steps = plan_lines(result)
    assert [s[0] for s in steps] == ["submit"] * 4
    assert all(s[-2:] == ["new", "XP"] for s in steps)
    assert not xps_dir(root).exists()
    assert not (root / "outputs" / "grids").exists()  # not even the grid's memory
    # with the local backend too: no pool is started
    grid_ok(root, "main", "--dry-run")
    assert not xps_dir(root).exists()
    assert not (root / "outputs" / ".pool").exists()


def test_dry_run_init_creates_the_folders(root: Path) -> None:
    result = grid_ok(root, "main", "--dry-run", "--init")
    assert "initialised 4 XP folders" in result.stdout
    folders = xp_folders(root)
    assert len(folders) == 4
    assert all((f / "argv.json").is_file() and not (f / "job.json").exists() for f in folders)
    info = run_cli(["info", "--sig", folders[0].name], root)
    assert info.exit_code == 0, info.output
    assert "never run" in info.stdout
    data = json.loads(run_cli(["info", "--sig", folders[0].name, "--json"], root).stdout)
    assert data["state"] is None and data["argv"]


# -- running, keeping, resubmitting ---------------------------------------------------------
def test_second_run_keeps_completed(root: Path) -> None:
    first = grid_ok(root, "main", *INLINE)
    assert "4/4 done" in first.stdout
    second = grid_ok(root, "main", *INLINE)
    assert "plan for grid main: 4 keep" in second.stdout
    assert plan_lines(second) == []  # keeps are not listed outside --dry-run
    for folder in xp_folders(root):
        assert len(attempts_of(folder)) == 1
    dry = grid_ok(root, "main", "--dry-run", *INLINE)
    assert [s[0] for s in plan_lines(dry)] == ["keep"] * 4
    assert all(s[-1] == "completed" for s in plan_lines(dry))


def test_exit_code_is_1_when_an_xp_failed(root: Path) -> None:
    result = grid(root, "mixed", *INLINE)
    assert result.exit_code == 1
    assert "2/3 done" in result.stdout and "1 failed" in result.stdout
    ok = grid(root, "mixed", "lr=0.2", *INLINE)  # only shows a completed one
    assert ok.exit_code == 0, ok.output


def test_retry_resubmits_only_the_failed(root: Path) -> None:
    first = rows(root, "mixed", *INLINE, code=1)
    failed = [r for r in first if r["state"] == "FAILED"]
    assert len(failed) == 1 and "--fail" in failed[0]["argv"]
    result = grid(root, "mixed", "--retry", *INLINE)
    assert result.exit_code == 1  # it fails again
    steps = plan_lines(result)
    assert [(s[0], s[1]) for s in steps] == [("submit", failed[0]["sig"])]
    assert "--retry" in " ".join(steps[0])
    for row in first:
        expected = 2 if row["state"] == "FAILED" else 1
        assert len(attempts_of(Path(row["folder"]))) == expected
    assert attempts_of(Path(failed[0]["folder"]))[-1]["exit_code"] == 1


def test_replace_done_resubmits_completed(root: Path) -> None:
    grid_ok(root, "main", *INLINE)
    result = grid_ok(root, "main", "-D", *INLINE)
    assert "plan for grid main: 4 resubmit" in result.stdout
    for folder in xp_folders(root):
        attempts = attempts_of(folder)
        assert [a["state"] for a in attempts] == ["COMPLETED", "COMPLETED"]
        assert len(load_history(folder)) == 2  # resumed, no epoch twice


def test_patterns_restrict_scheduling(root: Path) -> None:
    result = grid_ok(root, "main", "lr=0.3", *INLINE)
    assert "plan for grid main: 2 submit" in result.stdout
    assert len(xp_folders(root)) == 2
    shown = rows(root, "main", "lr=0.3", *INLINE)
    assert [r["name"] for r in shown] == ["lr=0.3 seed=0", "lr=0.3 seed=1"]
    assert [r["index"] for r in shown] == [2, 3]  # indices of the whole grid
    everything = rows(root, "main", "--dry-run", *INLINE)
    assert [r["state"] for r in everything] == ["NEW", "NEW", "COMPLETED", "COMPLETED"]
    negated = grid_ok(root, "main", "!lr=0.3", "!seed=1", *INLINE)
    assert "1 submit" in negated.stdout
    assert len(xp_folders(root)) == 3


@pytest.mark.parametrize(
    "args",
    [
        ["main", "lr=0.3", "seed=1", "--dry-run", "--backend", "inline"],
        ["main", "--dry-run", "--backend", "inline", "lr=0.3", "seed=1"],
        ["--dry-run", "main", "lr=0.3", "--backend", "inline", "seed=1"],
    ],
)
def test_flags_and_patterns_in_any_order(root: Path, args: list[str]) -> None:
    result = grid(root, *args)
    assert result.exit_code == 0, result.output
    assert "plan for grid main: 1 submit" in result.stdout
    assert "lr=0.3 seed=1: new XP" in result.stdout
    assert not xps_dir(root).exists()


def test_pattern_selects_an_xp_at_its_default_value(root: Path) -> None:
    shown = rows(root, "defaults", "--dry-run", *INLINE)
    assert [r["name"] for r in shown] == ["lr=0.01", "lr=0.1", "lr=1.0"]
    picked = rows(root, "defaults", "lr=0.1", "--dry-run", *INLINE)
    assert [r["name"] for r in picked] == ["lr=0.1"]


# -- --json ---------------------------------------------------------------------------------
def test_json_contract(root: Path) -> None:
    result = grid(root, "mixed", *INLINE, "--json")
    assert result.exit_code == 1
    data = parse_json_rows(result.stdout)  # stdout holds nothing but the JSON
    assert "plan for grid mixed" in result.stderr
    assert len(data) == 3
    for index, row in enumerate(data):
        assert KEYS <= set(row), row
        assert row["index"] == index
        assert isinstance(row["name"], str) and row["name"]
        assert isinstance(row["sig"], str) and len(row["sig"]) == 8
        assert isinstance(row["argv"], list) and all(isinstance(a, str) for a in row["argv"])
        assert row["folder"] == str(xps_dir(root) / row["sig"])
        metrics = row["metrics"]
        assert isinstance(metrics, dict)
        assert all(not isinstance(v, dict) for v in metrics.values())  # flattened
        history = load_history(Path(row["folder"]))
        assert metrics["train.loss"] == history[-1]["train"]["loss"]
        assert metrics["epoch"] == 1
    assert [r["state"] for r in data] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert data[1]["argv"] == ["--lr=0.3", "--fail"]
    assert data[0]["plan"] == {"action": "submit", "reason": "new XP"}


def test_json_of_a_grid_never_run(root: Path) -> None:
    data = rows(root, "main", "--dry-run", *INLINE)
    assert [r["state"] for r in data] == ["NEW"] * 4
    assert all(KEYS <= set(r) for r in data)


# -- broken files ---------------------------------------------------------------------------
def test_corrupt_history_marks_only_its_row(root: Path) -> None:
    grid_ok(root, "main", *INLINE)
    bad = xp_folders(root)[0]
    (bad / "history.json").write_text("{not json", encoding="utf8")
    result = grid(root, "main", *INLINE)
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if bad.name in line)
    assert "! HistoryError" in line
    others = [line for line in result.stdout.splitlines() if "COMPLETED" in line]
    assert len(others) == 4 and sum("!" in line for line in others) == 1
    data = {r["sig"]: r for r in rows(root, "main", *INLINE)}
    assert "HistoryError" in data[bad.name]["error"] and data[bad.name]["metrics"] == {}
    assert all(r["error"] is None and r["metrics"] for s, r in data.items() if s != bad.name)


@pytest.mark.parametrize("flag", ["-C", "-R"])
def test_corrupt_job_file_does_not_break_cancel(root: Path, flag: str) -> None:
    grid_ok(root, "main", *INLINE)
    bad = xp_folders(root)[0]
    (bad / "job.json").write_text("{not json", encoding="utf8")
    result = grid(root, "main", flag, *INLINE)
    assert "unknown backend" not in result.stderr
    assert result.exit_code in (0, 1), result.output


def test_corrupt_job_file_does_not_hang_the_monitor(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid_ok(root, "main", *INLINE)
    (xp_folders(root)[0] / "job.json").write_text("{not json", encoding="utf8")
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) > 20:  # a healthy monitor would have returned long ago
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_grid, "time", types.SimpleNamespace(sleep=sleep))
    result = grid(root, "main", "-i", "0.01", *INLINE)
    assert "stopped monitoring" not in result.stderr
    assert len(calls) <= 20


# -- clear ----------------------------------------------------------------------------------
def test_clear_needs_yes_then_starts_over(root: Path) -> None:
    grid_ok(root, "main", *INLINE)
    folders = xp_folders(root)
    for folder in folders:
        (folder / "marker").write_text("old", encoding="utf8")
    refused = grid(root, "main", "--clear", *INLINE)
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert all((f / "marker").exists() for f in folders)
    result = grid_ok(root, "main", "--clear", "--yes", *INLINE)
    assert "4 resubmit" in result.stdout
    assert xp_folders(root) == folders
    for folder in folders:
        assert not (folder / "marker").exists()  # the folder was deleted
        assert [a["n"] for a in attempts_of(folder)] == [1]
        assert job_state(folder) == "COMPLETED"


def test_clear_only_the_selection(root: Path) -> None:
    grid_ok(root, "main", *INLINE)
    for folder in xp_folders(root):
        (folder / "marker").write_text("old", encoding="utf8")
    grid_ok(root, "main", "seed=1", "--clear", "-y", *INLINE)
    kept = [f for f in xp_folders(root) if (f / "marker").exists()]
    assert len(kept) == 2


# -- usage errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--interval", "0"], "--interval must be > 0"),
        (["-i", "-1"], "--interval must be > 0"),
        (["-l", "99"], "out of range"),
        (["-f", "4"], "out of range"),
        (["-t", "99"], "out of range"),
        (["-f", "-1"], "must be >= 0"),
        (["--trim", "-1"], "--trim must be"),
        (["-l", "0", "-f", "0"], "exclusive"),
        (["--gpus", "-1"], "--gpus must be >= 0"),
        (["99"], "out of range"),
        (["--backend", "nope"], "unknown backend 'nope'"),
    ],
)
def test_out_of_range_values_are_usage_errors(root: Path, args: list[str], message: str) -> None:
    result = grid(root, "main", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not xps_dir(root).exists()  # nothing scheduled


def test_out_of_range_trim_schedules_nothing(root: Path) -> None:
    result = grid(root, "main", "--trim", "99", *INLINE)
    assert result.exit_code == 2, result.output
    assert "XP index 99 is out of range" in result.stderr
    assert not xps_dir(root).exists()


# -- one XP: folder, log, trim ----------------------------------------------------------------
def test_folder_of_an_xp(root: Path) -> None:
    data = rows(root, "main", "--dry-run", *INLINE)
    result = grid_ok(root, "main", "-f", "2")
    assert result.stdout.strip() == data[2]["folder"]
    # an index is the grid's, the one the table shows, whatever the selection
    selected = grid_ok(root, "main", "seed=1", "-f", "3")
    assert selected.stdout.strip() == data[3]["folder"]
    outside = grid(root, "main", "seed=1", "-f", "0")
    assert outside.exit_code == 2, outside.output
    assert not xps_dir(root).exists()  # printing a folder schedules nothing


def test_log_of_an_xp(root: Path) -> None:
    not_yet = grid(root, "main", "-l", "0")
    assert not_yet.exit_code == 2 and "has no log" in not_yet.stderr
    data = rows(root, "main", *INLINE)
    result = grid_ok(root, "main", "-l", "1")
    assert f"xp {data[1]['sig']} starts" in result.stdout
    assert "done" in result.stdout


def test_trim_cuts_histories_to_one_xps_length(root: Path) -> None:
    full = rows(root, "lengths", *INLINE)
    assert [r["metrics"]["epoch"] for r in full] == [1, 3]
    for args in (["--trim", "0"], ["-T", "0"], ["--trim-last"], ["-L"]):
        cut = rows(root, "lengths", *INLINE, *args)
        assert [r["metrics"]["epoch"] for r in cut] == [1, 1], args
        history = load_history(Path(cut[1]["folder"]))
        assert cut[1]["metrics"]["train.loss"] == history[1]["train"]["loss"]
    longest = rows(root, "lengths", *INLINE, "--trim", "1")
    assert [r["metrics"]["epoch"] for r in longest] == [1, 3]
    text = grid_ok(root, "lengths", *INLINE, "--trim", "0")
    assert "2/2 done" in text.stdout


def test_folder_with_json_prints_json_or_refuses(root: Path) -> None:
    result = grid(root, "main", "-f", "0", "--json")
    if result.exit_code != 2:
        assert result.exit_code == 0
        json.loads(result.stdout)


def test_long_plans_are_grouped(root: Path) -> None:
    (root / "grids" / "big.py").write_text(
        "import gridman\n\n@gridman.Explorer\ndef explorer(launcher):\n"
        "    for seed in range(250):\n        launcher(seed=seed)\n",
        encoding="utf8",
    )
    result = grid_ok(root, "big", "--dry-run", *INLINE)
    assert "plan for grid big: 250 submit" in result.stdout
    assert len(plan_lines(result)) == 200
    assert "... and 50 more:" in result.stdout
    assert "submit   x50: new XP" in result.stdout


def test_grids_dir_option_and_setting(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "far.py").write_text((root / "grids" / "mixed.py").read_text(), encoding="utf8")
    result = grid_ok(root, "far", "--grids-dir", str(other), "--dry-run", *INLINE)
    assert "plan for grid far: 3 submit" in result.stdout
    assert grid(root, "far", "--dry-run").exit_code == 2  # not in grids/
    settings = (root / "gridman.yaml").read_text() + f"grids_dir: {other}\n"
    (root / "gridman.yaml").write_text(settings, encoding="utf8")
    assert "3 submit" in grid_ok(root, "far", "--dry-run", *INLINE).stdout
