"""Runs one attempt of an XP as a child process and records it in ``job.json``.

Every backend reaches it through attempt.py (``gridman run``, the local pool, MPI ranks, Slurm
jobs, the inline backend): the child is ``python -m gridman.backends.worker``, its output goes
to the attempt's log (and, in the foreground, to the console too), and its end is recorded with
its exit status.
The XP's run lock is held for the whole attempt, so a second runner of the same XP is refused
and a vanished runner is detectable (core/liveness.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional

from ..core.fsutil import file_lock
from ..core.jobs import (
    RUN_LOCK,
    Attempt,
    JobRecord,
    State,
    now,
    read_job,
    this_host,
    update_job,
)
from ..core.link import settle_history
from ..core.liveness import (
    cancel_requested,
    clear_cancel,
    status_file,
)
from ..errors import XPBusyError

_GRACE = 10.0


@dataclass(frozen=True)
class RunResult:
    """How an attempt ended."""

    sig: str
    folder: Path
    state: State
    exit_code: Optional[int]
    attempt: int
    log: Path


def worker_command(main_spec: str, root: Path, argv: Sequence[str], python: str = "") -> list[str]:
    """The command line of a child that runs one XP (no shell involved)."""
    return [
        python or sys.executable,
        "-m",
        "gridman.backends.worker",
        main_spec,
        str(root),
        "--",
        *argv,
    ]


def worker_env(
    base: Mapping[str, str], dir: Path, sig: str, extra: Mapping[str, str]
) -> dict[str, str]:
    env = dict(base)
    env.update(extra)
    env["GRIDMAN_DIR"] = str(dir)  # the child must write where the parent looked
    env["GRIDMAN_XP_SIG"] = sig
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_attempt(
    folder: Path,
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    backend: str,
    echo: Optional[tuple[BinaryIO, BinaryIO]] = None,
    job_id: Optional[str] = None,
    new_session: bool = False,
    on_start: Optional[Callable[[subprocess.Popen[bytes]], None]] = None,
    call: Optional[Callable[[Path], int]] = None,
) -> RunResult:
    """Run ``command`` as a new attempt of the XP in ``folder`` and record how it ended.

    With ``echo`` (stdout, stderr), the child's output is also copied to those streams and
    Ctrl-C reaches the child (foreground); otherwise it only goes to the log. The attempt is
    recorded RUNNING once its process exists (with its pid: one durable write), then ended.
    A backend that queued the attempt under ``job_id`` has it taken over, not duplicated.
    ``on_start`` gets the child process once it exists (the Slurm job stops it on preemption).
    With ``call``, the attempt runs in this process instead of a child: it gets the log's path
    and returns the exit status (``command`` is unused).
    """
    with file_lock(folder / RUN_LOCK, blocking=False) as got:
        if not got:
            latest = (read_job(folder) or JobRecord(sig=folder.name)).latest
            pid = latest.pid if latest else None
            raise XPBusyError(
                f"XP {folder.name} is already running" + (f" (pid {pid})" if pid else ""),
                "wait for it, or cancel it first",
            )
        n = _next_attempt(read_job(folder), job_id)
        log = folder / "log" / f"{n}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if cancel_requested(folder):
            update_job(folder, lambda r: _start_attempt(r, backend, job_id, new_session, None))
            code, state = None, State.CANCELLED
        elif call is not None:
            code, state = _call(call, folder, log, backend, job_id)
        else:
            env = {**env, "GRIDMAN_STATUS_FILE": str(status_file(folder, n))}
            code, state = _spawn(command, cwd, env, log, echo, folder, backend, job_id,
                                 new_session, on_start)  # fmt: skip
            if cancel_requested(folder):
                state = State.CANCELLED
        settle_history(folder)  # history.json whole before the end is seen (never raises)
        update_job(folder, _ended(n, state, code))
        clear_cancel(folder)
        return RunResult(folder.name, folder, state, code, n, log)


def _call(
    call: Callable[[Path], int], folder: Path, log: Path, backend: str, job_id: Optional[str]
) -> tuple[int, State]:
    """An attempt run in this process: RUNNING with this process's pid, then its status."""
    update_job(folder, lambda r: _start_attempt(r, backend, job_id, False, os.getpid()),
               durable=False)  # fmt: skip
    code = call(log)
    return code, State.COMPLETED if code == 0 else State.FAILED


def _ended(n: int, state: State, code: Optional[int]) -> Callable[[JobRecord], JobRecord]:
    """Record how attempt ``n`` ended: not necessarily the latest one (a Slurm --replace
    resubmits without waiting for the old job), and an end already recorded (CANCELLED by -C
    before the resubmission cleared the cancel request) is kept, only its exit code added."""

    def change(record: JobRecord) -> JobRecord:
        attempt = next((a for a in record.attempts if a.n == n), None)
        if attempt is None:
            return record
        if attempt.state.finished:
            code_now = attempt.exit_code if attempt.exit_code is not None else code
            return record.with_attempt(n, exit_code=code_now, ended=attempt.ended or now())
        return record.with_attempt(n, state=state, exit_code=code, ended=now())

    return change


def _next_attempt(record: Optional[JobRecord], job_id: Optional[str]) -> int:
    latest = record.latest if record else None
    if latest is None or latest.n == 0:
        return 1
    if _queued_as(latest, job_id):
        return latest.n
    return latest.n + 1


def _queued_as(latest: Optional[Attempt], job_id: Optional[str]) -> bool:
    # The attempt a backend queued for this job (a poll may have marked it RUNNING already).
    return bool(latest and job_id and latest.job_id == job_id and not latest.state.finished)


def _start_attempt(
    record: JobRecord,
    backend: str,
    job_id: Optional[str],
    new_session: bool,
    pid: Optional[int],
) -> JobRecord:
    start = now()
    fields: dict[str, Any] = {"started": start, "host": this_host(), "pid": pid}
    latest = record.latest
    if latest and _queued_as(latest, job_id):
        # A backend queued this attempt as PENDING: it now starts (keeping what it noted).
        extra = {**latest.extra, "session": new_session}
        return record.with_latest(state=State.RUNNING, extra=extra, **fields)
    fields["extra"] = {"session": new_session}
    return record.with_new_attempt(backend, State.RUNNING, job_id=job_id, submitted=start, **fields)


def _spawn(
    command: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    echo: Optional[tuple[BinaryIO, BinaryIO]],
    folder: Path,
    backend: str,
    job_id: Optional[str],
    new_session: bool,
    on_start: Optional[Callable[[subprocess.Popen[bytes]], None]] = None,
) -> tuple[int, State]:
    with open(log, "ab") as log_file:
        piped = echo is not None
        proc = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if piped else log_file,
            stderr=subprocess.PIPE if piped else subprocess.STDOUT,
            # Pool XPs get their own process group: -C signals the XP and its children only.
            start_new_session=new_session,
        )
        update_job(
            folder,
            lambda r: _start_attempt(r, backend, job_id, new_session, proc.pid),
            durable=False,  # a lost RUNNING reads as a runner that is gone: nothing is lost
        )
        if on_start is not None:
            on_start(proc)
        if cancel_requested(folder):  # cancelled while it was starting: -C signalled no pid
            _terminate(proc, new_session)
        pumps = [] if echo is None else _start_pumps(proc, log_file, echo)
        interrupted = False
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            code = _stop(proc)
        for pump in pumps:
            pump.join()
    if interrupted:
        return code, State.CANCELLED
    return code, State.COMPLETED if code == 0 else State.FAILED


def _terminate(proc: subprocess.Popen[bytes], group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """After Ctrl-C (which the child got too), give it time to exit, then insist."""
    for sig, wait in ((None, _GRACE), (signal.SIGTERM, _GRACE), (signal.SIGKILL, None)):
        if sig is not None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            continue
    return proc.wait()


def _start_pumps(
    proc: subprocess.Popen[bytes], log_file: BinaryIO, echo: tuple[BinaryIO, BinaryIO]
) -> list[threading.Thread]:
    lock = threading.Lock()

    def pump(source: BinaryIO, sink: BinaryIO) -> None:
        fd = source.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            with lock:
                log_file.write(chunk)
                log_file.flush()
            try:
                sink.write(chunk)
                sink.flush()
            except (OSError, ValueError):
                pass  # a closed console must not stop the log

    assert proc.stdout is not None and proc.stderr is not None
    threads = [
        threading.Thread(target=pump, args=(proc.stdout, echo[0]), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, echo[1]), daemon=True),
    ]
    for thread in threads:
        thread.start()
    return threads
