"""What an XP's folder says about the process of its current attempt, read without a backend.

A runner holds the XP's run lock for the whole attempt and its worker writes a status file
(start, exit code); ``gridman grid -C`` leaves a cancel marker. From these, any command can tell
whether a RUNNING attempt on this host still has a process, and settle it when it has not.

A pid alone does not name a process for long: after a reboot (or enough forks) another process
gets it. The runner records the process's start time and the boot id with its pid;
:func:`process_is` trusts a pid only when they still match, and :func:`signal_attempt` signals
only then, so that ``-C`` never reaches an unrelated process that inherited the pid.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Optional

from .fsutil import file_lock, read_json
from .jobs import (
    RUN_LOCK,
    Attempt,
    JobRecord,
    State,
    now,
    pid_alive,
    read_job,
    this_host,
    update_job,
)


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


_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_boot_id: list[Optional[str]] = []  # read once per process: it changes only with a reboot


def boot_id() -> Optional[str]:
    """This boot's id (Linux); None where the kernel does not say."""
    if not _boot_id:
        try:
            with open(_BOOT_ID, encoding="ascii") as handle:
                _boot_id.append(handle.read().strip() or None)
        except OSError:
            _boot_id.append(None)
    return _boot_id[0]


def start_time(pid: int) -> Optional[int]:
    """When process ``pid`` started, in clock ticks after boot (/proc/<pid>/stat field 22);
    None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        # The command name (field 2) may hold spaces and parentheses: count after the last ')'.
        return int(stat[stat.rfind(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_identity(pid: int) -> dict[str, Any]:
    """The fields of an :class:`Attempt` that identify process ``pid`` (pid_start, boot_id)."""
    return {"pid_start": start_time(pid), "boot_id": boot_id()}


def process_is(attempt: Attempt) -> bool:
    """Whether the attempt's process still runs here and is THAT process.

    True when its pid is alive (not a zombie) on this host and, where the attempt recorded
    them, the start time and the boot id match; a record from before gridman kept them is
    trusted on its pid alone, as it always was. A process on another host is not here: False.
    """
    pid = attempt.pid
    if not isinstance(pid, int) or pid <= 0 or attempt.host not in (None, this_host()):
        return False
    if not pid_alive(pid):
        return False
    if attempt.boot_id is not None and boot_id() not in (None, attempt.boot_id):
        return False  # recorded before a reboot: this pid is someone else's now
    # A recorded start time was read from /proc: it is there to read again (None: just ended).
    return attempt.pid_start is None or start_time(pid) == attempt.pid_start


def signal_attempt(attempt: Attempt, signum: int, group: Optional[bool] = None) -> bool:
    """Send ``signum`` to the attempt's process, only while it is still that process
    (:func:`process_is`); True when sent.

    ``group`` (default: whether the runner gave the XP its own session, ``extra["session"]``)
    signals its whole process group: the XP and everything it started. While the leader is
    that process its group id cannot belong to anyone else.
    """
    if not process_is(attempt):
        return False
    assert attempt.pid is not None
    whole = bool(attempt.extra.get("session")) if group is None else group
    try:
        if whole:
            os.killpg(attempt.pid, signum)
        else:
            os.kill(attempt.pid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def mark_vanished(folder: Path) -> Optional[JobRecord]:
    """Record VANISHED for an attempt that says RUNNING on this host but has no runner left.

    A runner holds the run lock for the whole attempt, so RUNNING with a free lock and no live
    child process (or a pid that now belongs to another process) means it died without
    recording an end (kill -9, reboot).
    """
    record = read_job(folder)
    latest = record.latest if record else None
    if latest is None or latest.state is not State.RUNNING or latest.host != this_host():
        return record
    if is_running_here(folder) or process_is(latest):
        return record

    said = worker_status(folder, latest.n)
    seen = (latest.n, latest.pid, latest.started)

    def vanish(r: JobRecord) -> JobRecord:
        now_latest = r.latest
        if now_latest is None or now_latest.state is not State.RUNNING:
            return r
        if (now_latest.n, now_latest.pid, now_latest.started) != seen:
            # Another runner started an attempt since the checks above: it is not the one
            # found dead (it holds the run lock now; the next poll looks at it).
            return r
        code = said.get("exit_code")
        if isinstance(code, int):
            # The runner died but the XP itself recorded how it ended.
            state = State.COMPLETED if code == 0 else State.FAILED
            return r.with_latest(state=state, exit_code=code, ended=said.get("ended", now()))
        return r.with_latest(state=State.VANISHED, ended=now())

    return update_job(folder, vanish)
