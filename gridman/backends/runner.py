"""Runs one attempt of an XP as a child process and records it in ``job.json``.

Every backend reaches it through attempt.py (``gridman run``, the local pool, MPI ranks, Slurm
jobs, the inline backend): the child is ``python -m gridman.backends.worker``, its output goes
to the attempt's log (and, in the foreground, to the console too), and its end is recorded with
its exit status.
The XP's run lock is held for the whole attempt, so a second runner of the same XP is refused
and a vanished runner is detectable (core/liveness.py); under it, an attempt never starts over
a live one (a queued or running attempt of another job) nor runs a job whose attempt was
superseded or cancelled meanwhile.

In the foreground, SIGTERM and SIGHUP (``timeout``, systemd, a closed SSH session) are handled
as Ctrl-C is: the XP gets the signal, its end is recorded, and only then does ``gridman run``
end, of that same signal. A log that cannot be written (a full disk) never stops the copy of the
XP's output to the console, and a process that cannot start (E2BIG, a missing interpreter) is
recorded FAILED with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
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
    process_identity,
    process_is,
    status_file,
)
from ..core.torchenv import TORCH_KEYS
from ..errors import XPBusyError
from .ranks import (
    RankGroup,
    free_port,
    local_rank_env,
    rank_end_file,
    rank_log,
    rank_note,
    without,
)

_GRACE = 10.0
#: Signals that stop a foreground run as Ctrl-C does (SIGINT comes as KeyboardInterrupt).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: Linux's limit on one argument of a new program, its terminating NUL included
#: (MAX_ARG_STRLEN): a longer one fails the exec with E2BIG.
_MAX_ARG = 131072


@dataclass(frozen=True)
class RunResult:
    """How an attempt ended."""

    sig: str
    folder: Path
    state: State
    exit_code: Optional[int]
    attempt: int
    log: Path
    #: The rank whose failure failed a distributed XP (None: one process, or none failed).
    failed_rank: Optional[int] = None


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
    # One process unless the host says otherwise (extra): a rank inherited from the host's
    # own environment (an MPI or Slurm task hosting several XPs) must not make an XP a rank.
    env = {k: v for k, v in base.items() if k not in TORCH_KEYS[:4]}
    env.update(zip(TORCH_KEYS[:4], ("0", "1", "0", "1")))
    env.update(extra)
    env["GRIDMAN_DIR"] = str(dir)  # the child must write where the parent looked
    env["GRIDMAN_XP_SIG"] = sig
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True)
class _Ended:
    """How an attempt's process ended, as the runner saw it; ``extra`` joins the attempt's."""

    code: Optional[int]
    state: State
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Launch:
    """Everything :func:`_spawn` needs to start one child and record it."""

    command: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    log: Path
    folder: Path
    backend: str
    job_id: Optional[str]
    new_session: bool
    echo: Optional[tuple[BinaryIO, BinaryIO]]
    on_start: Optional[Callable[[subprocess.Popen[bytes]], None]]
    stops: _Stops
    n: int = 0
    #: Ranks this runner starts (1: the XP is one process, or one rank of a Slurm step).
    ranks: int = 1
    #: Ranks 1..peers that others started (Slurm tasks): watched through their end files.
    peers: int = 0

    @property
    def world(self) -> int:
        return self.ranks + self.peers

    def record_start(self, pid: Optional[int]) -> None:
        note = rank_note(self.folder, self.n, self.world) if self.world > 1 else {}
        update_job(
            self.folder,
            lambda r: _start_attempt(r, self.backend, self.job_id, self.new_session, pid, note),
            durable=False,  # a lost RUNNING reads as a runner that is gone: nothing is lost
        )


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
    ranks: int = 1,
    peers: int = 0,
) -> RunResult:
    """Run ``command`` as a new attempt of the XP in ``folder`` and record how it ended.

    With ``echo`` (stdout, stderr), the child's output is also copied to those streams and
    Ctrl-C, SIGTERM and SIGHUP reach the child (foreground): once its end is recorded, this
    process ends of the same signal. Otherwise the output only goes to the log. The attempt is
    recorded RUNNING once its process exists (with its pid and what identifies that process:
    one write), then ended. A backend that queued the attempt under ``job_id`` has it taken
    over, not duplicated; raises XPBusyError when the XP runs already, or when the attempt
    must not start (another job's attempt is live, or this job's was superseded or cancelled).
    ``on_start`` gets the child process once it is recorded RUNNING (the Slurm job stops it on
    preemption; ``gridman run`` then lets go of the project lock). With ``call``, the attempt
    runs in this process instead of a child: it gets the log's path and returns the exit
    status (``command`` is unused).

    With ``ranks`` > 1 the XP runs as that many processes on this machine, each with torch's
    variables (ranks.py); with ``peers``, ranks 1..peers run elsewhere (Slurm tasks) and their
    end files are watched. Either way the first rank that fails fails the XP (its rank and exit
    code recorded) and the others still running here are stopped.
    """
    stops = _Stops(active=echo is not None)
    result: Optional[RunResult] = None
    try:
        with file_lock(folder / RUN_LOCK, blocking=False) as got:
            if not got:
                latest = (read_job(folder) or JobRecord(sig=folder.name)).latest
                pid = latest.pid if latest else None
                raise XPBusyError(
                    f"XP {folder.name} is already running" + (f" (pid {pid})" if pid else ""),
                    "wait for it, or cancel it first",
                )
            record = read_job(folder)
            _refuse_over_live(folder.name, record, job_id)
            n = _next_attempt(record, job_id)
            log = folder / "log" / f"{n}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            launch = _Launch(command, cwd, env, log, folder, backend, job_id, new_session,
                             echo, on_start, stops, n, max(ranks, 1), max(peers, 0))  # fmt: skip
            end = _attempt(launch, n, call)
            settle_history(folder)  # history.json whole before the end is seen (never raises)
            update_job(folder, _ended(n, end))
            clear_cancel(folder)
            failed = end.extra.get("failed_rank")
            result = RunResult(folder.name, folder, end.state, end.code, n, log, failed)
            return result
    finally:
        stops.restore()
        if stops.signum is not None:
            _end_of_signal(stops.signum, result, echo)


def _attempt(launch: _Launch, n: int, call: Optional[Callable[[Path], int]]) -> _Ended:
    """Start attempt ``n`` (the run lock held) and wait for its end."""
    folder = launch.folder
    if cancel_requested(folder):
        launch.record_start(None)
        return _Ended(None, State.CANCELLED)
    if call is not None:
        return _call(call, launch)
    env = {**launch.env, "GRIDMAN_STATUS_FILE": str(status_file(folder, n))}
    end = _spawn(replace(launch, env=env))
    if cancel_requested(folder):
        end = replace(end, state=State.CANCELLED)
    return end


def _call(call: Callable[[Path], int], launch: _Launch) -> _Ended:
    """An attempt run in this process: RUNNING with this process's pid, then its status."""
    launch.record_start(os.getpid())
    code = call(launch.log)
    return _Ended(code, State.COMPLETED if code == 0 else State.FAILED)


def _ended(n: int, end: _Ended) -> Callable[[JobRecord], JobRecord]:
    """Record how attempt ``n`` ended: not necessarily the latest one (a Slurm --replace
    resubmits without waiting for the old job), and an end already recorded (CANCELLED by -C
    before the resubmission cleared the cancel request) is kept, only its exit code added."""

    def change(record: JobRecord) -> JobRecord:
        attempt = next((a for a in record.attempts if a.n == n), None)
        if attempt is None:
            return record
        extra = {**attempt.extra, **end.extra}
        if attempt.state.finished:
            code_now = attempt.exit_code if attempt.exit_code is not None else end.code
            return record.with_attempt(n, exit_code=code_now, ended=attempt.ended or now(),
                                       extra=extra)  # fmt: skip
        return record.with_attempt(n, state=end.state, exit_code=end.code, ended=now(),
                                   extra=extra)  # fmt: skip

    return change


def _refuse_over_live(sig: str, record: Optional[JobRecord], job_id: Optional[str]) -> None:
    """Raise XPBusyError when this attempt must not start (the run lock held): see
    :func:`_refusal`. Nothing is recorded: the record belongs to the attempt that won."""
    why = _refusal(record, job_id)
    if why is not None:
        raise XPBusyError(f"XP {sig}: not starting it, {why}",
                          "see `gridman info --sig " + sig + "`")  # fmt: skip


def _refusal(record: Optional[JobRecord], job_id: Optional[str]) -> Optional[str]:
    """Why an attempt (of job ``job_id``; None: not queued by a backend) must not start over
    what ``job.json`` holds; None when it may.

    A job runs its own queued attempt, unless a later attempt superseded it or it already
    ended CANCELLED (cancelled while it was being claimed) or COMPLETED. Whatever starts never
    appends an attempt over a live one: another job's queued attempt, or a RUNNING one whose
    process still runs (its runner died, the XP did not).
    """
    latest = record.latest if record else None
    if record is None or latest is None or latest.n == 0:
        return None
    if job_id is not None:
        mine = next((a for a in reversed(record.attempts) if a.job_id == job_id), None)
        if mine is not None and mine is not latest:
            return f"its attempt {mine.n} (job {job_id}) was superseded by attempt {latest.n}"
        if mine is not None and latest.state in (State.CANCELLED, State.COMPLETED):
            return f"its attempt {mine.n} (job {job_id}) ended {latest.state.value} already"
        if mine is not None:
            return None
    if latest.state is State.PENDING and latest.job_id:
        return (f"attempt {latest.n} is queued on the {latest.backend} backend "
                f"(job {latest.job_id})")  # fmt: skip
    if latest.state is State.RUNNING and process_is(latest):
        return f"attempt {latest.n} still runs (pid {latest.pid})"
    return None


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
    note: Optional[Mapping[str, Any]] = None,
) -> JobRecord:
    start = now()
    fields: dict[str, Any] = {"started": start, "host": this_host(), "pid": pid}
    # With the pid, what tells its process from a later one reusing it (liveness.process_is).
    fields.update(process_identity(pid) if pid else {"pid_start": None, "boot_id": None})
    latest = record.latest
    if latest and _queued_as(latest, job_id):
        # A backend queued this attempt as PENDING: it now starts (keeping what it noted).
        extra = {**latest.extra, **(note or {}), "session": new_session}
        return record.with_latest(state=State.RUNNING, extra=extra, **fields)
    fields["extra"] = {**(note or {}), "session": new_session}
    return record.with_new_attempt(backend, State.RUNNING, job_id=job_id, submitted=start, **fields)


def _spawn(launch: _Launch) -> _Ended:
    """Start the child, record it RUNNING, copy its output (foreground) and wait for it."""
    piped = launch.echo is not None
    port = free_port() if launch.ranks > 1 else 0
    others: dict[int, subprocess.Popen[bytes]] = {}
    with open(launch.log, "ab") as log_file:
        try:
            proc = subprocess.Popen(
                list(launch.command),
                cwd=launch.cwd,
                env=_rank_env(launch, 0, port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if piped else log_file,
                stderr=subprocess.PIPE if piped else subprocess.STDOUT,
                # Pool XPs get their own process group: -C signals the XP and its children only.
                start_new_session=launch.new_session,
            )
            others = _start_ranks(launch, proc, port)
        except OSError as exc:  # E2BIG, ENOENT...: no process, but an attempt that failed
            return _not_started(launch, log_file, exc)
        launch.record_start(proc.pid)
        if launch.on_start is not None:
            launch.on_start(proc)
        if cancel_requested(launch.folder):  # cancelled while it was starting: -C signalled no pid
            _terminate(proc, launch.new_session)
        pumps = None if launch.echo is None else _Pumps(proc, launch.log, log_file, launch.echo)
        if launch.world > 1:
            code, cause, failed = _wait_ranks(launch, {0: proc, **others})
        else:
            (code, cause), failed = _wait(proc, launch.stops), None
        if pumps is not None:
            pumps.join()
    extra: dict[str, Any] = {} if failed is None else {"failed_rank": failed}
    if pumps is not None and pumps.error is not None:
        extra["log_error"] = pumps.error
    if cause is not None:
        extra["stopped_by"] = cause
        return _Ended(code, State.CANCELLED, extra)
    return _Ended(code, State.COMPLETED if code == 0 else State.FAILED, extra)


def _rank_env(launch: _Launch, rank: int, port: int) -> dict[str, str]:
    """The environment of rank ``rank`` of the ranks this runner starts: only rank 0 writes
    the worker's status file."""
    if launch.ranks <= 1:
        return dict(launch.env)
    base = launch.env if rank == 0 else without(launch.env, "GRIDMAN_STATUS_FILE")
    return {**base, **local_rank_env(rank, launch.ranks, port)}


def _start_ranks(
    launch: _Launch, first: subprocess.Popen[bytes], port: int
) -> dict[int, subprocess.Popen[bytes]]:
    """Start ranks 1.. of a local group, each writing its own log (each in its own session
    as rank 0 is: a process cannot join a group of another session; -C, which signals rank
    0's group, ends them through the runner, which stops the others when one dies). A rank
    that cannot start stops those started and raises OSError."""
    started: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for rank in range(1, launch.ranks):
            with open(rank_log(launch.folder, launch.n, rank), "ab") as out:
                started[rank] = subprocess.Popen(
                    list(launch.command), cwd=launch.cwd, env=_rank_env(launch, rank, port),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=launch.new_session,
                )  # fmt: skip
    except OSError:
        RankGroup({0: first, **started}).stop(signal.SIGKILL, 0.0)
        raise
    return started


def _wait_ranks(
    launch: _Launch, procs: dict[int, subprocess.Popen[bytes]]
) -> tuple[int, Optional[str], Optional[int]]:
    """Wait for the ranks of a distributed XP: (exit status, the signal that stopped this
    run, the rank that failed). A rank that fails stops the others; its status is the XP's."""
    remote = {r: rank_end_file(launch.folder, launch.n, r) for r in range(1, launch.peers + 1)}
    group = RankGroup(procs, remote)
    try:
        with launch.stops.armed():
            failed = group.watch()
    except KeyboardInterrupt:  # the ranks, in the terminal's process group, got it too
        group.stop(None, _GRACE)
        return group.codes.get(0, 130), "SIGINT", None
    except _Stopped as stopped:
        group.stop(stopped.signum, _GRACE)
        return group.codes.get(0, 128 + stopped.signum), signal.Signals(stopped.signum).name, None
    if failed is None:
        return 0, None, None
    group.stop(signal.SIGTERM, _GRACE)
    return failed[1], None, failed[0]


def _not_started(launch: _Launch, log_file: BinaryIO, exc: OSError) -> _Ended:
    """The child could not be started: recorded as an attempt that FAILED, with the reason in
    its log and in ``extra["error"]`` (what ``gridman info`` shows), so that it neither
    vanishes nor is resubmitted by every plan (``--retry`` does)."""
    reason = start_error(launch.command, exc)
    line = f"gridman: {reason}\n".encode()
    with contextlib.suppress(OSError):
        _write_all(log_file.fileno(), line)
    if launch.echo is not None:
        _echo(launch.echo[1], line)
    launch.record_start(None)
    return _Ended(None, State.FAILED, {"error": reason})


def start_error(command: Sequence[str], exc: OSError) -> str:
    """Why ``command`` could not be started, in words."""
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        what += f": {os.fsdecode(exc.filename)}"
    text = f"cannot start the XP's process ({what})"
    if exc.errno == errno.E2BIG:
        longest = max((len(os.fsencode(a)) for a in command), default=0)
        if longest >= _MAX_ARG:
            return (f"{text}: one argument is {longest} bytes long, over Linux's limit of "
                    f"{_MAX_ARG - 1} bytes per argument")  # fmt: skip
        return f"{text}: its arguments and environment are over the system's limit"
    return text


def _wait(proc: subprocess.Popen[bytes], stops: _Stops) -> tuple[int, Optional[str]]:
    """The child's exit status, and the signal that stopped this run (None: it ended)."""
    try:
        with stops.armed():
            return proc.wait(), None
    except KeyboardInterrupt:  # Ctrl-C: the child, in the terminal's process group, got it too
        return _stop(proc, None), "SIGINT"
    except _Stopped as stopped:  # SIGTERM or SIGHUP: maybe sent to this process only
        return _stop(proc, stopped.signum), signal.Signals(stopped.signum).name


def _terminate(proc: subprocess.Popen[bytes], group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()


def _stop(proc: subprocess.Popen[bytes], first: Optional[int]) -> int:
    """Pass ``first`` on to the child (None: it got the signal already), give it time to
    exit, then insist: SIGTERM, then SIGKILL."""
    steps: list[tuple[Optional[int], Optional[float]]] = [(first, _GRACE)]
    if first != signal.SIGTERM:
        steps.append((signal.SIGTERM, _GRACE))
    steps.append((signal.SIGKILL, None))
    for sig, wait in steps:
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            continue
    return proc.wait()


class _Stopped(BaseException):
    """SIGTERM or SIGHUP arrived while a foreground run waited for its XP (a BaseException,
    as KeyboardInterrupt: nothing in between may take it for an error)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Stops:
    """SIGTERM and SIGHUP of a foreground run, caught so that the XP is stopped and its end
    recorded before this process ends (uncaught, they would orphan the XP: RUNNING, then
    VANISHED). Only noted, except while :meth:`armed`: then they interrupt the wait.

    Active in the main thread only (Python runs handlers there); a signal the caller ignores
    (``nohup`` ignores SIGHUP) stays ignored.
    """

    def __init__(self, active: bool) -> None:
        self.signum: Optional[int] = None
        self._armed = False
        self._previous: dict[int, Any] = {}
        if not active or threading.current_thread() is not threading.main_thread():
            return
        for signum in _STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is None:
            self.signum = signum
        if self._armed:
            self._armed = False
            raise _Stopped(signum)

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        if self.signum is not None:  # it came while the XP was starting
            raise _Stopped(self.signum)
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous = {}


def _end_of_signal(
    signum: int, result: Optional[RunResult], echo: Optional[tuple[BinaryIO, BinaryIO]]
) -> None:
    """End this process of ``signum``, its XP's end recorded: by the signal itself, so that
    whoever waits for it sees the usual status (a shell says 128 + signum)."""
    if echo is not None and result is not None:
        name = signal.Signals(signum).name
        _echo(echo[1], (f"gridman: XP {result.sig} {result.state.value} by {name} (exit "
                        f"{result.exit_code}), log {result.log}\n").encode())  # fmt: skip
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    raise SystemExit(128 + signum)  # only where the signal is blocked


class _Pumps:
    """Copy a foreground child's stdout and stderr to its log and to the console.

    The copy never stops before the child's output ends, whatever happens to the log: a child
    whose pipe is not drained blocks once it has written 64 KiB. A log write that fails (a full
    disk) is said once on the console and kept in :attr:`error` for the record; later output
    is still offered to the log (the disk may have room again).
    """

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        log: Path,
        log_file: BinaryIO,
        echo: tuple[BinaryIO, BinaryIO],
    ) -> None:
        self.log = log
        self.log_fd = log_file.fileno()
        self.echo = echo
        self.error: Optional[str] = None
        self.lock = threading.Lock()
        assert proc.stdout is not None and proc.stderr is not None
        self.threads = [
            threading.Thread(target=self._pump, args=(proc.stdout, echo[0]), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, echo[1]), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()

    def _pump(self, source: BinaryIO, sink: BinaryIO) -> None:
        fd = source.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not chunk:
                break
            with self.lock:
                self._to_log(chunk)
            _echo(sink, chunk)  # a closed console must not stop the log either

    def _to_log(self, chunk: bytes) -> None:
        try:
            _write_all(self.log_fd, chunk)
        except OSError as exc:
            if self.error is None:
                self.error = f"cannot write the log {self.log}: {exc.strerror or exc}"
                _echo(self.echo[1], (f"gridman: {self.error}; the XP's output goes on to "
                                     "the console\n").encode())  # fmt: skip


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` (os.write may write less), or raise OSError."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _echo(sink: BinaryIO, data: bytes) -> None:
    try:
        sink.write(data)
        sink.flush()
    except (OSError, ValueError):
        pass  # a closed console (a hung-up terminal, a closed pipe)
