"""The evaluator's mpi method under real ranks: ``mpiexec -n 3 python script.py``.

These tests need mpi4py and an ``mpiexec`` next to the interpreter (``pip install
gridman[mpi]``). Without them they skip with the reason; with GRIDMAN_REQUIRE_MPI set (CI), a
missing runtime is a failure instead.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from gridman.testing import needs_mpi

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"


pytestmark = needs_mpi()

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from gridman.evaluator import Evaluator, callbacks

    MARKS = Path(sys.argv[3])

    def run(job):
        (MARKS / f"{job.id}-{os.getpid()}-{time.time_ns()}").touch()
        time.sleep(job.get("sleep", 0.0))
        kind = job["kind"]
        if kind == "raise":
            raise ValueError("bad configuration")
        if kind == "exit":
            sys.exit(2)
        if kind == "fail":
            return "F_diverged"
        if kind == "tuple":
            return 1.0, 2.0
        if kind == "dict":
            return {"objective": 7.0, "metadata": {"rank_pid": os.getpid()}}
        return float(job["x"])

    class Recorder(callbacks.Callback):
        def __init__(self):
            self.events = []
        def on_launch(self, job):
            self.events.append(["launch", job.id])
        def on_done(self, job):
            self.events.append(["done", job.id])

    def main(mode, log_dir):
        recorder = Recorder()
        options = {"callbacks": [recorder]}
        if log_dir != "-":
            options["log_dir"] = log_dir
        if mode == "serial":
            options.update(num_workers=1, progress_thread=False)
        kinds = ["float", "raise", "exit", "fail", "tuple", "dict"] + ["float"] * 6
        configs = [{"kind": k, "x": i, "sleep": 0.2 if i == 0 else 0.02}
                   for i, k in enumerate(kinds)]
        with Evaluator.create(run, method="mpi", method_kwargs=options) as ev:
            if mode == "crash":
                ev.submit(configs[:4])
                ev.gather("BATCH", size=1)
                raise RuntimeError("the search itself failed")
            ev.submit(configs)
            batch = ev.gather("BATCH", size=2)
            rest = ev.gather("ALL")
            csv_path = ev.dump_evals(log_dir=str(MARKS.parent))
            workers = ev.num_workers
        jobs = batch + rest
        print(json.dumps({
            "rank0": os.getpid(), "workers": workers, "batch": [j.id for j in batch],
            "jobs": {str(j.id): [j.objective, j.status.value, j.cached, j.sig,
                                 j.metadata.get("error"), j.metadata["timestamp_start"],
                                 j.metadata["timestamp_end"]] for j in jobs},
            "events": recorder.events, "csv": str(csv_path),
        }))

    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2])
    """
)


def _mpirun(
    tmp_path: Path, mode: str, log_dir: str, n: int = 3
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    command = [str(MPIEXEC), "-n", str(n), sys.executable, str(script), mode, log_dir, str(marks)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _marks(tmp_path: Path) -> list[tuple[int, int]]:
    names = os.listdir(tmp_path / "marks")
    return sorted((int(n.split("-")[0]), int(n.split("-")[1])) for n in names)


def test_mpi_ranks_evaluate_with_every_convention(tmp_path: Path) -> None:
    log_dir = str(tmp_path / "results")
    done = _mpirun(tmp_path, "main", log_dir)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    jobs: dict[str, list[Any]] = out["jobs"]
    assert out["workers"] == 2 and sorted(map(int, jobs)) == list(range(12))
    assert jobs["0"][:3] == [0.0, "DONE", False]
    assert jobs["1"][:2] == ["F_ValueError", "FAILED"] and "bad configuration" in jobs["1"][4]
    assert jobs["2"][:2] == ["F_SystemExit", "FAILED"]  # no exception escapes a worker rank
    assert jobs["3"][:2] == ["F_diverged", "FAILED"]
    assert jobs["4"][:2] == [[1.0, 2.0], "DONE"]  # a tuple (JSON makes it a list)
    assert jobs["5"][:2] == [7.0, "DONE"]
    # BATCH returned early (job 0 sleeps 0.2 s while the others take 0.02 s), ALL the rest
    assert 2 <= len(out["batch"]) < 12 and 0 not in out["batch"]
    # evaluations ran on the two worker ranks, never on rank 0
    pids = {pid for _, pid in _marks(tmp_path)}
    assert len(pids) == 2 and out["rank0"] not in pids
    events = out["events"]
    for job_id in range(12):
        assert events.index(["launch", job_id]) < events.index(["done", job_id])
    with open(out["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and rows[1]["objective_0"] == "F_ValueError"
    assert rows[4]["objective_0"] == "1.0" and rows[4]["objective_1"] == "2.0"
    assert rows[0]["sig"] == jobs["0"][3] and rows[0]["p:kind"] == "float"
    # the results are XPs: a second run of the whole MPI job evaluates nothing
    again = _mpirun(tmp_path, "main", log_dir)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)["jobs"]
    assert all(job[2] for job in second.values())  # cached
    assert {k: v[0] for k, v in second.items()} == {k: v[0] for k, v in jobs.items()}
    assert len(_marks(tmp_path)) == 12


def test_mpi_one_worker_is_strictly_serial(tmp_path: Path) -> None:
    done = _mpirun(tmp_path, "serial", "-")  # also: no progress thread (gather drives MPI)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["workers"] == 1
    assert len({pid for _, pid in _marks(tmp_path)}) == 1
    spans = sorted((job[5], job[6]) for job in out["jobs"].values())
    assert all(start >= end for (_, end), (start, _) in zip(spans, spans[1:]))


def test_a_failing_search_releases_the_worker_ranks(tmp_path: Path) -> None:
    start = time.monotonic()
    done = _mpirun(tmp_path, "crash", "-")
    assert time.monotonic() - start < 60  # no rank left waiting
    assert done.returncode != 0
    assert "the search itself failed" in done.stderr
