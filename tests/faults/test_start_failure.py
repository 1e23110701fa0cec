"""An attempt whose process cannot start, or whose log cannot be written.

- A missing interpreter (ENOENT) or an argument over Linux's 128 KiB per-argument limit (E2BIG):
  the exec really fails; the attempt is recorded FAILED with the reason (in its log and in
  ``gridman info``), never VANISHED, and a later plan keeps it unless ``--retry``.
- A full disk under a foreground run (a real 1 MiB tmpfs holding the XP root): the XP's output
  keeps reaching the console, the run completes, and the log failure is said once.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridman.backends.attempt import AttemptSpec, run_guarded
from gridman.backends.base import LaunchContext
from gridman.core.jobs import JobRecord, State, now, read_job, this_host, update_job
from gridman.testing import make_project, read_json_file, run_cli, xp_folders
from gridman.testing.faults import needs_root, small_tmpfs, start_gridman
from gridman.testing.grids import attempts_of, stop_pool, wait_states, write_grid

MISSING = "/nonexistent/bin/python3"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    root = make_project(tmp_path / "proj")
    write_grid(root, "g", "launcher(seed=3)")
    yield root
    stop_pool(root / "outputs")


def test_missing_interpreter_fails_the_run_with_its_reason(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gridman run`` starts the XP with this process's interpreter: here one that is gone."""
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", MISSING)
        result = run_cli(["run", "--", "--seed", "3"], project)
    assert result.exit_code == 1, result.output  # the XP failed; not a crash (3)
    assert "cannot start the XP's process" in result.stderr and MISSING in result.stderr
    (folder,) = xp_folders(project)
    (attempt,) = attempts_of(folder)
    assert attempt["state"] == "FAILED" and attempt["exit_code"] is None
    assert MISSING in attempt["extra"]["error"] and attempt["ended"]
    assert MISSING in (folder / "log" / "1.log").read_text(encoding="utf8")
    shown = run_cli(["info", "--sig", folder.name], project)
    assert shown.exit_code == 1 and "FAILED" in shown.stdout, shown.output
    assert "No such file or directory" in shown.stdout and MISSING in shown.stdout
    # a plan keeps it (no VANISHED, no resubmission); --retry runs it again, and it completes
    kept = run_cli(["grid", "g", "--no-monitor"], project)
    assert "1 keep" in kept.stdout + kept.stderr, kept.output
    assert len(attempts_of(folder)) == 1
    retried = run_cli(["grid", "g", "--retry", "--no-monitor"], project)
    assert "1 submit" in retried.stdout + retried.stderr, retried.output
    wait_states([folder], {"COMPLETED"})


def queued_spec(project: Path, python: str, argv: list[str]) -> AttemptSpec:
    """An attempt queued on the local pool as ``gridman grid`` queues it (PENDING, job id),
    whose command line starts ``python``; the pool's thread runs it with run_guarded."""
    ctx = LaunchContext(root=project, dir=project / "outputs", main_spec="train.py",
                        env=dict(os.environ), python=python)  # fmt: skip
    folder = project / "outputs" / "xps" / "feedc0de"
    folder.mkdir(parents=True)
    job = "00000000000000000001-feedc0de.json"

    def queued(record: JobRecord) -> JobRecord:
        return record.with_new_attempt("local", State.PENDING, job_id=job, submitted=now(),
                                       host=this_host())  # fmt: skip

    update_job(folder, queued)
    return AttemptSpec.for_xp(ctx, folder.name, folder, argv, "local", job_id=job)


@pytest.mark.parametrize(
    ("python", "argv", "reason"),
    [
        (MISSING, [], "No such file or directory"),
        (sys.executable, ["--name", "n" * 200 * 1024], "over Linux's limit"),
    ],
    ids=["ENOENT", "E2BIG"],
)
def test_pool_attempt_that_cannot_start_is_failed_not_vanished(
    project: Path, python: str, argv: list[str], reason: str
) -> None:
    spec = queued_spec(project, python, argv)
    outcome = run_guarded(spec)  # what the pool daemon's thread does with a claimed entry
    assert outcome.state == "FAILED" and not outcome.busy, outcome.text()
    record = read_job(spec.folder)
    assert record is not None and record.latest is not None
    (attempt,) = record.attempts  # the queued attempt itself, taken over
    assert attempt.state is State.FAILED and reason in attempt.extra["error"]
    assert attempt.started is not None and attempt.ended is not None
    assert reason in (spec.folder / "log" / "1.log").read_text(encoding="utf8")
    info = run_cli(["info", "--sig", spec.folder.name, "--json"], project)
    assert info.exit_code == 1, info.output
    assert json.loads(info.stdout)["state"] == "FAILED"  # a poll does not make it VANISHED


#: A main that prints ``--lines`` lines of 1 KiB, the disk holding the XP root full meanwhile.
FLOOD_SOURCE = '''\
"""Training script written by tests/faults/test_start_failure.py: output on a full disk."""

import argparse
import time

import gridman
from gridman.testing.faults import fill_disk

parser = argparse.ArgumentParser()
parser.add_argument("--lines", type=int, default=2048)


@gridman.argparse_main(parser=parser, dir="outputs", exclude=["lines"])
def main():
    xp = gridman.get_xp()
    print("before the fill", flush=True)
    time.sleep(0.3)  # the runner logs it before the disk fills
    filler = fill_disk(xp.folder.parent)
    try:
        for i in range(xp.cfg.lines):
            print(f"line {i:05d} " + "x" * 1013, flush=True)
    finally:
        filler.unlink()  # the disk is full while the XP prints, not when its end is recorded
    print("all printed", flush=True)


if __name__ == "__main__":
    main()
'''


@needs_root()
def test_full_disk_under_the_log_keeps_the_console_going(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        project = make_project(tmp_path / "proj", main_source=FLOOD_SOURCE,
                               settings={"dir": str(disk / "outputs")})  # fmt: skip
        console = tmp_path / "console.log"
        proc = start_gridman(["run"], project, console)
        try:
            code = proc.wait(timeout=120)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("gridman run blocked: its output pump stopped") from None
        said = console.read_text(encoding="utf8")
        (folder,) = (disk / "outputs" / "xps").iterdir()
        job = read_json_file(folder / "job.json")
        log = (folder / "log" / "1.log").read_text(encoding="utf8", errors="replace")
    assert code == 0, said[-2000:]
    printed = [x for x in said.splitlines() if x.startswith("line ")]
    assert len(printed) == 2048 and printed[-1].startswith("line 02047")  # 2 MiB, in order
    assert "all printed" in said
    assert said.count("cannot write the log") == 1, said[-2000:]
    assert job["state"] == "COMPLETED"
    (attempt,) = job["attempts"]
    assert "No space left on device" in attempt["extra"]["log_error"]
    assert log.startswith("before the fill")  # what came before the disk filled is kept
