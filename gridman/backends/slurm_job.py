"""What runs inside a Slurm job: one XP through the shared runner, checkpointed by submitit.

submitit unpickles an :class:`XPTask` in the job and calls it; the task runs the XP as a child
process (``python -m gridman.backends.worker``) through the shared attempt entry (attempt.py), whose
runner takes over the PENDING attempt the backend recorded under this job id, writes RUNNING (node,
pid), the XP's own status file and the end. When Slurm warns of the time limit or of a preemption
(USR2, ``--signal``), submitit calls :meth:`XPTask.checkpoint`: the attempt is recorded TIMEOUT or
PREEMPTED and, up to ``max_num_timeout`` timeouts (preemptions always), a new PENDING attempt is
recorded and the job requeued with the same id; the training code resumes from its folder. Without a
requeue the XP keeps its last seconds and Slurm ends it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from ..core.jobs import JobRecord, State, now, read_job, update_job
from ..core.torchenv import TORCH_KEYS, derive_env
from .attempt import AttemptSpec, run_here
from .ranks import rank_log, without, write_rank_end
from .runner import worker_command, worker_env
from .slurm_query import SlurmError, map_state, run_slurm
from .worker import IGNORE_SIGNALS

_CURRENT: dict[str, subprocess.Popen[bytes]] = {}  # the XP's process, for checkpoint()
_STOP_GRACE = 20.0
_RANK_WAIT = 30.0  # how long a rank waits for rank 0's record (its start, or the XP's end)
T = TypeVar("T")


class XPFailed(Exception):
    """Raised in the job when the XP did not complete, so that Slurm too says FAILED."""


def slurm_job_id(env: Optional[dict[str, str]] = None) -> str:
    """This job's id as gridman records it: ``123_4`` for array task 4 of 123, else ``123``."""
    env = dict(os.environ if env is None else env)
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID", "")


@dataclass(frozen=True)
class XPTask:
    """One XP, pickled by submitit into the job (by reference: gridman must be importable)."""

    folder: str
    root: str
    dir: str
    main_spec: str
    argv: tuple[str, ...]
    python: str
    time_min: Optional[int] = None
    max_num_timeout: int = 20
    signal_delay_s: int = 90

    def __call__(self) -> str:
        _fix_submitit_timeout()
        folder = Path(self.folder)
        job_id = slurm_job_id()
        # Every task of the step is one rank: torch's variables from Slurm's (a launcher's
        # RANK inherited from the submitting shell must not win over them).
        ranks = derive_env(without(os.environ, *TORCH_KEYS[:4]))
        rank, world = int(ranks["RANK"]), int(ranks["WORLD_SIZE"])
        # Slurm's timeout/preemption warning (USR2) reaches every process of the job; rank 0's
        # task handles it (checkpoint and requeue), and stops the XP itself: the XP ignores it.
        extra = {IGNORE_SIGNALS: "SIGUSR2", **ranks}
        env = worker_env(os.environ, Path(self.dir), folder.name, extra)
        command = worker_command(self.main_spec, Path(self.root), self.argv, self.python)
        if rank != 0:
            return run_rank(folder, job_id, rank, command, Path(self.root), env)
        # A submission that died before recording the job id left its attempt without one.
        update_job(folder, _claim(os.environ.get("SLURM_JOB_NAME"), job_id), durable=False)
        spec = AttemptSpec(folder, tuple(command), Path(self.root), env, "slurm", job_id,
                           peers=world - 1)  # fmt: skip
        result = run_here(spec, on_start=_remember)
        killed = result.failed_rank is None and (result.exit_code or 0) < 0
        if result.state is State.FAILED and killed:
            _settle_killed(folder, result.attempt, job_id)
        if result.state is not State.COMPLETED:
            raise XPFailed(f"XP {folder.name} ended {result.state} (exit code {result.exit_code})")
        return result.state.value

    # -- submitit's checkpoint hook (called on USR2 in the job's main process) ----------
    def checkpoint(self) -> Any:
        folder, job_id = Path(self.folder), slurm_job_id()
        record = read_job(folder)
        timed_out = self.timed_out(record)
        state = State.TIMEOUT if timed_out else State.PREEMPTED
        requeue = not timed_out or _timeouts(record, job_id) < self.max_num_timeout
        proc = _CURRENT.get("proc")
        code: Optional[int] = None
        if proc is not None and requeue:
            code = _stop(proc)
        elif proc is not None:
            code = _wait(proc)  # no requeue: the XP keeps its last seconds, Slurm ends it
        update_job(folder, _ended(job_id, state, code, requeue))
        if not requeue:
            return None
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)

    def timed_out(self, record: Optional[JobRecord]) -> bool:
        """Whether the warning is the time limit's rather than a preemption's: the limit is
        at most ``signal_delay_s`` away (plus the minute Slurm may send it early)."""
        latest = record.latest if record else None
        if self.time_min and latest is not None and latest.started:
            left: Optional[float] = self.time_min * 60 - (now() - latest.started)
        else:
            left = _time_left()
        return left is None or left <= self.signal_delay_s + 60


def _settle_killed(folder: Path, attempt: int, job_id: str) -> None:
    """The XP died of a signal: when Slurm killed the job (scancel, time limit, node), record
    Slurm's state rather than FAILED (the controller has it before squeue shows it)."""
    try:
        out = run_slurm(["scontrol", "show", "job", "-o", job_id], timeout=20).stdout
    except (SlurmError, OSError):
        return
    word = next((f[9:] for f in out.split() if f.startswith("JobState=")), "")
    state = map_state(word)
    if state in (State.COMPLETED, State.FAILED):
        return

    def change(record: JobRecord) -> JobRecord:
        latest = record.latest
        if latest is None or latest.n != attempt or latest.state is not State.FAILED:
            return record
        if state.finished:
            return record.with_latest(state=state)
        # Slurm is still ending the job (COMPLETING until this process exits): the attempt
        # stays live, and the next poll records the state Slurm ends it with.
        return record.with_latest(state=State.RUNNING, ended=None,
                                  extra={**latest.extra, "signalled": True})  # fmt: skip

    update_job(folder, change)


def run_rank(
    folder: Path, job_id: str, rank: int, command: list[str], cwd: Path, env: dict[str, str]
) -> str:
    """Run rank ``rank`` (not 0) of the XP: no lock, no record, its own log; its end goes to
    rank 0 through its end file. A failure is reported to Slurm (which, with
    ``--kill-on-bad-exit``, ends the step) only once rank 0 recorded it, or did not in time:
    an attempt ended TIMEOUT or PREEMPTED is being requeued, and must not be failed."""
    n = _wait_for(lambda: _attempt_of(folder, job_id), _RANK_WAIT)
    if n is None:
        raise XPFailed(f"rank {rank}: no attempt of job {job_id} in {folder / 'job.json'}")
    log = rank_log(folder, n, rank)
    log.parent.mkdir(parents=True, exist_ok=True)  # rank 0 may not have made it yet
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    _remember(proc)
    code = _watch_rank(proc, folder, n)
    write_rank_end(folder, n, rank, code)
    if code == 0:
        return State.COMPLETED.value
    ended = _wait_for(lambda: _ended_state(folder, n), _RANK_WAIT)
    if ended in (State.TIMEOUT, State.PREEMPTED, State.CANCELLED):
        return ended.value  # rank 0 requeues or Slurm ends the job: exit quietly
    raise XPFailed(f"XP {folder.name} rank {rank} ended with exit code {code}")


def _watch_rank(proc: subprocess.Popen[bytes], folder: Path, n: int) -> Optional[int]:
    """Wait for a rank's process; stop it when rank 0 recorded the attempt's end first."""
    while True:
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if _ended_state(folder, n) is not None:
            return _stop(proc)


def _attempt_of(folder: Path, job_id: str) -> Optional[int]:
    record = read_job(folder)
    mine = [a for a in record.attempts if a.job_id == job_id] if record else []
    return mine[-1].n if mine else None


def _ended_state(folder: Path, n: int) -> Optional[State]:
    record = read_job(folder)
    attempt = next((a for a in record.attempts if a.n == n), None) if record else None
    return attempt.state if attempt is not None and attempt.state.finished else None


def _wait_for(probe: Callable[[], Optional[T]], timeout: float) -> Optional[T]:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _fix_submitit_timeout() -> None:
    # Without --time (the cluster's default applies), submitit's USR2 handler would compute
    # None * 60. With 0 it treats every warning as a timeout; gridman decides the requeue
    # itself (timed_out, max_num_timeout), so that is all it needs.
    handler = signal.getsignal(signal.SIGUSR2)
    delayed = getattr(getattr(handler, "__self__", None), "_delayed", None)
    if delayed is not None and getattr(delayed, "_timeout_min", 0) is None:
        delayed._timeout_min = 0


def _claim(job_name: Optional[str], job_id: str) -> Any:
    def change(record: JobRecord) -> JobRecord:
        latest = record.latest
        if (latest is None or latest.job_id or latest.state.finished or not job_name
                or latest.extra.get("job_name") != job_name):  # fmt: skip
            return record
        return record.with_latest(job_id=job_id)

    return change


def _remember(proc: subprocess.Popen[bytes]) -> None:
    _CURRENT["proc"] = proc


def _timeouts(record: Optional[JobRecord], job_id: str) -> int:
    if record is None:
        return 0
    return sum(1 for a in record.attempts if a.job_id == job_id and a.state is State.TIMEOUT)


def _ended(job_id: str, state: State, code: Optional[int], requeue: bool) -> Any:
    def change(record: JobRecord) -> JobRecord:
        latest = record.latest
        if latest is None or latest.job_id != job_id or latest.state.finished:
            return record
        record = record.with_latest(state=state, exit_code=code, ended=now())
        if requeue:
            extra = {k: v for k, v in latest.extra.items() if k in ("job_name", "token")}
            record = record.with_new_attempt(
                "slurm", State.PENDING, job_id=job_id, array_index=latest.array_index,
                submitted=now(), extra={**extra, "requeued": True},
            )  # fmt: skip
        return record

    return change


def _stop(proc: subprocess.Popen[bytes]) -> Optional[int]:
    """TERM the XP's process group (the runner gave it its own session), then KILL."""
    for sig, wait in ((signal.SIGTERM, _STOP_GRACE), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        code = _wait(proc, wait)
        if code is not None:
            return code
    return None


def _wait(proc: subprocess.Popen[bytes], timeout: Optional[float] = None) -> Optional[int]:
    """The XP's exit status once it ended (None after ``timeout``), without reaping it.

    This runs in a signal handler while the main thread sits in ``proc.wait()`` holding the
    Popen's lock: ``proc.poll()`` would never answer. ``waitid(WNOWAIT)`` looks at the child
    and leaves it for that ``wait()`` to reap.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return proc.returncode  # already reaped
        if info is not None and info.si_pid:
            exited = info.si_code == os.CLD_EXITED
            return info.si_status if exited else -info.si_status
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _time_left() -> Optional[float]:
    """Seconds before this job's time limit, from squeue (None when unknown or unlimited)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = run_slurm(["squeue", "-h", "-j", job, "-o", "%L"], timeout=20).stdout
    except (SlurmError, OSError):
        return None
    return parse_duration(out.strip())


def parse_duration(text: str) -> Optional[float]:
    """Slurm's ``[D-]H:MM:SS`` / ``MM:SS`` in seconds; None for UNLIMITED, INVALID or junk."""
    days, _, rest = text.strip().rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        total = int(days) * 86400 if days else 0
    except ValueError:
        return None
    if not parts or len(parts) > 3:
        return None
    while len(parts) < 3:
        parts.insert(0, 0)
    return float(total + parts[0] * 3600 + parts[1] * 60 + parts[2])
