"""Fast tests of the Slurm backend's edge cases, against a fake cluster (FakeSlurm).

The same paths run for real in tests/test_slurm.py; these cover what the local cluster cannot
be made to do (OUT_OF_MEMORY, NODE_FAIL, jobs purged from the controller) and count calls.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import pytest

from gridman.backends import LaunchContext, Submission, slurm_query
from gridman.backends.slurm import (
    Intent,
    SlurmBackend,
    array_chunks,
    sbatch_parameters,
)
from gridman.backends.slurm_job import XPTask, _ended, parse_duration
from gridman.backends.slurm_query import map_state, parse_exit_code
from gridman.core.fsutil import atomic_write_json
from gridman.core.jobs import JobRecord, State, read_job, write_job
from gridman.core.liveness import status_file
from gridman.core.resources import Resources
from gridman.testing import make_project, run_cli
from gridman.testing.slurm import FakeSlurm

NOW = 2_000_000_000.0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    cluster = FakeSlurm()
    monkeypatch.setattr(slurm_query, "run_slurm", cluster)
    return cluster


@pytest.fixture
def dir(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def backend(dir: Path, **settings: Any) -> SlurmBackend:
    ctx = LaunchContext(root=dir.parent, dir=dir, main_spec="train.py", env={},
                        settings=settings, python="python3")  # fmt: skip
    return SlurmBackend(ctx)


def pending(dir: Path, sig: str, job_id: Optional[str], submitted: float = 1000.0,
            **extra: Any) -> tuple[Path, JobRecord]:  # fmt: skip
    folder = dir / "xps" / sig
    folder.mkdir(parents=True, exist_ok=True)
    record = JobRecord(sig=sig).with_new_attempt(
        "slurm", State.PENDING, job_id=job_id, submitted=submitted, extra=extra
    )
    write_job(folder, record)
    return folder, record


# -- pure parts -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "state"), [
    ("PENDING", State.PENDING), ("RUNNING", State.RUNNING), ("COMPLETING", State.RUNNING),
    ("COMPLETED", State.COMPLETED), ("FAILED", State.FAILED), ("CANCELLED by 0", State.CANCELLED),
    ("TIMEOUT", State.TIMEOUT), ("DEADLINE", State.TIMEOUT), ("PREEMPTED", State.PREEMPTED),
    ("OUT_OF_MEMORY", State.OUT_OF_MEMORY), ("NODE_FAIL", State.NODE_FAIL),
    ("BOOT_FAIL", State.NODE_FAIL), ("REQUEUED", State.PENDING), ("SOMETHING_NEW", State.UNKNOWN),
])  # fmt: skip
def test_slurm_states_map_to_gridman_states(text: str, state: State) -> None:
    assert map_state(text) is state


def test_exit_codes_and_durations() -> None:
    assert [parse_exit_code(t) for t in ("0:0", "1:0", "0:15", "2:9", "x")] == [0, 1, -15, 2, None]
    assert parse_duration("1:30") == 90 and parse_duration("2:00:05") == 7205
    assert parse_duration("1-00:00:10") == 86410
    assert parse_duration("UNLIMITED") is None and parse_duration("INVALID") is None


def sub(dir: Path, sig: str, array: int = 0, **resources: Any) -> Submission:
    return Submission(sig, dir / "xps" / sig, ("--x=1",), Resources().with_changes(resources),
                      array)  # fmt: skip


def test_arrays_group_shared_resources_and_split_at_max_size(dir: Path) -> None:
    subs = [sub(dir, f"{i:08x}", array=i) for i in range(5)] + [sub(dir, "0000ffff", time=3)]
    chunks = array_chunks(subs, max_size=2)
    assert [[s.sig for s in c] for c in chunks] == [
        ["00000000", "00000001"],
        ["00000002", "00000003"],
        ["00000004"],
        ["0000ffff"],
    ]
    # without grouping, only XPs of one job_array() block share an array
    blocks = [sub(dir, "0000000a", array=1), sub(dir, "0000000b", array=1),
              sub(dir, "0000000c", array=2)]  # fmt: skip
    assert [len(c) for c in array_chunks(blocks, 10, group=False)] == [2, 1]


def test_sbatch_parameters_and_script(tmp_path: Path) -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    res = Resources().with_changes({"gpus": 2, "mem_per_gpu": 8, "cpus_per_gpu": 4,
                                    "partition": "p1", "setup": ["module load cuda"],
                                    "sbatch_args": {"hold": "", "mail-type": "END"},
                                    "array_parallelism": 3})  # fmt: skip
    params = sbatch_parameters(res, "gridman-abc", 90)
    # Dora's mapping (tests/test_distrib_mapping.py): one task per GPU, CPUs per task, mem per node
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (1, 2, 2)
    assert params["cpus_per_task"] == 4 and params["mem"] == "16G"
    assert params["additional_parameters"] == {"hold": True, "mail-type": "END"}
    script = _make_sbatch_string(command="run", folder=tmp_path, map_count=5, **params)
    lines = script.splitlines()
    assert "#SBATCH --ntasks-per-node=2" in lines and "#SBATCH --mem=16G" in lines
    assert "#SBATCH --hold" in lines and "#SBATCH --array=0-4%3" in lines
    assert "#SBATCH --partition=p1" in lines and "module load cuda" in lines
    assert not any(line.startswith("#SBATCH --time") for line in lines)  # no site default
    timed = sbatch_parameters(Resources().with_changes({"time": 30, "mem": "4G"}), "n", 60)
    script = _make_sbatch_string(command="run", folder=tmp_path, **timed)
    assert "#SBATCH --time=30" in script and "#SBATCH --mem=4G" in script
    assert "#SBATCH --signal=USR2@60" in script


# -- poll -----------------------------------------------------------------------------------
def test_poll_is_one_squeue_and_sacct_only_for_jobs_that_left_the_queue(
    dir: Path, fake: FakeSlurm
) -> None:
    fake.queue = {"5_0": ("RUNNING", "node1", "gridman-a"), "5_1": ("PENDING", "", "gridman-a")}
    fake.accounting = {"4": ("OUT_OF_MEMORY", "0:9", "node2", "gridman-b"),
                       "3": ("NODE_FAIL", "0:0", "node3", "gridman-c")}  # fmt: skip
    jobs = [pending(dir, f"0000000{i}", j) for i, j in enumerate(["5_0", "5_1", "4", "3"])]
    fresh = backend(dir).poll(jobs)
    assert fake.count("squeue") == 1 and fake.count("sacct") == 1
    assert fake.calls[-1][-1] == "3,4"  # only the two that left the queue
    states = {f.name: r.latest.state for f, r in fresh.items() if r.latest}
    assert states == {"00000000": State.RUNNING, "00000002": State.OUT_OF_MEMORY,
                      "00000003": State.NODE_FAIL}  # fmt: skip
    oom = read_job(jobs[2][0])
    assert oom is not None and oom.latest is not None and oom.latest.exit_code == -9
    running = read_job(jobs[0][0])
    assert running is not None and running.latest is not None and running.latest.host == "node1"


def test_squeue_snapshot_and_sacct_answers_are_shared(dir: Path, fake: FakeSlurm) -> None:
    fake.accounting = {"9": ("COMPLETED", "0:0", "n", "x")}
    jobs = [pending(dir, "00000009", "9")]
    write_job(jobs[0][0], jobs[0][1])
    backend(dir, cache_s=60).poll(jobs)
    write_job(jobs[0][0], jobs[0][1])  # as if it were still PENDING: ask again
    backend(dir, cache_s=60).poll(jobs)  # another command: the shared snapshot and cache
    assert fake.count("squeue") == 1 and fake.count("sacct") == 1


def test_without_accounting_the_status_file_settles_purged_jobs(
    dir: Path, fake: FakeSlurm, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.accounting = None
    done_folder, done = pending(dir, "0000000d", "21")
    lost_folder, lost = pending(dir, "0000000e", "22")
    new_folder, new = pending(dir, "0000000f", "23", submitted=NOW - 5)
    status_file(done_folder, 1).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(status_file(done_folder, 1), {"version": 1, "exit_code": 3})
    monkeypatch.setattr("gridman.backends.slurm.now", lambda: NOW)
    fresh = backend(dir).poll([(done_folder, done), (lost_folder, lost), (new_folder, new)])
    assert fresh[done_folder].latest is not None
    assert (fresh[done_folder].latest.state, fresh[done_folder].latest.exit_code) == (
        State.FAILED, 3)  # fmt: skip
    assert fresh[lost_folder].latest is not None
    assert fresh[lost_folder].latest.state is State.VANISHED
    assert new_folder not in fresh  # just submitted: not yet judged
    backend(dir).poll([(new_folder, new)])
    assert fake.count("sacct") == 1  # "no accounting" is remembered


def test_finished_in_squeue_wins_over_a_stale_record(dir: Path, fake: FakeSlurm) -> None:
    fake.queue = {"7": ("TIMEOUT", "n1", "g"), "8": ("PREEMPTED", "n1", "g")}
    jobs = [pending(dir, "00000007", "7"), pending(dir, "00000008", "8")]
    fresh = backend(dir).poll(jobs)
    assert [r.latest.state for r in fresh.values() if r.latest] == [State.TIMEOUT,
                                                                    State.PREEMPTED]  # fmt: skip
    assert fake.count("sacct") == 0


# -- orphans --------------------------------------------------------------------------------
def intent(be: SlurmBackend, token: str, folders: list[Path], pid: int, **kw: Any) -> Intent:
    relative = tuple(str(f.relative_to(be.ctx.dir)) for f in folders)
    made = Intent(token, f"gridman-{token}", relative, len(folders) > 1, pid,
                  os.uname().nodename, 1000.0, **kw)  # fmt: skip
    be._write_intent(made)
    return made


def dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_orphan_found_by_name_is_recorded(dir: Path, fake: FakeSlurm) -> None:
    be = backend(dir)
    jobs = [pending(dir, f"0000000{i}", None, token="aaa111", job_name="gridman-aaa111")
            for i in range(2)]  # fmt: skip
    intent(be, "aaa111", [f for f, _ in jobs], dead_pid())
    fake.queue = {
        "40_0": ("PENDING", "", "gridman-aaa111"),
        "40_1": ("RUNNING", "n", "gridman-aaa111"),
    }
    fresh = be.poll(jobs)
    assert [r.latest.job_id for r in fresh.values() if r.latest] == ["40_0", "40_1"]
    assert be._read_intent("aaa111") is not None
    assert fake.count("scancel") == 0


def test_orphan_submission_still_running_is_left_alone(dir: Path, fake: FakeSlurm) -> None:
    be = backend(dir)
    jobs = [pending(dir, "00000001", None, token="bbb222")]
    intent(be, "bbb222", [jobs[0][0]], os.getpid())  # this very process: still submitting
    assert be.poll(jobs) == {}


def test_orphan_never_submitted_vanishes_and_unclaimed_task_is_cancelled(
    dir: Path, fake: FakeSlurm
) -> None:
    be = backend(dir)
    never = [pending(dir, "00000001", None, token="ccc333")]
    intent(be, "ccc333", [never[0][0]], dead_pid())
    fresh = be.poll(never)  # not in squeue, not in sacct: sbatch never ran
    assert fresh[never[0][0]].latest is not None
    assert fresh[never[0][0]].latest.state is State.VANISHED
    moved_on = dir / "xps" / "00000002"
    claimed = pending(dir, "00000003", None, token="ddd444")
    pending(dir, "00000002", "77")  # resubmitted since: not this token's any more
    intent(be, "ddd444", [moved_on, claimed[0]], dead_pid())
    fake.queue = {
        "50_0": ("PENDING", "", "gridman-ddd444"),
        "50_1": ("PENDING", "", "gridman-ddd444"),
    }
    be.poll([claimed])
    assert ["scancel", "50_0"] in fake.calls


def test_intents_never_point_outside_the_xp_root(dir: Path) -> None:
    be = backend(dir)
    with pytest.raises(ValueError):
        be._intent_path("../../etc")
    assert be._inside("../../etc") is None and be._inside("xps/00000001") is not None


# -- cancel ---------------------------------------------------------------------------------
def test_cancel_is_one_scancel_and_records_cancelled(dir: Path, fake: FakeSlurm) -> None:
    fake.queue = {"60_0": ("RUNNING", "n", "g"), "60_1": ("PENDING", "", "g")}
    jobs = [pending(dir, "00000001", "60_0"), pending(dir, "00000002", "60_1")]
    backend(dir).cancel(jobs)
    assert fake.count("scancel") == 1 and ["scancel", "60_0", "60_1"] in fake.calls
    assert [read_job(f).state for f, _ in jobs] == [State.CANCELLED] * 2  # type: ignore[union-attr]
    assert all((f / ".cancel").exists() for f, _ in jobs)  # the job's runner says CANCELLED too


# -- inside the job -------------------------------------------------------------------------
def test_checkpoint_requeues_until_max_num_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "xps" / "00000001"
    folder.mkdir(parents=True)
    running = JobRecord(sig="00000001").with_new_attempt(
        "slurm", State.RUNNING, job_id="70", started=1.0
    )
    write_job(folder, running)
    monkeypatch.setenv("SLURM_JOB_ID", "70")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    task = XPTask(str(folder), str(tmp_path), str(tmp_path), "train.py", (), "python3",
                  time_min=1, max_num_timeout=1)  # fmt: skip
    again = task.checkpoint()
    assert again is not None and again.function is task
    record = read_job(folder)
    assert record is not None
    assert [(a.state, a.job_id) for a in record.attempts] == [
        (State.TIMEOUT, "70"), (State.PENDING, "70")]  # fmt: skip
    write_job(folder, record.with_latest(state=State.RUNNING, started=1.0))
    assert task.checkpoint() is None  # the second timeout: no more requeue
    record = read_job(folder)
    assert record is not None and [a.state for a in record.attempts] == [State.TIMEOUT] * 2


def test_ended_keeps_a_record_that_moved_on() -> None:
    record = JobRecord(sig="00000001").with_new_attempt("slurm", State.COMPLETED, job_id="1")
    assert _ended("1", State.TIMEOUT, None, True)(record) is record


# -- choice and flags -----------------------------------------------------------------------
def test_backend_is_slurm_when_sbatch_is_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gridman.api.grid import choose_backend
    from gridman.core.project import Project

    bin = tmp_path / "bin"
    bin.mkdir()
    monkeypatch.setenv("PATH", str(bin))
    assert choose_backend(Project(root=tmp_path), None)[0] == "local"
    (bin / "sbatch").write_text("#!/bin/sh\n")
    (bin / "sbatch").chmod(0o755)
    name, reason = choose_backend(Project(root=tmp_path), None)
    assert name == "slurm" and "sbatch" in reason


@pytest.mark.parametrize("args", [["--sbatch", "a b=c"], ["--time", "0"],
                                  ["--cpus-per-task", "0"]])  # fmt: skip
def test_bad_resource_flags_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    root = make_project(tmp_path)
    result = run_cli(["grid", "g", *args], root)
    assert (result.exit_code == 2 and "must be" in result.stderr) or "KEY=VALUE" in result.stderr


def test_bad_slurm_defaults_in_gridman_yaml(tmp_path: Path) -> None:
    root = make_project(tmp_path, settings={"slurm": {"tiem": 5}})
    (root / "grids").mkdir()
    (root / "grids" / "g.py").write_text("import gridman\n\n@gridman.Explorer\n"
                                         "def explore(launcher):\n    launcher()\n")  # fmt: skip
    result = run_cli(["grid", "g", "--dry-run"], root)
    assert result.exit_code == 2 and "gridman.yaml" not in result.stdout
    assert "'time'" in result.stderr or "tiem" in result.stderr, result.stderr
