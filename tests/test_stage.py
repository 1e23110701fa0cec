"""Test passes: ``gridman grid NAME --stage test -- COMMAND`` (stages.py, stagerun.py)."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gridman.core.jobs import State
from gridman.core.stages import StageStep, decide, expand, parse_template, stage_metrics
from gridman.errors import UsageError
from gridman.testing import run_cli, xps_dir
from gridman.testing.grids import (
    attempts_of,
    fake_sheep,
    job_record,
    make_grid_project,
    parse_json_rows,
    stop_pool,
    wait_states,
    write_eval_script,
)

GRIDS = {"main": "launcher(lr=0.2)\nlauncher(lr=0.3)\nlauncher(lr=0.4, fail=True)"}
INLINE = ("--backend", "inline")
EVAL = ("--", "{python}", "evaluate.py", "{folder}", "{sig}")


def test_template_is_an_argv_never_a_shell_line(tmp_path: Path) -> None:
    assert parse_template("python eval.py --ckpt '{folder}/a b.pt'") == (
        "python", "eval.py", "--ckpt", "{folder}/a b.pt")  # fmt: skip
    assert parse_template(["python", "x; rm -rf /"]) == ("python", "x; rm -rf /")
    folder = tmp_path / "outputs" / "xps" / "0123abcd"
    command = expand(("{python}", "ev.py", "--in={folder}/ckpt", "{argv}", "$(id)", "{sig}{sig}",
                      "{dir}"), "0123abcd", folder, ["--lr=0.1", "--seed", "2"])  # fmt: skip
    assert command == [sys.executable, "ev.py", f"--in={folder}/ckpt", "--lr=0.1", "--seed", "2",
                       "$(id)", "0123abcd0123abcd", str(tmp_path / "outputs")]  # fmt: skip
    for bad in ([], [""], ["x", "--argv={argv}"], "a 'b"):
        with pytest.raises(UsageError):
            parse_template(bad)


def test_decide(tmp_path: Path) -> None:
    done = fake_sheep(tmp_path, "aaaaaaaa", state="COMPLETED")
    running = fake_sheep(tmp_path, "bbbbbbbb", state="RUNNING")
    never = fake_sheep(tmp_path, "cccccccc")

    def step(sheep: Any, record: Any = None, result: Any = None, force: bool = False) -> str:
        found: StageStep = decide(sheep, record, result, force)
        return f"{found.action}: {found.reason}"

    assert step(running) == "skip: not completed (RUNNING)"
    assert step(never) == "skip: not completed (NEW)"
    assert step(done) == "submit: no results yet"
    assert step(done, job_record("FAILED")) == "submit: no results (last attempt FAILED)"
    assert step(done, job_record("PENDING")) == "keep: pending already"
    assert step(done, job_record("RUNNING"), force=True) == "keep: running already"
    ok = job_record("COMPLETED")
    assert step(done, ok, {"metrics": {}, "trained_attempt": 1}) == "keep: has results"
    assert step(done, ok, {"metrics": {}}, force=True) == "submit: --stage-force"
    done.job = done.job.with_new_attempt("local", State.COMPLETED)  # type: ignore[union-attr]
    assert step(done, ok, {"metrics": {}, "trained_attempt": 1}) == (
        "submit: trained again since its last results")  # fmt: skip


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = make_grid_project(tmp_path / "proj", GRIDS)
    write_eval_script(root)
    result = run_cli(["grid", "main", *INLINE], root)
    assert result.exit_code == 1, result.output  # lr=0.4 fails
    return root


def by_lr(root: Path) -> dict[float, dict[str, Any]]:
    rows = parse_json_rows(run_cli(["grid", "main", *INLINE, "--json"], root).stdout)
    return {float(r["name"].split("=")[1].split()[0]): r for r in rows}


def test_inline_stage_on_completed_xps(root: Path) -> None:
    result = run_cli(["grid", "main", *INLINE, "--stage", "test", *EVAL, "{argv}"], root)
    assert result.exit_code == 1, result.output  # the table still holds the failed XP
    assert "stage test for grid main: 2 submit, 1 skip" in result.stdout
    assert "stage test: 2/2 done, 0 running, 0 pending, 0 failed" in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.startswith("index"))
    assert "acc" in header and "epochs" in header
    rows = by_lr(root)
    for lr in (0.2, 0.3):
        folder = Path(rows[lr]["folder"])
        metrics = rows[lr]["metrics"]
        assert metrics["test.acc"] == pytest.approx(1 - 1 / (1 + 1 + lr))  # last epoch: 1
        assert metrics["test.epochs"] == 2 and metrics["test.env"] == folder.name
        assert metrics["test.argv"] == [f"--lr={lr}"]  # {argv}: the XP's own arguments
        stage = folder / "stages" / "test"
        assert [a["state"] for a in attempts_of(stage)] == ["COMPLETED"]
        assert stage_metrics(folder)["test"]["acc"] == metrics["test.acc"]
        log = (stage / "log" / "1.log").read_text()
        assert f"evaluating {folder.name}" in log and "a warning on stderr" in log
        assert len(attempts_of(folder)) == 1  # training untouched
    assert not (Path(rows[0.4]["folder"]) / "stages").exists()
    exported = run_cli(["export", "main"], root).stdout
    table = list(csv.DictReader(io.StringIO(exported)))
    assert [r["test.acc"] != "" for r in table] == [True, True, False]


def test_rerun_skips_existing_results_unless_forced(root: Path) -> None:
    first = run_cli(["grid", "main", *INLINE, "--stage", "test", "lr=0.2", *EVAL], root)
    assert first.exit_code == 0, first.output
    again = run_cli(["grid", "main", *INLINE, "--stage", "test", *EVAL], root)
    assert "1 submit, 1 keep, 1 skip" in again.stdout
    stage = Path(by_lr(root)[0.2]["folder"]) / "stages" / "test"
    assert len(attempts_of(stage)) == 1
    dry = run_cli(["grid", "main", *INLINE, "--stage", "test", "--dry-run", *EVAL], root)
    assert "keep     " in dry.stdout and "has results" in dry.stdout
    forced = run_cli(["grid", "main", *INLINE, "--stage", "test", "--stage-force", "lr=0.2",
                      *EVAL, "--file"], root)  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert "1 submit" in forced.stdout and "--stage-force" in forced.stdout
    assert len(attempts_of(stage)) == 2
    metrics = by_lr(root)[0.2]["metrics"]
    assert metrics["test.argv"] == ["--file"]  # written to $GRIDMAN_STAGE_OUT this time
    # training again makes the results stale: the next pass tests the XP again
    run_cli(["grid", "main", *INLINE, "-D", "lr=0.2"], root)
    stale = run_cli(["grid", "main", *INLINE, "--stage", "test", "lr=0.2", *EVAL], root)
    assert "trained again since its last results" in stale.stdout
    assert len(attempts_of(stage)) == 3


def test_failing_or_silent_commands(root: Path) -> None:
    failed = run_cli(["grid", "main", *INLINE, "--stage", "test", "lr=0.2", *EVAL, "--fail"],
                     root)  # fmt: skip
    assert failed.exit_code == 1
    assert "1 failed" in failed.stdout and "stages/test/log/" in failed.stdout
    folder = Path(by_lr(root)[0.2]["folder"])
    stage = folder / "stages" / "test"
    assert attempts_of(stage)[-1]["state"] == "FAILED" and attempts_of(stage)[-1]["exit_code"] == 3
    assert "exited with 3" in (stage / "log" / "1.log").read_text()
    mute = run_cli(["grid", "main", *INLINE, "--stage", "test", "lr=0.2", *EVAL, "--mute"], root)
    assert mute.exit_code == 1
    assert "reported no metrics" in (stage / "log" / "2.log").read_text()
    assert stage_metrics(folder) == {}
    assert "test.acc" not in by_lr(root)[0.2]["metrics"]


def test_stage_usage_errors(root: Path) -> None:
    cases = [
        (["--stage", "test"], "the stage needs a command"),
        (["--stage", "te st", *EVAL], "bad stage name"),
        (["--stage-force"], "--stage-force goes with --stage"),
        (["--stage", "test", "--retry", *EVAL], "does not schedule training"),
    ]
    for args, needle in cases:
        result = run_cli(["grid", "main", *INLINE, *args], root)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)
    # without --stage, what follows -- are more patterns
    result = run_cli(["grid", "main", *INLINE, "--dry-run", "--", "lr=0.2"], root)
    assert result.exit_code == 0 and "plan for grid main: 1 keep" in result.stdout


def test_stage_on_the_local_pool(root: Path) -> None:
    """Real processes: the stage jobs go through the pool daemon like training attempts."""
    try:
        result = run_cli(["grid", "main", "--stage", "test", "--interval", "0.1", *EVAL], root)
        assert result.exit_code == 1, result.output
        assert "stage test: 2/2 done" in result.stdout
        for lr in (0.2, 0.3):
            folder = Path(by_lr(root)[lr]["folder"])
            attempts = attempts_of(folder / "stages" / "test")
            assert [(a["backend"], a["state"]) for a in attempts] == [("local", "COMPLETED")]
            assert attempts[0]["pid"] and attempts[0]["job_id"].endswith(f"-{folder.name}.json")
            assert stage_metrics(folder)["test"]["epochs"] == 2
        cancel = run_cli(["grid", "main", "--stage", "test", "-C", *EVAL], root)
        assert "cancelled 0 test job(s)" in cancel.stdout
        # a long stage job: not submitted twice while it runs, and -C cancels it
        slow = ("--", "{python}", "-c", "import time; time.sleep(30)")
        result = run_cli(["grid", "main", "lr=0.2", "--stage", "slow", "--no-monitor", *slow],
                         root)  # fmt: skip
        assert "1 submit" in result.stdout
        stage = Path(by_lr(root)[0.2]["folder"]) / "stages" / "slow"
        wait_states([stage], {"RUNNING"})
        again = run_cli(["grid", "main", "lr=0.2", "--stage", "slow", "--dry-run", *slow], root)
        assert "keep     " in again.stdout and "running already" in again.stdout
        cancel = run_cli(["grid", "main", "--stage", "slow", "-C"], root)
        assert "cancelled 1 slow job(s)" in cancel.stdout
        assert attempts_of(stage)[-1]["state"] == "CANCELLED"
    finally:
        stop_pool(xps_dir(root).parent)


def test_stage_metrics_in_python_results(root: Path) -> None:
    run_cli(["grid", "main", *INLINE, "--stage", "test", *EVAL], root)
    from gridman.api.load import load

    results = load("main", root=root, best="train.loss:min")
    assert [r.metrics.get("test.epochs") for r in results] == [2, 2, None]
    data = json.loads(run_cli(["export", "main", "-F", "json", "--aggregate", "lr"], root).stdout)
    assert [(g["fail"], g["n"], g["test.acc:count"]) for g in data] == [(False, 2, 2), (True, 1, 0)]
    accs = [1 - 1 / (2 + lr) for lr in (0.2, 0.3)]
    assert data[0]["test.acc:mean"] == pytest.approx(sum(accs) / 2)
