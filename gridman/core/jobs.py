"""Job state of an XP: ``job.json``, versioned, one record per attempt.

Every backend writes the same record: the latest attempt's backend, job id, state and exit code,
plus the history of attempts (each with its own log). Writes are atomic and fsync'd (losing job
state would lose results); read-modify-write happens under the XP's lock file.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from .fsutil import FORMAT_VERSION, atomic_write_json, file_lock, read_json

JOB_FILE = "job.json"
LOCK_FILE = ".job.lock"
RUN_LOCK = ".run.lock"
#: The project lock, in the XP root: every command that decides to start an XP (``gridman
#: grid``'s plan and commit, ``gridman run`` until its attempt is RUNNING) holds it meanwhile.
PROJECT_LOCK = ".gridman.lock"


class State(str, enum.Enum):
    """States an XP's latest attempt can be in; the same names on every backend."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    VANISHED = "VANISHED"  # the process disappeared without recording an end (reboot, kill -9)
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    UNKNOWN = "UNKNOWN"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self not in (State.PENDING, State.RUNNING, State.UNKNOWN)

    @property
    def failed(self) -> bool:
        return self.finished and self is not State.COMPLETED


@dataclass(frozen=True)
class Attempt:
    """One try at running an XP."""

    n: int
    backend: str
    state: State
    job_id: Optional[str] = None
    array_index: Optional[int] = None
    submitted: Optional[float] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    exit_code: Optional[int] = None
    host: Optional[str] = None
    pid: Optional[int] = None
    log: Optional[str] = None  # relative to the XP folder
    extra: dict[str, Any] = field(default_factory=dict)
    #: What tells the process ``pid`` from a later one that reuses its pid (see
    #: liveness.process_is): its start time (clock ticks after boot, /proc/<pid>/stat field
    #: 22) and the boot it started in. None in records written before gridman kept them.
    pid_start: Optional[int] = None
    boot_id: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        known: dict[str, Any] = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        known["state"] = _state(data.get("state"))
        known["extra"] = known.get("extra") or {}
        return cls(**known)


def _state(value: Any) -> State:
    try:
        return State(value)
    except ValueError:
        return State.UNKNOWN


@dataclass(frozen=True)
class JobRecord:
    """What ``job.json`` holds: the attempts of one XP, latest last."""

    sig: str
    attempts: tuple[Attempt, ...] = ()

    @property
    def latest(self) -> Optional[Attempt]:
        return self.attempts[-1] if self.attempts else None

    @property
    def state(self) -> Optional[State]:
        return self.latest.state if self.latest else None

    def with_latest(self, **changes: Any) -> JobRecord:
        assert self.latest is not None
        return replace(self, attempts=(*self.attempts[:-1], replace(self.latest, **changes)))

    def with_attempt(self, n: int, **changes: Any) -> JobRecord:
        """A copy with attempt ``n`` changed (unchanged when there is no such attempt)."""
        attempts = tuple(replace(a, **changes) if a.n == n else a for a in self.attempts)
        return replace(self, attempts=attempts)

    def with_new_attempt(self, backend: str, state: State, **fields: Any) -> JobRecord:
        n = len(self.attempts) + 1
        fields.setdefault("log", f"log/{n}.log")
        attempt = Attempt(n=n, backend=backend, state=state, **fields)
        return replace(self, attempts=(*self.attempts, attempt))

    def to_json(self) -> dict[str, Any]:
        latest = self.latest
        return {
            "version": FORMAT_VERSION,
            "sig": self.sig,
            "backend": latest.backend if latest else None,
            "job_id": latest.job_id if latest else None,
            "state": latest.state.value if latest else None,
            "attempts": [a.to_json() for a in self.attempts],
        }

    @classmethod
    def from_json(cls, data: Any, sig: str) -> JobRecord:
        if not isinstance(data, dict) or not isinstance(data.get("attempts"), list):
            raise ValueError("not a gridman job file")
        if int(data.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"job file version {data.get('version')} is newer than this gridman")
        attempts = tuple(Attempt.from_json(a) for a in data["attempts"] if isinstance(a, dict))
        return cls(sig=str(data.get("sig", sig)), attempts=attempts)


def read_job(folder: Path) -> Optional[JobRecord]:
    """The job record of the XP in ``folder``; None when it never ran.

    An unreadable file is reported as one attempt (numbered 0) in state FAILED, with the reason
    in ``extra["error"]``, rather than an exception: one bad file never breaks a command about
    other XPs.
    """
    where = os.fspath(folder)  # a string path: a grid reads (or fails to find) one per XP
    try:
        return JobRecord.from_json(read_json(os.path.join(where, JOB_FILE)),
                                   os.path.basename(where))  # fmt: skip
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        # Shown as FAILED with the reason: it never counts as running, and --retry replaces it.
        error = f"unreadable {JOB_FILE}: {exc}"
        broken = Attempt(n=0, backend="?", state=State.FAILED, extra={"error": error})
        return JobRecord(sig=os.path.basename(where), attempts=(broken,))


def write_job(folder: Path, record: JobRecord, durable: bool = True) -> None:
    """Replace ``job.json`` atomically; fsync'd unless ``durable`` is False."""
    atomic_write_json(folder / JOB_FILE, record.to_json(), fsync=durable)


def update_job(
    folder: Path, change: Callable[[JobRecord], JobRecord], durable: bool = True
) -> JobRecord:
    """Read-modify-write ``job.json`` under the XP's lock; returns the new record.

    ``durable=False`` skips the fsync for transitions a crash may lose without losing a result
    (PENDING, RUNNING): after a crash they read as a runner that is gone, and the XP is
    rescheduled. Ends of attempts are always durable.
    """
    with file_lock(folder / LOCK_FILE):
        record = read_job(folder)
        if record is None or (record.latest is not None and record.latest.n == 0):
            record = JobRecord(sig=folder.name)
        new = change(record)
        write_job(folder, new, durable)
        return new


def end_latest(folder: Path, state: State) -> JobRecord:
    """Record the XP's latest attempt as ended in ``state``, unless it has ended already."""

    def change(record: JobRecord) -> JobRecord:
        if record.latest is None or record.latest.state.finished:
            return record
        return record.with_latest(state=state, ended=now())

    return update_job(folder, change)


def this_host() -> str:
    import socket  # not at import time: most commands never ask

    return socket.gethostname()


def now() -> float:
    return time.time()


def pid_alive(pid: Optional[int]) -> bool:
    """Whether a process with this pid exists on this machine."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    # An orphan whose parent died is a zombie until init reaps it: it runs no more.
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"
