"""The evaluator's ``slurm`` method on the real local cluster (see tests/test_slurm.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gridman.evaluator import Evaluator
from gridman.testing.slurm import eval_raises, eval_square, needs_slurm, queue_states, wait_until

pytestmark = needs_slurm()


def test_a_batch_is_one_job_array_with_every_result(tmp_path: Path) -> None:
    with Evaluator.create(eval_square, method="slurm", num_workers=8, log_dir=tmp_path,
                          slurm={"time": 5}) as ev:  # fmt: skip
        ev.submit([{"x": x} for x in range(5)])
        jobs = ev.gather("ALL")
        assert sorted(j.objective for j in jobs) == [0.0, 1.0, 4.0, 9.0, 16.0]
        assert ev._backend.sbatch_calls == 1  # type: ignore[attr-defined]
        scripts = list((tmp_path / ".slurm" / "jobs").glob("*_submission.sh"))
        assert len(scripts) == 1 and "--array=0-4%" in scripts[0].read_text()
    # persisted: a second evaluator answers from disk, submitting nothing
    with Evaluator.create(eval_square, method="slurm", log_dir=tmp_path) as ev:
        ev.submit([{"x": 3}])
        (job,) = ev.gather("ALL")
        assert job.objective == 9.0 and ev._backend.sbatch_calls == 0  # type: ignore[attr-defined]


def test_a_raising_run_function_fails_its_job_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no log_dir: submitit's files go to ./.gridman-evaluator
    with Evaluator.create(eval_raises, method="slurm", num_workers=2,
                          slurm={"time": 5}) as ev:  # fmt: skip
        ev.submit([{"x": 1}])
        (job,) = ev.gather("ALL")
    assert job.objective == "F_ValueError" and "bad x 1" in job.metadata["error"]


def test_a_job_slurm_ends_fails_with_its_state(tmp_path: Path) -> None:
    with Evaluator.create(eval_square, method="slurm", num_workers=2, log_dir=tmp_path,
                          slurm={"time": 5}) as ev:  # fmt: skip
        ev.submit([{"x": 2, "sleep": 300}, {"x": 1}])
        sleeper = wait_until(  # array task 0: the configuration that sleeps
            lambda: [i for i, s in queue_states("gridman-eval-").items()
                     if s == "RUNNING" and i.endswith("_0")],
            "the sleeping job to run",
        )  # fmt: skip
        subprocess.run(["scancel", sleeper[0]], check=True, timeout=30)
        jobs = sorted(ev.gather("ALL"), key=lambda j: j.id)
    assert [j.objective for j in jobs] == ["F_CANCELLED", 1.0]


def test_bad_resources_are_reported_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Evaluator.create(eval_square, method="slurm", slurm={"partition": "nope"}) as ev:
        ev.submit([{"x": 1}])
        (job,) = ev.gather("ALL")
    assert job.objective == "F_SlurmError" and "partition" in job.metadata["error"]
