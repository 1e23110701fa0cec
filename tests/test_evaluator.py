"""The Evaluator in-process (serial, thread, process): return conventions, failure isolation,
gather semantics, callbacks, CSV, strict serial mode, max_jobs, @profile and errors.

Persistence and the cache are in test_evaluator_store.py, the mpi method under real ranks in
test_evaluator_mpi.py.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gridman.errors import GridmanError, UsageError
from gridman.evaluator import (
    Evaluator,
    Job,
    JobStatus,
    MaximumJobsSpawnReached,
    RunningJob,
    callbacks,
    profile,
)

METHODS = ["serial", "thread", "process"]


def conventions(job: RunningJob) -> Any:
    """One return convention per ``kind``."""
    kind = job["kind"]
    if kind == "float":
        return 1.5
    if kind == "int":
        return 3
    if kind == "fail":
        return "F_out_of_memory"
    if kind == "dict":
        return {"objective": 2.5, "metadata": {"epochs": 25}, "extra": "kept"}
    if kind == "dict_fail":
        return {"objective": "F_nan", "metadata": {"epochs": 2}}
    if kind == "tuple":
        return 4.0, 0.25
    if kind == "raise":
        raise ZeroDivisionError("division by zero in the model")
    if kind == "exit":
        sys.exit(3)
    if kind == "none":
        return None
    if kind == "string":
        return "great"
    raise AssertionError(kind)


KINDS = ["float", "int", "fail", "dict", "dict_fail", "tuple", "raise", "exit", "none", "string"]


def by_kind(jobs: list[Job]) -> dict[str, Job]:
    return {job.parameters["kind"]: job for job in jobs}


@pytest.mark.parametrize("method", METHODS)
def test_return_conventions(method: str) -> None:
    with Evaluator.create(conventions, method=method, method_kwargs={"num_workers": 2}) as ev:
        ids = ev.submit([{"kind": kind} for kind in KINDS])
        jobs = ev.gather("ALL")
    assert ids == list(range(len(KINDS)))
    assert sorted(job.id for job in jobs) == ids
    got = by_kind(jobs)
    assert got["float"].objective == 1.5 and got["float"].status is JobStatus.DONE
    assert got["int"].objective == 3 and not got["int"].failed
    assert got["fail"].objective == "F_out_of_memory" and got["fail"].status is JobStatus.FAILED
    assert got["dict"].objective == 2.5
    assert got["dict"].metadata["epochs"] == 25 and got["dict"].metadata["extra"] == "kept"
    assert got["dict"].output["objective"] == 2.5
    assert got["dict_fail"].failed and got["dict_fail"].metadata["epochs"] == 2
    assert got["tuple"].objective == (4.0, 0.25) and not got["tuple"].failed
    raised = got["raise"]
    assert raised.failed and raised.objective == "F_ZeroDivisionError"
    assert "division by zero in the model" in raised.metadata["error"]
    assert "Traceback" in raised.metadata["traceback"]
    assert "conventions" in raised.metadata["traceback"]  # the run function's own frame
    assert got["exit"].objective == "F_SystemExit"
    for invalid in ("none", "string"):
        assert got[invalid].objective == "F_InvalidReturn"
        assert got[invalid].failed and got[invalid].metadata["error"]
    for job in jobs:
        meta = job.metadata
        assert meta["timestamp_submit"] <= meta["timestamp_start"] <= meta["timestamp_end"]
        assert meta["timestamp_end"] <= meta["timestamp_gather"]


def sleepy(job: RunningJob) -> float:
    time.sleep(job["sleep"])
    if job.get("raise"):
        raise RuntimeError(f"job {job.id} broke")
    return float(job["x"])


def crash(job: RunningJob) -> float:
    if job["x"] == 2:
        os._exit(7)  # the worker process dies without a word
    time.sleep(0.02)
    return float(job["x"])


@pytest.mark.parametrize("method", METHODS)
def test_failure_isolation(method: str) -> None:
    configs = [{"x": i, "sleep": 0.01, "raise": i % 3 == 1} for i in range(9)]
    with Evaluator.create(sleepy, method=method, method_kwargs={"num_workers": 2}) as ev:
        ev.submit(configs)
        jobs = ev.gather("ALL")
    assert len(jobs) == 9
    failed = sorted(job.parameters["x"] for job in jobs if job.failed)
    assert failed == [1, 4, 7]
    assert all(job.objective == "F_RuntimeError" for job in jobs if job.failed)
    assert sorted(job.objective for job in jobs if not job.failed) == [0, 2, 3, 5, 6, 8]


@pytest.mark.parametrize("prefetch", [0, 2])  # 2: jobs queued behind the dying one
def test_process_worker_that_dies_fails_only_its_job(prefetch: int) -> None:
    options = {"num_workers": 2, "prefetch": prefetch}
    with Evaluator.create(crash, method="process", method_kwargs=options) as ev:
        ev.submit([{"x": i} for i in range(8)])
        jobs = {job.parameters["x"]: job for job in ev.gather("ALL")}
        ev.submit([{"x": 10}])  # the pool goes on with a new worker
        later = ev.gather("ALL")
    assert jobs[2].failed and jobs[2].objective == "F_WorkerDied"
    assert "exit code 7" in jobs[2].metadata["error"]
    assert all(not jobs[x].failed and jobs[x].objective == x for x in jobs if x != 2)
    assert [job.objective for job in later] == [10.0]


@pytest.mark.parametrize("method", METHODS)
def test_batch_then_all_returns_each_job_once(method: str) -> None:
    sleeps = [0.0, 0.0, 0.15, 0.15, 0.3, 0.3]
    with Evaluator.create(sleepy, method=method, method_kwargs={"num_workers": 2}) as ev:
        ev.submit([{"x": i, "sleep": s} for i, s in enumerate(sleeps)])
        first = ev.gather("BATCH", size=2)
        rest = ev.gather("ALL")
        assert ev.gather("ALL") == [] and ev.gather("BATCH", size=3) == []  # nothing left
    assert len(first) >= 2
    assert len(first) < len(sleeps)  # BATCH did not wait for the slow ones
    ids = [job.id for job in first + rest]
    assert sorted(ids) == list(range(6)) and len(set(ids)) == 6


def test_batch_returns_as_soon_as_size_is_reached() -> None:
    with Evaluator.create(sleepy, method="thread", method_kwargs={"num_workers": 2}) as ev:
        ev.submit([{"x": 0, "sleep": 0.0}, {"x": 1, "sleep": 0.6}])
        start = time.monotonic()
        batch = ev.gather("BATCH", size=1)
        waited = time.monotonic() - start
        assert [job.id for job in batch] == [0] and waited < 0.3
        assert ev.num_running == 1 and ev.job(1).status is JobStatus.RUNNING
        assert ev.gather("BATCH", size=1, timeout=0.05) == []  # timeout: what is there
        assert [job.id for job in ev.gather("ALL")] == [1]


def test_unknown_gather_type_and_bad_size() -> None:
    with Evaluator.create(sleepy, method="serial") as ev:
        with pytest.raises(UsageError, match="unknown gather type 'SOME'") as info:
            ev.gather("SOME")
        assert "BATCH" in str(info.value)
        with pytest.raises(UsageError, match="positive integer"):
            ev.gather("BATCH", size=0)
        assert ev.gather("all") == []  # case does not matter


def test_statuses_and_ids_serial() -> None:
    with Evaluator.create(sleepy, method="serial", num_workers=4) as ev:
        assert ev.num_workers == 1  # serial is one at a time, whatever num_workers says
        ids = ev.submit([{"x": i, "sleep": 0.0} for i in range(3)])
        assert [ev.job(i).status for i in ids] == [JobStatus.READY] * 3  # runs in gather
        assert [job.id for job in ev.gather("BATCH", size=1)] == [0]
        assert [job.status for job in ev.jobs] == [JobStatus.DONE, JobStatus.READY, JobStatus.READY]
        assert ev.submit([{"x": 9, "sleep": 0.0}]) == [3]
        assert [job.id for job in ev.gather("ALL")] == [1, 2, 3]
        ev.submit([{"x": 10, "sleep": 0.0}])
    # closing cancelled the job that never ran; finished ones stay available
    assert ev.job(4).status is JobStatus.CANCELLED
    assert ev.gather("ALL") == []
    with pytest.raises(UsageError, match="closed"):
        ev.submit([{"x": 1, "sleep": 0.0}])


class Recorder(callbacks.Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, str]] = []
        self.thread_ids: set[int] = set()

    def _note(self, name: str, job: Job) -> None:
        import threading

        self.events.append((name, job.id, job.status.value))
        self.thread_ids.add(threading.get_ident())

    def on_submit(self, job: Job) -> None:
        self._note("submit", job)

    def on_launch(self, job: Job) -> None:
        self._note("launch", job)

    def on_done(self, job: Job) -> None:
        self._note("done", job)

    def on_close(self) -> None:
        self.events.append(("close", -1, ""))


@pytest.mark.parametrize("method", METHODS)
def test_callbacks_fire_in_order_in_the_callers_thread(method: str) -> None:
    import threading

    recorder = Recorder()
    options = {"num_workers": 2, "callbacks": [recorder]}
    with Evaluator.create(sleepy, method=method, method_kwargs=options) as ev:
        ev.submit([{"x": i, "sleep": 0.01, "raise": i == 2} for i in range(4)])
        ev.gather("ALL")
    assert recorder.thread_ids == {threading.get_ident()}
    assert recorder.events[-1] == ("close", -1, "")
    for job_id in range(4):
        mine = [(name, status) for name, i, status in recorder.events if i == job_id]
        expected_end = "FAILED" if job_id == 2 else "DONE"
        assert mine == [("submit", "READY"), ("launch", "RUNNING"), ("done", expected_end)]


def test_a_raising_callback_loses_no_result() -> None:
    class Broken(callbacks.Callback):
        calls = 0

        def on_done(self, job: Job) -> None:
            Broken.calls += 1
            if Broken.calls == 1:
                raise ValueError("bad callback")

    with Evaluator.create(sleepy, method="thread", callbacks=[Broken()], num_workers=2) as ev:
        with pytest.raises(ValueError, match="bad callback"):
            ev.submit([{"x": i, "sleep": 0.0} for i in range(3)])  # raises here if one is done
            ev.gather("ALL")
        assert sorted(job.id for job in ev.gather("ALL")) == [0, 1, 2]


def test_progress_bar_plain_and_rich() -> None:
    plain = io.StringIO()
    bar = callbacks.ProgressBar(stream=plain, interval=0.0)
    assert bar.mode == "plain"  # not a terminal
    fancy = io.StringIO()
    rich_bar = callbacks.ProgressBar(mode="rich", stream=fancy)
    with Evaluator.create(conventions, method="thread", callbacks=[bar, rich_bar]) as ev:
        ev.submit([{"kind": kind} for kind in ("float", "int", "raise")])
        ev.gather("ALL")
    lines = plain.getvalue().splitlines()
    assert lines[-1] == "gridman: evaluations: 3/3 done, 1 failed, 0 running, best 3"
    assert "3/3" in fancy.getvalue()
    with pytest.raises(ValueError, match="mode"):
        callbacks.ProgressBar(mode="fancy")


def test_dump_evals_csv(tmp_path: Path) -> None:
    with Evaluator.create(conventions, method="thread", num_workers=2) as ev:
        ev.submit([{"kind": k, "lr": 0.1} for k in ("float", "dict", "raise")])
        ev.gather("ALL")
        path = ev.dump_evals(log_dir=tmp_path / "out")
    assert path == tmp_path / "out" / "results.csv"
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    assert header[:5] == ["p:kind", "p:lr", "objective", "job_id", "job_status"]
    meta = header[5:]
    assert meta[:4] == ["m:timestamp_submit", "m:timestamp_start", "m:timestamp_end",
                        "m:timestamp_gather"]  # fmt: skip
    assert {"m:epochs", "m:extra", "m:error", "m:traceback"} <= set(meta)
    assert [row["job_id"] for row in rows] == ["0", "1", "2"]
    assert [row["objective"] for row in rows] == ["1.5", "2.5", "F_ZeroDivisionError"]
    assert [row["job_status"] for row in rows] == ["DONE", "DONE", "FAILED"]
    assert rows[1]["m:epochs"] == "25" and rows[0]["m:epochs"] == ""
    assert "Traceback" in rows[2]["m:traceback"]
    assert float(rows[0]["m:timestamp_start"]) <= float(rows[0]["m:timestamp_end"])


def test_dump_evals_several_objectives_and_saved_keys(tmp_path: Path) -> None:
    with Evaluator.create(conventions, method="serial") as ev:
        ev.submit([{"kind": k, "seed": 1} for k in ("tuple", "fail")])
        ev.gather("ALL")
        path = ev.dump_evals(saved_keys=["seed"], log_dir=tmp_path, filename="two.csv")
        custom = ev.dump_evals(lambda job: {"K": job.parameters["kind"]}, log_dir=tmp_path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:5] == ["p:seed", "objective_0", "objective_1", "job_id", "job_status"]
    assert (rows[0]["objective_0"], rows[0]["objective_1"]) == ("4.0", "0.25")
    assert (rows[1]["objective_0"], rows[1]["objective_1"]) == ("F_out_of_memory",) * 2
    assert custom.read_text().splitlines()[0].startswith("K,objective_0,")


@pytest.mark.parametrize("method", ["thread", "process"])
def test_one_worker_is_strictly_serial(method: str) -> None:
    def spans(num_workers: int) -> list[tuple[float, float]]:
        options = {"num_workers": num_workers}
        with Evaluator.create(sleepy, method=method, method_kwargs=options) as ev:
            ev.submit([{"x": i, "sleep": 0.03} for i in range(6)])
            jobs = ev.gather("ALL")
        return sorted((j.metadata["timestamp_start"], j.metadata["timestamp_end"]) for j in jobs)

    serial = spans(1)
    assert all(start >= end for (_, end), (start, _) in zip(serial, serial[1:]))
    parallel = spans(2)  # the check above would see an overlap if there was one
    assert any(start < end for (_, end), (start, _) in zip(parallel, parallel[1:]))


def test_max_jobs() -> None:
    with Evaluator.create(sleepy, method="thread", num_workers=2, max_jobs=3) as ev:
        assert ev.submit([{"x": 0, "sleep": 0.0}, {"x": 1, "sleep": 0.0}]) == [0, 1]
        with pytest.raises(MaximumJobsSpawnReached) as info:
            ev.submit([{"x": 2, "sleep": 0.0}, {"x": 3, "sleep": 0.0}])
        assert info.value.remaining == 1 and isinstance(info.value, GridmanError)
        assert "max_jobs=3" in str(info.value)
        assert len(ev.jobs) == 2  # nothing of the refused submit was queued
        assert ev.submit([{"x": 2, "sleep": 0.0}]) == [2]
        assert len(ev.gather("ALL")) == 3
        with pytest.raises(MaximumJobsSpawnReached):
            ev.submit([{"x": 4, "sleep": 0.0}])


@profile
def profiled(job: RunningJob) -> Any:
    block = bytearray(job["bytes"])  # noqa: F841 - held until the function returns
    time.sleep(0.01)
    if job.get("as_dict"):
        return {"objective": 1.0, "metadata": {"mine": True}}
    return 2.0


@profile(memory=False)
def timed_only(job: RunningJob) -> float:
    return 3.0


@pytest.mark.parametrize("method", ["serial", "process"])
def test_profile(method: str) -> None:
    with Evaluator.create(profiled, method=method) as ev:
        ev.submit([{"bytes": 4_000_000}, {"bytes": 10, "as_dict": True}])
        big, small = sorted(ev.gather("ALL"), key=lambda job: job.id)
    assert big.objective == 2.0 and small.objective == 1.0
    assert small.metadata["mine"] is True
    for job in (big, small):
        assert job.metadata["timestamp_end"] - job.metadata["timestamp_start"] >= 0.009
    assert big.metadata["memory"] >= 4_000_000 > small.metadata["memory"]
    with Evaluator.create(timed_only, method="serial") as ev:
        ev.submit([{}])
        (job,) = ev.gather("ALL")
    assert job.objective == 3.0 and "memory" not in job.metadata
    assert "timestamp_start" in job.metadata


def with_kwargs(job: RunningJob, scale: float = 1.0) -> float:
    return job["x"] * scale


def test_run_function_kwargs_and_running_job() -> None:
    seen: list[RunningJob] = []

    def keep(job: RunningJob) -> float:
        seen.append(job)
        return 0.0

    with Evaluator.create(with_kwargs, method="thread", run_function_kwargs={"scale": 10}) as ev:
        ev.submit([{"x": 2}])
        assert [job.objective for job in ev.gather("ALL")] == [20]
    with Evaluator.create(keep, method="serial") as ev:
        ev.submit([{"a": 1, "b": 2}])
        ev.gather("ALL")
    job = seen[0]
    assert job.id == 0 and dict(job) == {"a": 1, "b": 2} and job["a"] == 1 and len(job) == 2
    assert job.sig is None and job.folder is None  # no persistence


def test_methods_and_options_errors() -> None:
    with pytest.raises(UsageError, match="unknown resource 'tiem'") as info:
        Evaluator.create(sleepy, method="slurm", slurm={"tiem": 5})
    assert "'time'" in str(info.value) and isinstance(info.value, GridmanError)
    with pytest.raises(UsageError, match="unknown evaluator method 'ray'") as info:
        Evaluator.create(sleepy, method="ray")
    assert "serial" in str(info.value) and "mpi" in str(info.value)
    with pytest.raises(UsageError, match=r"unknown option.*comm"):
        Evaluator.create(sleepy, method="thread", method_kwargs={"comm": None})
    with pytest.raises(UsageError, match="num_workers"):
        Evaluator.create(sleepy, method="thread", num_workers=0)
    with pytest.raises(UsageError, match="both"):
        Evaluator.create(sleepy, method_kwargs={"num_workers": 1}, num_workers=2)
    with pytest.raises(UsageError, match="dict of parameters"):
        Evaluator.create(sleepy).submit([[1, 2]])  # type: ignore[list-item]


def test_mpi_method_outside_mpiexec_says_how_to_run() -> None:
    pytest.importorskip("mpi4py")
    code = "from gridman.evaluator import Evaluator; Evaluator.create(print, method='mpi')"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 1
    assert "at least 2 ranks" in done.stderr and "mpiexec -n 3" in done.stderr


def test_spawned_process_workers_need_an_importable_function(tmp_path: Path) -> None:
    (tmp_path / "evalmod_spawn.py").write_text("def run(job):\n    return job['x'] + 1\n")
    sys.path.insert(0, str(tmp_path))
    import evalmod_spawn

    options = {"start_method": "spawn", "num_workers": 1}
    with Evaluator.create(evalmod_spawn.run, method="process", method_kwargs=options) as ev:
        ev.submit([{"x": 1}])
        assert [job.objective for job in ev.gather("ALL")] == [2]
    with pytest.raises(UsageError, match="cannot be sent to spawn worker processes"):
        Evaluator.create(lambda job: 1, method="process", method_kwargs=options)


def test_process_lambda_works_with_fork() -> None:
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    options: dict[str, Any] = {"start_method": "fork", "num_workers": 2}
    with Evaluator.create(lambda job: job["x"] * 3, method="process", **options) as ev:
        ev.submit([{"x": 1}, {"x": 2}])
        assert sorted(job.objective for job in ev.gather("ALL")) == [3, 6]


def test_importing_gridman_stays_light() -> None:
    code = (
        "import sys, gridman\n"
        "assert 'gridman.evaluator' not in sys.modules\n"
        "gridman.Evaluator\n"
        "heavy = [m for m in ('rich', 'mpi4py', 'multiprocessing', 'gridman.core.xp') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_ctrl_c_in_a_serial_job_leaves_a_consistent_evaluator() -> None:
    def interrupted(job: RunningJob) -> float:
        if job["x"] == 1:
            raise KeyboardInterrupt
        return 1.0

    ev = Evaluator.create(interrupted, method="serial")
    ev.submit([{"x": 0}, {"x": 1}, {"x": 2}])
    with pytest.raises(KeyboardInterrupt):
        ev.gather("ALL")
    assert ev.job(1).objective == "F_KeyboardInterrupt" and ev.job(1).failed
    ev.close()  # returns: nothing is left running
    assert ev.job(2).status is JobStatus.CANCELLED
    assert [job.id for job in ev.gather("ALL")] == [0, 1]


def test_info_shows_a_crashed_search_as_vanished(tmp_path: Path) -> None:
    from gridman.core.jobs import JobRecord, State, this_host, write_job
    from gridman.testing import make_project, run_cli
    from gridman.testing.grids import make_xp_folder

    root = make_project(tmp_path)
    folder = make_xp_folder(root / "outputs", "00c0ffee", state=None)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a search process that is gone
    record = JobRecord(sig="00c0ffee").with_new_attempt(
        "evaluator", State.RUNNING, host=this_host(), pid=proc.pid, started=time.time()
    )
    write_job(folder, record)
    result = run_cli(["info", "--sig", "00c0ffee"], root)
    assert result.exit_code == 1 and "VANISHED" in result.stdout, result.output  # a failed XP
