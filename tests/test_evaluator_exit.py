"""A search script that never closes its evaluator must still exit (issue 14, case 2).

DeepHyper's own examples create evaluators without ``with``. Before the fix, about one run in
six of such a script hung at exit with the process method: multiprocessing's exit handler ran
before gridman's, terminated the worker processes, the pool's thread replaced them, and the
handler then joined the replacements forever. A script that exits with jobs still running
waited for them (thread, mpi) instead of exiting.

Each test runs a real script, many times and concurrently (the load widens the race), each
run with a timeout: every run must print its last line and exit with 0 within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gridman.testing import needs_mpi

RUNS = 20
TIMEOUT = 20.0  # seconds: a run that takes this long hung
FAST = 10.0  # seconds: what "exits at once" allows, on a loaded machine
MPIEXEC = Path(sys.executable).parent / "mpiexec"

SCRIPT = textwrap.dedent(
    """
    import gc, sys, time
    from gridman.evaluator import Evaluator

    def run(job):
        time.sleep(job["sleep"])
        return job["x"]

    def search(method, options, mode):
        ev = Evaluator.create(run, method=method, method_kwargs=options)
        if mode == "running":  # two short jobs, the others far longer than the timeout
            ev.submit([{"x": i, "sleep": 0.2 if i < 2 else 600.0} for i in range(6)])
            assert ev.gather("BATCH", size=1)
            return ev
        ev.submit([{"x": i, "sleep": 0.01} for i in range(8)])
        assert sorted(job.objective for job in ev.gather("ALL")) == list(range(8))
        return ev if mode == "done" else None  # "dropped": garbage, never closed

    if __name__ == "__main__":
        method, workers, start, mode = sys.argv[1:5]
        options = {} if method == "mpi" else {"num_workers": int(workers)}
        if start != "-":
            options["start_method"] = start
        kept = search(method, options, mode)
        gc.collect()
        print("search over", flush=True)
    """
)


def _run_once(command: list[str]) -> tuple[int, float, str]:
    """(exit code or -1 for a hang, seconds, output) of one run; a hung run is killed."""
    start = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, time.monotonic() - start, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its workers, mpiexec's ranks, too
        out, _ = proc.communicate()
        return -1, time.monotonic() - start, out


def _run_many(command: list[str], runs: int = RUNS, parallel: int = 4) -> None:
    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(_run_once, [command] * runs))
    hangs = sum(1 for code, _, _ in results if code == -1)
    bad = [(code, round(took, 1), out[-2000:]) for code, took, out in results
           if code != 0 or took > FAST or "search over" not in out]  # fmt: skip
    assert not bad, f"{hangs} of {runs} runs hung; failures: {bad[:2]}"


# A serial job runs inside gather: nothing is ever left running at exit ("running" is moot).
CASES = [
    (method, workers, start, mode)
    for method, workers, start in (
        ("serial", 1, "-"), ("thread", 4, "-"), ("process", 8, "fork"), ("process", 2, "spawn"))
    for mode in ("done", "running", "dropped")
    if not (method == "serial" and mode == "running")
]  # fmt: skip


@pytest.mark.parametrize(("method", "workers", "start", "mode"), CASES)
def test_an_unclosed_evaluator_exits(
    tmp_path: Path, method: str, workers: int, start: str, mode: str
) -> None:
    """done: every job gathered; running: jobs of 10 minutes still running at exit;
    dropped: the evaluator was garbage collected, never closed (its pool lives on)."""
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    runs = RUNS if start != "spawn" else RUNS // 2  # spawn: slower to start
    _run_many([sys.executable, str(script), method, str(workers), start, mode], runs)


@needs_mpi()
@pytest.mark.parametrize("mode", ["done", "running"])
def test_an_unclosed_mpi_evaluator_exits(tmp_path: Path, mode: str) -> None:
    """Rank 0 releases the worker ranks at exit; one busy with a job stops it."""
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    command = [str(MPIEXEC), "-n", "3", sys.executable, str(script), "mpi", "0", "-", mode]
    _run_many(command, parallel=2)
