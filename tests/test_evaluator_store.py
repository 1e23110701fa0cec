"""Evaluator persistence: every configuration is an XP (argv.json, job.json, history.json) that
``gridman info --sig`` reads, and the cache answers an evaluated configuration without running
it again, within one evaluator and across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from gridman.core.jobs import State, read_job
from gridman.core.link import load_history
from gridman.core.signature import compute_sig
from gridman.errors import UsageError
from gridman.evaluator import Evaluator, RunningJob

GRIDMAN = Path(sys.executable).parent / "gridman"


def counted(job: RunningJob, marks: str) -> Any:
    """Leaves one file per evaluation in ``marks`` (processes and threads alike)."""
    Path(marks, f"{job['x']}-{time.time_ns()}-{os.getpid()}").touch()
    time.sleep(job.get("sleep", 0.0))
    if job["x"] == 3:
        raise KeyError("three")
    return {"objective": job["x"] / 2, "metadata": {"pid": os.getpid()}}


def runs(marks: Path) -> list[int]:
    return sorted(int(name.split("-")[0]) for name in os.listdir(marks))


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("method", ["serial", "thread", "process"])
def test_each_configuration_is_an_xp(tmp_path: Path, marks: Path, method: str) -> None:
    log_dir = tmp_path / "results"
    options = {"num_workers": 2, "log_dir": str(log_dir), "run_function_kwargs": {"marks": marks}}
    with Evaluator.create(counted, method=method, method_kwargs=options) as ev:
        ev.submit([{"x": 1, "name": "adam"}, {"x": 3, "name": "adam"}])
        jobs = {job.parameters["x"]: job for job in ev.gather("ALL")}
    good, bad = jobs[1], jobs[3]
    assert good.sig == compute_sig([("name", "adam"), ("x", 1)])
    folder = log_dir / "xps" / good.sig
    argv = json.loads((folder / "argv.json").read_text())
    assert argv["argv"] == ["name=adam", "x=1"]
    assert argv["delta"] == [["name", "adam"], ["x", 1]]
    record = read_job(folder)
    assert record is not None and record.state is State.COMPLETED
    latest = record.latest
    assert latest is not None and latest.backend == "evaluator" and latest.extra["objective"] == 0.5
    assert latest.pid == good.metadata["pid"] and latest.started and latest.ended
    history = json.loads((folder / "history.json").read_text())
    assert history[-1]["objective"] == 0.5 and history[-1]["status"] == "DONE"
    assert history[-1]["metadata"]["pid"] == good.metadata["pid"]
    bad_folder = log_dir / "xps" / (bad.sig or "")
    bad_record = read_job(bad_folder)
    assert bad_record is not None and bad_record.state is State.FAILED
    assert bad_record.latest is not None and bad_record.latest.log == "log/1.log"
    assert "KeyError: 'three'" in (bad_folder / "log" / "1.log").read_text()
    stored = load_history(bad_folder)[-1]
    assert stored["objective"] == "F_KeyError" and "traceback" not in stored["metadata"]


def test_gridman_info_reads_an_evaluation(tmp_path: Path, marks: Path) -> None:
    log_dir = tmp_path / "results"
    kwargs = {"marks": marks}
    with Evaluator.create(counted, log_dir=log_dir, run_function_kwargs=kwargs) as ev:
        ev.submit([{"x": 4, "opt": {"name": "sgd", "lr": 0.1}}])
        (job,) = ev.gather("ALL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    env["GRIDMAN_DIR"] = str(log_dir)
    done = subprocess.run(
        [str(GRIDMAN), "info", "--sig", str(job.sig), "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["sig"] == job.sig and info["state"] == "COMPLETED"
    assert info["argv"] == ['opt={"lr":0.1,"name":"sgd"}', "x=4"]
    assert info["last_metrics"]["objective"] == 2.0 and info["history_len"] == 1
    text = subprocess.run(
        [str(GRIDMAN), "info", "--sig", str(job.sig)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert text.returncode == 0 and "COMPLETED" in text.stdout


def test_cache_within_one_evaluator(tmp_path: Path, marks: Path) -> None:
    options = {"num_workers": 2, "log_dir": tmp_path / "r", "run_function_kwargs": {"marks": marks}}
    with Evaluator.create(counted, method="thread", method_kwargs=options) as ev:
        # the same configuration twice in flight: it runs once, the second waits for it
        ev.submit([{"x": 1, "sleep": 0.1}, {"x": 1, "sleep": 0.1}, {"x": 2}])
        first = sorted(ev.gather("ALL"), key=lambda job: job.id)
        again = ev.submit([{"x": 2}, {"x": 3}, {"x": 3}])  # 2 is known; 3 runs once
        second = sorted(ev.gather("ALL"), key=lambda job: job.id)
    assert runs(marks) == [1, 2, 3]
    assert [job.cached for job in first] == [False, True, False]
    assert first[0].objective == first[1].objective == 0.5
    assert again == [3, 4, 5]
    assert [(job.cached, job.objective) for job in second] == [
        (True, 1.0), (False, "F_KeyError"), (True, "F_KeyError"),
    ]  # fmt: skip
    assert second[0].metadata["cached"] is True and "cached" not in first[0].metadata


def test_cache_opt_out_and_retry_failed(tmp_path: Path, marks: Path) -> None:
    def make(**options: Any) -> Evaluator:
        kwargs = {"marks": marks}
        return Evaluator.create(
            counted, log_dir=tmp_path / "r", run_function_kwargs=kwargs, **options
        )

    with make() as ev:
        ev.submit([{"x": 1}, {"x": 3}])
        ev.gather("ALL")
    with make() as ev:
        ev.submit([{"x": 1}, {"x": 3}])
        cached = {job.parameters["x"]: job for job in ev.gather("ALL")}
    assert cached[1].cached and cached[3].cached and runs(marks) == [1, 3]
    assert "KeyError: 'three'" in cached[3].metadata["traceback"]  # back from the log
    with make(retry_failed=True) as ev:
        ev.submit([{"x": 1}, {"x": 3}])
        jobs = {job.parameters["x"]: job for job in ev.gather("ALL")}
    assert jobs[1].cached and not jobs[3].cached and runs(marks) == [1, 3, 3]
    with make(cache=False) as ev:
        ev.submit([{"x": 1}, {"x": 1}])
        assert not any(job.cached for job in ev.gather("ALL"))
    assert runs(marks) == [1, 1, 1, 3, 3]
    folder = tmp_path / "r" / "xps" / compute_sig([("x", 1)])
    record = read_job(folder)
    assert record is not None and [a.n for a in record.attempts] == [1, 2, 3]
    assert len(load_history(folder)) == 3  # one entry per evaluation, the last is the result


def test_cached_configurations_do_not_count_against_max_jobs(tmp_path: Path, marks: Path) -> None:
    options: dict[str, Any] = {"log_dir": tmp_path / "r", "run_function_kwargs": {"marks": marks}}
    with Evaluator.create(counted, **options) as ev:
        ev.submit([{"x": 1}, {"x": 2}])
        ev.gather("ALL")
    with Evaluator.create(counted, max_jobs=1, **options) as ev:
        ev.submit([{"x": 1}, {"x": 2}, {"x": 5}])  # two cached + one new: allowed
        assert len(ev.gather("ALL")) == 3


def test_parameters_must_be_data_with_persistence(tmp_path: Path) -> None:
    with Evaluator.create(lambda job: 1.0, log_dir=tmp_path) as ev:
        with pytest.raises(UsageError, match="cannot be part of a signature"):
            ev.submit([{"model": object()}])
    with Evaluator.create(lambda job: 1.0) as ev:  # without persistence anything goes
        ev.submit([{"model": object()}])
        assert ev.gather("ALL")[0].objective == 1.0


def test_running_job_knows_its_folder(tmp_path: Path) -> None:
    def checkpoint(job: RunningJob) -> float:
        assert job.folder is not None and job.sig == job.folder.name
        (job.folder / "model.txt").write_text("weights")
        return 1.0

    with Evaluator.create(checkpoint, method="thread", dir=tmp_path) as ev:
        ev.submit([{"x": 1}])
        (job,) = ev.gather("ALL")
    assert not job.failed
    assert (tmp_path / "xps" / str(job.sig) / "model.txt").read_text() == "weights"


SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from gridman.evaluator import Evaluator

    def run(job):
        Path(sys.argv[2], f"{job['x']}-{os.getpid()}-{time.time_ns()}").touch()
        time.sleep(float(sys.argv[3]))
        return job["x"] * 10

    if __name__ == "__main__":
        options = {"num_workers": 2, "log_dir": sys.argv[1]}
        with Evaluator.create(run, method="process", method_kwargs=options) as ev:
            ev.submit([{"x": x} for x in range(4)])
            jobs = ev.gather("ALL")
        print(json.dumps({str(j.parameters["x"]): [j.objective, j.cached] for j in jobs}))
    """
)


def _script(tmp_path: Path, marks: Path, sleep: float) -> list[str]:
    path = tmp_path / "search.py"
    path.write_text(SCRIPT)
    return [sys.executable, str(path), str(tmp_path / "results"), str(marks), str(sleep)]


def test_cache_across_two_processes(tmp_path: Path, marks: Path) -> None:
    command = _script(tmp_path, marks, 0.0)
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {str(x): [x * 10, False] for x in range(4)}
    second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {str(x): [x * 10, True] for x in range(4)}
    assert runs(marks) == [0, 1, 2, 3]  # the second process ran nothing


def test_two_searches_at_once_evaluate_each_configuration_once(tmp_path: Path, marks: Path) -> None:
    command = _script(tmp_path, marks, 0.3)
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert runs(marks) == [0, 1, 2, 3]  # each configuration ran in one process only
    for x in range(4):
        got = [out[str(x)] for out in outputs]
        assert [objective for objective, _ in got] == [x * 10, x * 10]
        assert sorted(cached for _, cached in got) == [False, True]
