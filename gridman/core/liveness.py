"""What an XP's folder says about the process of its current attempt, read without a backend.

A runner holds the XP's run lock for the whole attempt and its worker writes a status file
(start, exit code); ``gridman grid -C`` leaves a cancel marker. From these, any command can tell
whether a RUNNING attempt on this host still has a process, and settle it when it has not.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

from .fsutil import file_lock, read_json
from .jobs import RUN_LOCK, JobRecord, State, now, pid_alive, read_job, this_host, update_job


def is_running_here(folder: Path) -> bool:
    """True when a runner on this machine holds the XP's run lock."""
    with file_lock(folder / RUN_LOCK, blocking=False) as got:
        return not got


CANCEL_MARKER = ".cancel"


def status_file(folder: Path, attempt: int) -> Path:
    """Where the worker of an attempt records its own start and exit status."""
    return folder / "log" / f"{attempt}.status.json"


def worker_status(folder: Path, attempt: int) -> dict[str, Any]:
    try:
        data = read_json(status_file(folder, attempt))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cancel_requested(folder: Path) -> bool:
    """Whether ``gridman grid -C`` asked this XP's current attempt to stop."""
    return (folder / CANCEL_MARKER).exists()


def request_cancel(folder: Path) -> None:
    """Ask the runner of this XP to record its attempt as CANCELLED when it ends."""
    (folder / CANCEL_MARKER).touch()


def clear_cancel(folder: Path) -> None:
    """Forget a cancel request (before a new submission)."""
    with contextlib.suppress(FileNotFoundError):
        (folder / CANCEL_MARKER).unlink()


def mark_vanished(folder: Path) -> Optional[JobRecord]:
    """Record VANISHED for an attempt that says RUNNING on this host but has no runner left.

    A runner holds the run lock for the whole attempt, so RUNNING with a free lock and no live
    child process means it died without recording an end (kill -9, reboot).
    """
    record = read_job(folder)
    latest = record.latest if record else None
    if latest is None or latest.state is not State.RUNNING or latest.host != this_host():
        return record
    if is_running_here(folder) or pid_alive(latest.pid):
        return record

    said = worker_status(folder, latest.n)

    def vanish(r: JobRecord) -> JobRecord:
        if r.latest is None or r.latest.state is not State.RUNNING:
            return r
        code = said.get("exit_code")
        if isinstance(code, int):
            # The runner died but the XP itself recorded how it ended.
            state = State.COMPLETED if code == 0 else State.FAILED
            return r.with_latest(state=state, exit_code=code, ended=said.get("ended", now()))
        return r.with_latest(state=State.VANISHED, ended=now())

    return update_job(folder, vanish)
