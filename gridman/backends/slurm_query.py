"""Slurm's view of our jobs, with as little load on the controller as possible.

One ``squeue`` call per poll covers every live job of the user (``-r -t all``: array tasks one per
line, and jobs that ended less than ``MinJobAge`` ago); ``sacct`` is asked only about jobs that
left the queue, and what it says about finished jobs never changes, so it is cached on disk in
``<dir>/.slurm/state.json`` and shared by every gridman command of the project (as is the squeue
snapshot, for ``cache_s`` seconds). A cluster without accounting (``sacct`` fails) is remembered
as such; states then come from squeue and the status file the job writes itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import atomic_write_json, file_lock, read_json
from ..core.jobs import State
from ..errors import GridmanError

STATE_FILE = "state.json"
_SACCT_CHUNK = 400  # job ids per sacct call: keeps the command line short
_CACHE_LIMIT = 20000  # finished jobs remembered

#: Slurm job states (squeue and sacct spell them the same) to gridman's.
SLURM_STATES: dict[str, State] = {
    "PENDING": State.PENDING, "CONFIGURING": State.PENDING, "REQUEUED": State.PENDING,
    "REQUEUE_FED": State.PENDING, "REQUEUE_HOLD": State.PENDING, "RESV_DEL_HOLD": State.PENDING,
    "RUNNING": State.RUNNING, "COMPLETING": State.RUNNING, "SUSPENDED": State.RUNNING,
    "STAGE_OUT": State.RUNNING, "SIGNALING": State.RUNNING, "RESIZING": State.RUNNING,
    "STOPPED": State.RUNNING,
    "COMPLETED": State.COMPLETED, "FAILED": State.FAILED, "SPECIAL_EXIT": State.FAILED,
    "CANCELLED": State.CANCELLED, "REVOKED": State.CANCELLED, "TIMEOUT": State.TIMEOUT,
    "DEADLINE": State.TIMEOUT, "PREEMPTED": State.PREEMPTED,
    "OUT_OF_MEMORY": State.OUT_OF_MEMORY, "NODE_FAIL": State.NODE_FAIL,
    "BOOT_FAIL": State.NODE_FAIL,
}  # fmt: skip


class SlurmError(GridmanError):
    """A Slurm command failed (sbatch, squeue, scancel ...): bad resources or a cluster that
    does not answer, exit status 2 as for any bad input (3 is kept for gridman's own bugs)."""


def map_state(text: str) -> State:
    """gridman's state for Slurm's (``CANCELLED by 0`` and ``COMPLETED+`` included)."""
    word = text.strip().split(" ", 1)[0].rstrip("+")
    return SLURM_STATES.get(word, State.UNKNOWN)


def parse_exit_code(text: str) -> Optional[int]:
    """sacct's ``code:signal``; a signal gives its negated number, as Python's subprocess does."""
    code, _, signal = text.strip().partition(":")
    try:
        value, sig = int(code), int(signal or 0)
    except ValueError:
        return None
    return -sig if sig and not value else value


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says about one job or array task."""

    job_id: str  # "123" or "123_4"
    state: State
    raw: str  # Slurm's own word, for `info`
    node: Optional[str] = None
    name: Optional[str] = None
    exit_code: Optional[int] = None
    reason: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobInfo:
        return cls(**{**data, "state": State(data["state"])})


def run_slurm(argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command (never through a shell); a missing command is a clear error."""
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise SlurmError(
            f"{argv[0]} not found: this machine is not a Slurm client",
            "run on a Slurm login node, or use --backend local",
        ) from None
    except subprocess.TimeoutExpired:
        raise SlurmError(
            f"{argv[0]} did not answer in {timeout:.0f} s", "is slurmctld up? (sinfo)"
        ) from None


def squeue(uid: Optional[int] = None) -> dict[str, JobInfo]:
    """Every job of the user the controller still knows, by job id (array tasks expanded)."""
    user = str(os.getuid() if uid is None else uid)
    argv = ["squeue", "-h", "-r", "-t", "all", "-u", user, "-o", "%i|%T|%N|%j|%r"]
    done = run_slurm(argv)
    if done.returncode != 0:
        raise SlurmError(f"squeue failed: {done.stderr.strip() or done.returncode}",
                         "is slurmctld up? (sinfo)")  # fmt: skip
    jobs: dict[str, JobInfo] = {}
    for line in done.stdout.splitlines():
        parts = line.split("|", 4)
        if len(parts) != 5:
            continue
        job_id, raw, node, name, reason = (p.strip() for p in parts)
        jobs[job_id] = JobInfo(job_id, map_state(raw), raw, node or None, name, None,
                               reason if reason not in ("None", "") else None)  # fmt: skip
    return jobs


def sacct(job_ids: Iterable[str]) -> Optional[dict[str, JobInfo]]:
    """What accounting says about these jobs; None when the cluster has no accounting."""
    ids = sorted(set(job_ids))
    found: dict[str, JobInfo] = {}
    for start in range(0, len(ids), _SACCT_CHUNK):
        answer = _sacct(["-j", ",".join(ids[start : start + _SACCT_CHUNK])])
        if answer is None:
            return None
        found.update(answer)
    return found


def sacct_by_name(name: str) -> Optional[dict[str, JobInfo]]:
    """Jobs called ``name`` in accounting (last week); None without accounting."""
    return _sacct(["-S", "now-7days", "--name", name])


def _sacct(selection: list[str]) -> Optional[dict[str, JobInfo]]:
    """One sacct call for ``selection`` (-j ... or --name ...); None without accounting."""
    argv = ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode,NodeList,JobName", *selection]
    done = run_slurm(argv)
    if done.returncode != 0:
        if _no_accounting(done.stderr):
            return None
        raise SlurmError(f"sacct failed: {done.stderr.strip() or done.returncode}")
    return _parse_sacct(done.stdout)


def _no_accounting(stderr: str) -> bool:
    text = stderr.lower()
    return "accounting storage is disabled" in text or "slurmdbd" in text


def _parse_sacct(out: str) -> dict[str, JobInfo]:
    found: dict[str, JobInfo] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 5 or "[" in parts[0]:
            continue  # "123_[4-9]": array tasks that have not started (squeue has them)
        job_id, raw, code, node, name = (p.strip() for p in parts[:5])
        node_value = node if node and node != "None assigned" else None
        found[job_id] = JobInfo(job_id, map_state(raw), raw, node_value, name,
                                parse_exit_code(code))  # fmt: skip
    return found


def max_array_size() -> int:
    """The cluster's ``MaxArraySize`` (tasks per array are indices 0..MaxArraySize-1)."""
    done = run_slurm(["scontrol", "show", "config"])
    if done.returncode == 0:
        for line in done.stdout.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "MaxArraySize":
                with contextlib.suppress(ValueError):
                    return max(1, int(value.strip()))
    return 1001  # Slurm's default


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel these jobs or array tasks (one call)."""
    if not job_ids:
        return
    done = run_slurm(["scancel", *job_ids])
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        raise SlurmError(f"scancel failed: {done.stderr.strip() or done.returncode}")


class SlurmView:
    """The squeue snapshot and the sacct cache of one project, shared through a file."""

    def __init__(self, folder: Path, cache_s: float = 2.0) -> None:
        self.folder = folder
        self.cache_s = cache_s
        self._queue: Optional[dict[str, JobInfo]] = None

    @property
    def path(self) -> Path:
        return self.folder / STATE_FILE

    def _load(self) -> dict[str, Any]:
        try:
            data = read_json(self.path)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("version") == 1 else {}

    def _save(self, change: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(self.folder / ".state.lock"):
            data = self._load() or {"version": 1}
            change(data)
            atomic_write_json(self.path, data, fsync=False, indent=None)  # a cache: no fsync

    def queue(self, fresh: bool = False) -> dict[str, JobInfo]:
        """squeue's jobs: from the shared snapshot when it is recent enough."""
        if self._queue is not None and not fresh:
            return self._queue
        snap = {} if fresh else self._load().get("squeue") or {}
        if snap and time.time() - float(snap.get("at", 0)) < self.cache_s:
            self._queue = {k: JobInfo.from_json(v) for k, v in snap["jobs"].items()}
            return self._queue
        self._queue = squeue()
        jobs = {k: v.to_json() for k, v in self._queue.items()}
        self._save(lambda d: d.update(squeue={"at": time.time(), "jobs": jobs}))
        return self._queue

    def forget_queue(self) -> None:
        """Drop the snapshot (after a cancel or a submission: it is stale)."""
        self._queue = None
        with contextlib.suppress(OSError):
            self._save(lambda d: d.pop("squeue", None))

    def finished(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """What accounting says about jobs that left the queue (cached; {} without it)."""
        data = self._load()
        if data.get("accounting") is False and time.time() - data.get("accounting_at", 0) < 600:
            return {}  # re-asked every 10 minutes: accounting may have been set up since
        cached = data.get("sacct") or {}
        out = {i: JobInfo.from_json(cached[i]) for i in job_ids if i in cached}
        missing = [i for i in job_ids if i not in cached]
        if not missing:
            return out
        answer = sacct(missing)
        if answer is None:
            self._save(lambda d: d.update(accounting=False, accounting_at=time.time()))
            return out
        ended = {k: v.to_json() for k, v in answer.items() if v.state.finished}
        self._save(lambda d: _remember(d, ended))
        out.update(answer)
        return out


def _remember(data: dict[str, Any], ended: dict[str, Any]) -> None:
    data["accounting"] = True
    cache = data.setdefault("sacct", {})
    cache.update(ended)
    if len(cache) > _CACHE_LIMIT:  # oldest first: dicts keep insertion order
        for key in list(cache)[: len(cache) - _CACHE_LIMIT]:
            del cache[key]
