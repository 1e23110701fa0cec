"""The Slurm backend against a real single-node Slurm cluster (scripts/local-slurm.sh).

CI starts the cluster and sets GRIDMAN_REQUIRE_SLURM=1: these tests never skip there. On a
machine without Slurm they skip with one line saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from gridman.core.link import load_history
from gridman.testing import run_cli
from gridman.testing.grids import (
    PROBE_VAR,
    attempts_of,
    job_state,
    make_grid_project,
    parse_json_rows,
    read_job_json,
    wait_states,
    write_grid,
)
from gridman.testing.slurm import (
    cancel_all,
    needs_slurm,
    queue_states,
    release,
    script_cluster,
    submission_scripts,
    wait_until,
)

pytestmark = needs_slurm()

GRIDMAN = Path(sys.executable).parent / "gridman"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "VANISHED"}


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = make_grid_project(tmp_path / "proj", settings={"backend": "slurm"})
    yield path
    cancel_all(path / "outputs")  # never leave jobs behind


def grid(root: Path, *args: str, code: Optional[int] = 0) -> list[dict[str, Any]]:
    result = run_cli(["grid", *args, "--no-monitor", "--json"], root)
    assert code is None or result.exit_code == code, result.output
    return parse_json_rows(result.stdout)


def folders(rows: list[dict[str, Any]]) -> list[Path]:
    return [Path(r["folder"]) for r in rows]


def job_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [str(read_job_json(Path(r["folder"]))["job_id"]) for r in rows]


def run_gridman(root: Path, *args: str, env: Optional[dict[str, str]] = None) -> Any:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    full.update(env or {})
    return subprocess.run([str(GRIDMAN), *args], cwd=root, env=full, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


# -- submission -----------------------------------------------------------------------------
def test_array_and_single_xps_complete_with_one_sbatch_per_array(root: Path) -> None:
    write_grid(root, "g", """
        launcher.slurm_(time=5)
        with launcher.job_array():
            for lr in [0.1, 0.2, 0.3]:
                launcher(lr=lr)
        launcher.slurm(time=6)(lr=0.5)
    """)  # fmt: skip
    rows = grid(root, "g")
    ids = job_ids(rows)
    array = {i.split("_")[0] for i in ids[:3]}
    assert len(array) == 1 and [i.split("_")[1] for i in ids[:3]] == ["0", "1", "2"], ids
    assert "_" not in ids[3] and ids[3] not in array  # its own sbatch: other resources
    assert len(submission_scripts(root / "outputs")) == 2
    wait_states(folders(rows), {"COMPLETED"}, timeout=90)
    rows = grid(root, "g")
    assert [r["state"] for r in rows] == ["COMPLETED"] * 4
    assert all(r["metrics"]["train.loss"] > 0 for r in rows)
    attempt = attempts_of(Path(rows[1]["folder"]))[-1]
    assert attempt["backend"] == "slurm" and attempt["array_index"] == 1 and attempt["host"]


def test_same_resources_share_one_array_split_at_max_array_size(root: Path) -> None:
    make_grid_project(root, settings={"backend": "slurm",
                                      "slurm": {"max_array_size": 2, "time": 5}})  # fmt: skip
    write_grid(root, "g", "launcher.slurm_(array_parallelism=1)\n"
                          "for s in range(5):\n    launcher(seed=s)")  # fmt: skip
    rows = grid(root, "g")
    arrays = [i.split("_")[0] for i in job_ids(rows)]
    assert arrays[0] == arrays[1] != arrays[2] == arrays[3] != arrays[4], arrays
    scripts = submission_scripts(root / "outputs")
    assert sum("--array=0-1%1" in s for s in scripts) == 2, scripts
    assert all("--time=5" in s for s in scripts)
    wait_states(folders(rows), {"COMPLETED"}, timeout=120)


def test_max_array_size_is_read_from_the_cluster() -> None:
    from gridman.backends.slurm_query import max_array_size

    size = max_array_size()
    assert size >= 1
    if script_cluster():
        assert size == int(os.environ.get("LOCAL_SLURM_MAX_ARRAY_SIZE", 500))


def test_resources_precedence_grid_file_then_cli_then_yaml(root: Path) -> None:
    make_grid_project(root, settings={"backend": "slurm",
                                      "slurm": {"time": 9, "comment": "yaml"}})  # fmt: skip
    write_grid(root, "g", "launcher.slurm(time=3)(seed=1)\nlauncher(seed=2)")
    rows = grid(root, "g", "--time", "7", "-p", "debug", "--sbatch", "hold",
                "--sbatch", "open-mode=append")  # fmt: skip
    scripts = submission_scripts(root / "outputs")
    assert sorted(s.count("--time=3") + 10 * s.count("--time=7") for s in scripts) == [1, 10]
    assert all("--partition=debug" in s and "--comment=yaml" in s for s in scripts)
    assert all("#SBATCH --hold\n" in s for s in scripts)
    assert {queue_states().get(i) for i in job_ids(rows)} == {"PENDING"}  # held
    for job in job_ids(rows):
        release(job)
    wait_states(folders(rows), {"COMPLETED"}, timeout=90)


def test_setup_lines_run_before_the_xp_in_the_scheduling_environment(root: Path) -> None:
    write_grid(root, "g", f"""
        launcher.slurm(setup=["export {PROBE_VAR}=from-setup"])(seed=8, probe=True)
        launcher(seed=9, probe=True)
    """)  # fmt: skip
    result = run_cli(["grid", "g", "--no-monitor", "--json"], root,
                     env={PROBE_VAR: "from-the-scheduler"})  # fmt: skip
    setup, plain = folders(parse_json_rows(result.stdout))
    wait_states([setup, plain], {"COMPLETED"}, timeout=60)
    assert load_history(setup)[-1]["probe"]["env"] == "from-setup"
    probe = load_history(plain)[-1]["probe"]  # sbatch exports the scheduling environment
    assert probe["env"] == "from-the-scheduler" and probe["cwd"] == str(root)
    assert "starts" in (plain / "log" / "1.log").read_text()


def test_sbatch_refusing_the_resources_is_a_clear_error(root: Path) -> None:
    write_grid(root, "g", "launcher(seed=12)")
    result = run_cli(["grid", "g", "-p", "no-such-partition", "--no-monitor"], root)
    assert result.exit_code == 2, result.output  # bad input, not an internal error
    assert "sbatch failed" in result.stderr and "partition" in result.stderr
    (folder,) = (root / "outputs" / "xps").iterdir()
    attempt = attempts_of(folder)[-1]
    assert attempt["state"] == "FAILED" and "partition" in attempt["extra"]["error"]


def test_second_grid_submits_nothing_and_removed_xp_is_cancelled(root: Path, hold: Path) -> None:
    write_grid(root, "g", f"launcher(seed=1, hold={str(hold)!r})\nlauncher(seed=2)")
    rows = grid(root, "g")
    again = grid(root, "g")
    assert job_ids(again) == job_ids(rows)  # nothing submitted twice
    wait_states(folders(rows)[:1], {"RUNNING"}, timeout=60)
    write_grid(root, "g", "launcher(seed=2)")
    result = run_cli(["grid", "g", "--no-monitor"], root)
    assert result.exit_code == 0 and "removed from the grid" in result.stdout, result.output
    assert job_state(folders(rows)[0]) == "CANCELLED"


# -- failures, retry, cancel -----------------------------------------------------------------
def test_failed_xp_is_retried_alone(root: Path) -> None:
    write_grid(root, "g", "launcher(seed=1)\nlauncher(seed=2, fail=True)")
    rows = grid(root, "g")
    first = job_ids(rows)
    states = wait_states(folders(rows), ENDED, timeout=90)
    assert list(states.values()) == ["COMPLETED", "FAILED"]
    assert attempts_of(folders(rows)[1])[-1]["exit_code"] == 1
    assert grid(root, "g", code=1)[1]["state"] == "FAILED"  # exit 1: an XP failed
    result = run_cli(["grid", "g", "-r", "--no-monitor"], root)
    assert "1 submit" in result.stdout and "1 keep" in result.stdout, result.output
    rows = grid(root, "g", code=None)
    second = job_ids(rows)
    assert second[0] == first[0] and second[1] != first[1]
    wait_states(folders(rows)[1:], {"FAILED"}, timeout=90)
    assert len(attempts_of(folders(rows)[1])) == 2 and len(attempts_of(folders(rows)[0])) == 1


def test_cancel_running_and_pending_xps(root: Path, hold: Path) -> None:
    write_grid(root, "g", f"""
        launcher(seed=1, hold={str(hold)!r})
        launcher.slurm(sbatch_args={{"hold": ""}})(seed=2)
    """)  # fmt: skip
    rows = grid(root, "g")
    wait_states(folders(rows)[:1], {"RUNNING"}, timeout=60)
    assert job_state(folders(rows)[1]) == "PENDING"
    rows = grid(root, "g", "-C", code=None)
    assert [r["state"] for r in rows] == ["CANCELLED", "CANCELLED"]  # when -C returns
    ids = job_ids(rows)
    wait_until(lambda: all(queue_states().get(i) in (None, "CANCELLED") for i in ids),
               "the jobs to leave the queue")  # fmt: skip
    time.sleep(1.0)  # the running job's runner records its end too: still CANCELLED
    assert [job_state(f) for f in folders(rows)] == ["CANCELLED", "CANCELLED"]
    result = run_cli(["grid", "g", "-r", "--no-monitor"], root)
    assert "2 submit" in result.stdout, result.output


def test_replace_resubmits_a_running_xp(root: Path, hold: Path) -> None:
    write_grid(root, "g", f"launcher(seed=11, hold={str(hold)!r})")
    (folder,) = folders(grid(root, "g"))
    wait_states([folder], {"RUNNING"}, timeout=60)
    old = read_job_json(folder)["job_id"]
    result = run_cli(["grid", "g", "-R", "--no-monitor"], root)
    assert result.exit_code == 0 and "1 resubmit" in result.stdout, result.output
    wait_until(lambda: queue_states().get(str(old)) in (None, "CANCELLED"), "the old job's end")
    hold.unlink()
    wait_states([folder], {"COMPLETED"}, timeout=60)
    attempts = attempts_of(folder)
    assert [a["state"] for a in attempts] == ["CANCELLED", "COMPLETED"], attempts
    assert attempts[1]["job_id"] != old


def test_xp_killed_by_an_outside_scancel_is_cancelled_not_failed(root: Path, hold: Path) -> None:
    write_grid(root, "g", f"launcher(seed=7, hold={str(hold)!r})")
    (folder,) = folders(grid(root, "g"))
    wait_states([folder], {"RUNNING"}, timeout=60)
    subprocess.run(["scancel", str(read_job_json(folder)["job_id"])], check=True, timeout=30)
    # The job's runner leaves the attempt live while Slurm ends the job; a poll settles it.
    wait_until(lambda: grid(root, "g", code=None)[0]["state"] == "CANCELLED", "CANCELLED")
    attempt = attempts_of(folder)[-1]
    # -15 when the job's runner recorded its XP's end; None when Slurm killed the runner first
    assert attempt["state"] == "CANCELLED" and attempt["exit_code"] in (-15, None), attempt


def test_timeout_requeues_up_to_max_num_timeout(root: Path) -> None:
    write_grid(root, "g", """
        launcher.slurm_(time=1)
        launcher.slurm(max_num_timeout=1)(seed=1, sleep_once=600)
        launcher.slurm(max_num_timeout=0)(seed=2, sleep_once=600)
    """)  # fmt: skip
    rows = grid(root, "g")
    requeued, final = folders(rows)
    # Slurm warns (USR2) before the limit: the first XP is stopped, recorded TIMEOUT and
    # requeued (Slurm then holds a requeued job two minutes: release it).
    wait_until(lambda: len(attempts_of(requeued)) == 2, "the requeue", timeout=150)
    first, second = attempts_of(requeued)
    assert first["state"] == "TIMEOUT" and second["state"] in ("PENDING", "RUNNING")
    assert second["job_id"] == first["job_id"]
    release(str(first["job_id"]))
    wait_states([requeued], {"COMPLETED"}, timeout=90)
    # No requeue allowed: it keeps running until Slurm ends it at the limit.
    wait_states([final], {"TIMEOUT"}, timeout=150)
    assert len(attempts_of(final)) == 1
    result = run_cli(["grid", "g", "-r", "--no-monitor", "--dry-run"], root)
    assert "1 resubmit" in result.stdout or "1 submit" in result.stdout, result.output


def test_preemption_signal_requeues_and_the_xp_resumes(root: Path) -> None:
    write_grid(root, "g", "launcher.slurm_(time=10)\nlauncher(seed=4, sleep_once=600)")
    rows = grid(root, "g")
    (folder,) = folders(rows)
    wait_until(lambda: (folder / "slept-once").exists(), "the XP to start sleeping")
    job = str(read_job_json(folder)["job_id"])
    # What a preempting scheduler sends (with --signal), long before the time limit.
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    wait_until(lambda: len(attempts_of(folder)) == 2, "the requeue", timeout=60)
    first, second = attempts_of(folder)
    assert first["state"] == "PREEMPTED" and second["job_id"] == job
    release(job)
    wait_states([folder], {"COMPLETED"}, timeout=90)
    assert [a["state"] for a in attempts_of(folder)] == ["PREEMPTED", "COMPLETED"]


# -- info, tail ------------------------------------------------------------------------------
def test_info_and_tail_of_a_pending_job(root: Path) -> None:
    write_grid(root, "g", 'launcher.slurm_(sbatch_args={"hold": ""})\nlauncher(seed=3)')
    rows = grid(root, "g")
    sig, job = rows[0]["sig"], job_ids(rows)[0]
    tail = subprocess.Popen([str(GRIDMAN), "grid", "g", "-t", "0"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert tail.stderr is not None and tail.stdout is not None
        assert "not started yet" in tail.stderr.readline()
        release(job)
        assert wait_until(lambda: "starts" in tail.stdout.readline(), "the log", timeout=60)
    finally:
        tail.kill()
        tail.wait()
    wait_states(folders(rows), {"COMPLETED"}, timeout=60)
    info = run_gridman(root, "info", "--sig", sig)
    assert info.returncode == 0, info.stderr
    assert f"on slurm job {job}" in info.stdout and "node " in info.stdout
    assert "COMPLETED" in info.stdout


# -- crash safety ----------------------------------------------------------------------------
def test_orphan_of_a_killed_submission_is_recorded_not_resubmitted(root: Path) -> None:
    write_grid(root, "g", "launcher(seed=1)\nlauncher(seed=2)")
    crashed = run_gridman(root, "grid", "g", "--no-monitor", env={"GRIDMAN_FAULT": "after-sbatch"})
    assert crashed.returncode == -9, crashed.stderr
    rows = [f for f in sorted((root / "outputs" / "xps").iterdir())]
    assert [read_job_json(f)["job_id"] for f in rows] == [None, None]  # died before recording
    names = {attempts_of(f)[-1]["extra"]["job_name"] for f in rows}
    assert len(names) == 1
    result = run_cli(["grid", "g", "--no-monitor"], root)
    assert result.exit_code == 0 and "2 keep" in result.stdout, result.output
    assert all(read_job_json(f)["job_id"] for f in rows)
    wait_states(rows, {"COMPLETED"}, timeout=90)
    scripts = submission_scripts(root / "outputs")
    assert len(scripts) == 1  # one sbatch in all: the orphan was adopted, never resubmitted


def test_orphan_nobody_claims_is_cancelled(root: Path, hold: Path) -> None:
    write_grid(root, "g", f"launcher(seed=1, hold={str(hold)!r})")
    crashed = run_gridman(root, "grid", "g", "--no-monitor", env={"GRIDMAN_FAULT": "after-sbatch"})
    assert crashed.returncode == -9, crashed.stderr
    folder = next((root / "outputs" / "xps").iterdir())
    name = attempts_of(folder)[-1]["extra"]["job_name"]
    result = run_cli(["grid", "g", "--clear", "--yes", "--no-monitor"], root)
    assert result.exit_code == 0, result.output
    assert "1 resubmit" in result.stdout
    live = [
        json.loads(p.read_text())
        for p in (root / "outputs" / ".slurm" / "submissions").glob("*.json")
    ]
    orphan = next(i for i in live if i["name"] == name)
    assert orphan["job_id"], orphan  # found by its name
    wait_until(lambda: queue_states().get(orphan["job_id"]) in (None, "CANCELLED"),
               "the orphan to be cancelled")  # fmt: skip
