"""When an attempt ends (completed, failed, Ctrl-C, SIGTERM), ``history.json`` alone holds
every entry: Dora's users and their scripts read that file. Real ``gridman run`` processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from gridman.core.link import HISTORY, load_history
from gridman.testing import make_project, read_json_file, run_cli, xp_folders
from gridman.testing.faults import pid_alive, start_gridman
from gridman.testing.grids import latest_pid, wait_for


def snapshot_epochs(folder: Path) -> list[int]:
    assert (folder / HISTORY).exists(), "no history.json"
    return [h["epoch"] for h in read_json_file(folder / HISTORY)]


@pytest.mark.parametrize("epochs", [10, 100, 200])
def test_history_json_is_whole_after_a_completed_run(project: Path, epochs: int) -> None:
    result = run_cli(["run", "--", "--epochs", str(epochs)], project)
    assert result.exit_code == 0, result.output
    (folder,) = xp_folders(project)
    assert snapshot_epochs(folder) == list(range(epochs))
    assert load_history(folder) == read_json_file(folder / HISTORY)


def test_history_json_is_whole_after_a_failed_run(project: Path) -> None:
    result = run_cli(["run", "--", "--epochs", "100", "--fail"], project)
    assert result.exit_code == 1
    (folder,) = xp_folders(project)
    assert read_json_file(folder / "job.json")["state"] == "FAILED"
    assert snapshot_epochs(folder) == list(range(100))


def test_history_json_is_whole_without_any_push(project: Path) -> None:
    result = run_cli(["run", "--", "--epochs", "0"], project)
    assert result.exit_code == 0, result.output
    (folder,) = xp_folders(project)
    assert snapshot_epochs(folder) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_history_json_is_whole_after_a_signal(tmp_path: Path, signum: int) -> None:
    """The signal reaches the whole process group of ``gridman run``: Ctrl-C in a terminal,
    SIGTERM from a scheduler or ``kill -- -PGID``; the XP is sleeping after 100 pushes."""
    project = make_project(tmp_path / "proj")
    proc = start_gridman(["run", "--", "--epochs", "100", "--sleep", "60"], project,
                         tmp_path / "gridman.log")  # fmt: skip
    try:
        folder = wait_for(lambda: next(iter(xp_folders(project)), None), "the XP folder")
        wait_for(lambda: len(load_history(folder)) == 100, "100 pushes", timeout=60)
        pid = wait_for(lambda: latest_pid(folder), "the XP's pid")
        os.killpg(proc.pid, signum)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "gridman.log").read_text(encoding="utf8")
    assert code == (130 if signum == signal.SIGINT else -signal.SIGTERM), log
    wait_for(lambda: not pid_alive(pid), "the XP's process to end", timeout=30)
    assert snapshot_epochs(folder) == list(range(100))
    assert load_history(folder) == read_json_file(folder / HISTORY)
