"""A pid reused by an unrelated process (after a reboot, or after enough forks): a RUNNING
record whose pid now names someone else's process is settled, never trusted, and that process
is never signalled. The unrelated process is a real ``sleep``; the record is the one a runner
would have left, with another start time or boot id."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from gridman.core.jobs import JobRecord, State, read_job, this_host, write_job
from gridman.core.liveness import boot_id, process_is, signal_attempt, start_time
from gridman.testing import run_cli, xp_folders
from gridman.testing.faults import pid_alive, start_gridman
from gridman.testing.grids import (
    kill_group,
    latest_pid,
    make_grid_project,
    stop_pool,
    wait_for,
)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    root = make_grid_project(tmp_path / "proj", {"g": "launcher(seed=1)"})
    yield root
    stop_pool(root / "outputs")


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process leading its own group: what -C would hit through a reused pid."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    kill_group(proc.pid)
    proc.wait()


def the_xp(project: Path) -> Path:
    """The grid's one XP, run to the end on the inline backend (job.json and folder real)."""
    result = run_cli(["grid", "g", "--backend", "inline", "--no-monitor"], project)
    assert result.exit_code == 0, result.output
    (folder,) = xp_folders(project)
    return folder


def claim_pid(folder: Path, pid: int, **identity: Any) -> None:
    """Record a new RUNNING attempt with ``pid``, as a runner that died long ago left it
    (its own session: -C would signal the whole group)."""
    record = read_job(folder) or JobRecord(sig=folder.name)
    record = record.with_new_attempt(
        "local", State.RUNNING, job_id="old.json", submitted=1.0, started=1.0,
        host=this_host(), pid=pid, extra={"session": True}, **identity,
    )  # fmt: skip
    write_job(folder, record)


def info_state(project: Path, folder: Path) -> Optional[str]:
    result = run_cli(["info", "--sig", folder.name, "--json"], project)
    assert result.exit_code in (0, 1), result.output  # 1: it shows a failed (VANISHED) XP
    state: Optional[str] = json.loads(result.stdout)["state"]
    return state


@pytest.mark.parametrize("other", ["start time", "boot id"])
def test_reused_pid_is_settled_and_never_signalled(
    project: Path, stranger: subprocess.Popen[bytes], other: str
) -> None:
    pid = stranger.pid
    started = wait_for(lambda: start_time(pid), "the stranger's start time")
    identity = {"pid_start": started - 100, "boot_id": boot_id()}
    if other == "boot id":
        identity = {"pid_start": started, "boot_id": "0" * 8 + (boot_id() or "")[8:]}
    folder = the_xp(project)
    claim_pid(folder, pid, **identity)
    latest = read_job(folder).latest  # type: ignore[union-attr]
    assert latest is not None and not process_is(latest)
    assert not signal_attempt(latest, signal.SIGTERM)
    assert info_state(project, folder) == "VANISHED"  # not RUNNING forever
    # -C finds nothing to cancel: the stranger and its group are left alone
    result = run_cli(["grid", "g", "-C", "--no-monitor"], project)
    assert result.exit_code == 1, result.output  # it worked; the XP is a failed one
    assert stranger.poll() is None and pid_alive(pid)
    assert info_state(project, folder) == "VANISHED"


def test_the_same_process_is_trusted_and_signalled(
    project: Path, stranger: subprocess.Popen[bytes]
) -> None:
    """The recorded identity matches: RUNNING holds, and a signal reaches its group."""
    pid = stranger.pid
    started = wait_for(lambda: start_time(pid), "the stranger's start time")
    folder = the_xp(project)
    claim_pid(folder, pid, pid_start=started, boot_id=boot_id())
    assert info_state(project, folder) == "RUNNING"
    latest = read_job(folder).latest  # type: ignore[union-attr]
    assert latest is not None and process_is(latest)
    assert signal_attempt(latest, signal.SIGTERM)
    assert stranger.wait(timeout=10) == -signal.SIGTERM


def test_old_records_keep_trusting_the_pid(
    project: Path, stranger: subprocess.Popen[bytes]
) -> None:
    """A record written before gridman kept the identity: the pid alone, as it always was."""
    folder = the_xp(project)
    claim_pid(folder, stranger.pid)
    data = json.loads((folder / "job.json").read_text(encoding="utf8"))
    for attempt in data["attempts"]:  # exactly what an older gridman wrote
        del attempt["pid_start"], attempt["boot_id"]
    (folder / "job.json").write_text(json.dumps(data), encoding="utf8")
    assert info_state(project, folder) == "RUNNING"
    latest = read_job(folder).latest  # type: ignore[union-attr]
    assert latest is not None and process_is(latest)


def test_run_records_what_identifies_its_process(tmp_path: Path) -> None:
    project = make_grid_project(tmp_path / "proj")
    proc = start_gridman(["run", "--", "--sleep", "60"], project, tmp_path / "gridman.log")
    try:
        folder = wait_for(lambda: next(iter(xp_folders(project)), None), "the XP folder")
        pid = wait_for(lambda: latest_pid(folder), "the XP's pid")
        latest = read_job(folder).latest  # type: ignore[union-attr]
        assert latest is not None
        assert latest.pid_start == start_time(pid) and latest.boot_id == boot_id()
        assert boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert process_is(latest)
    finally:
        kill_group(proc.pid)
        proc.wait()
