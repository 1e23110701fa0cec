"""SIGTERM and SIGHUP sent to a foreground ``gridman run`` only (what ``timeout``, systemd and
a closed SSH session send): handled as Ctrl-C is, never an orphaned XP. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from gridman.testing import make_project, read_json_file, run_cli, xp_folders
from gridman.testing.faults import pid_alive, start_gridman
from gridman.testing.grids import job_state, kill_group, latest_pid, wait_for


def stop(proc: subprocess.Popen[bytes], folder: Optional[Path]) -> None:
    """Leave nothing behind, whatever the test found: gridman's group, and the XP (in that
    group; an orphaned one too)."""
    if proc.poll() is None:
        kill_group(proc.pid)
        proc.wait()
    pid = latest_pid(folder) if folder is not None else None
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_to_gridman_run_stops_and_records_the_xp(tmp_path: Path, signum: int) -> None:
    project = make_project(tmp_path / "proj")
    log = tmp_path / "gridman.log"
    proc = start_gridman(["run", "--", "--sleep", "120"], project, log)
    folder: Optional[Path] = None
    try:
        folder = wait_for(lambda: next(iter(xp_folders(project)), None), "the XP folder")
        pid = wait_for(lambda: latest_pid(folder), "the XP's pid")
        wait_for(lambda: "sleeping" in log.read_text(encoding="utf8"), "the XP to sleep")
        os.kill(proc.pid, signum)  # gridman only: the XP does not get it from the sender
        code = proc.wait(timeout=60)
        alive = pid_alive(pid)
    finally:
        stop(proc, folder)
    output = log.read_text(encoding="utf8")
    # gridman ends of the same signal once the end is recorded: a shell says 128 + signum
    assert code == -signum, output
    assert not alive, "the XP outlived its gridman run"
    job = read_json_file(folder / "job.json")
    (attempt,) = job["attempts"]
    assert attempt["state"] == "CANCELLED" and job["state"] == "CANCELLED", job
    assert attempt["exit_code"] == -signum  # the XP got the signal passed on, and died of it
    assert attempt["ended"] is not None
    assert attempt["extra"]["stopped_by"] == signal.Signals(signum).name
    assert f"CANCELLED by {signal.Signals(signum).name}" in output
    # a later look settles nothing: the end is recorded, not VANISHED
    info = run_cli(["info", "--sig", folder.name, "--json"], project)
    assert info.exit_code == 0, info.output
    assert job_state(folder) == "CANCELLED"
    assert '"VANISHED"' not in info.stdout


def test_signal_while_the_xp_starts_is_not_lost(tmp_path: Path) -> None:
    """SIGTERM at the very start (the XP's process just created) still stops and records it."""
    project = make_project(tmp_path / "proj")
    log = tmp_path / "gridman.log"
    proc = start_gridman(["run", "--", "--sleep", "120"], project, log)
    folder: Optional[Path] = None
    try:
        folder = wait_for(lambda: next(iter(xp_folders(project)), None), "the XP folder",
                          period=0.005)  # fmt: skip
        pid = wait_for(lambda: latest_pid(folder), "the XP's pid", period=0.005)
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
        alive = pid_alive(pid)
    finally:
        stop(proc, folder)
    assert code == -signal.SIGTERM, log.read_text(encoding="utf8")
    assert not alive
    assert job_state(folder) == "CANCELLED"
