"""The ``mpi`` method: ranks of ``mpiexec -n N python script.py`` evaluate, rank 0 searches.

Every rank runs the script and creates the evaluator with the same arguments. On ranks
1..N-1, creating it serves: each rank receives tasks from rank 0, runs them with its own copy
of the run function (nothing but parameters and results travels), sends the Outcome back, and
exits (``SystemExit(0)``) when rank 0 releases it; nothing else of the script runs there. On
rank 0 the evaluator returns and the search goes on.

As in ``gridman.backends.mpi`` (whose tags, ``comm_world`` and ``wait_message`` this reuses):

- waits use ``Iprobe`` with a back-off (a blocking receive spins a core that belongs to the
  workers);
- no exception escapes a worker rank: the run function's are failed jobs, and anything else
  (a bug, an MPI error) prints its traceback and aborts the whole job (``MPI_Abort``) rather
  than leaving rank 0 waiting forever;
- rank 0 always releases every worker rank when the evaluator closes (``with``, ``close()`` or,
  failing both, at interpreter exit).

On rank 0 a daemon thread does all the MPI communication when the MPI library allows it
(``MPI_THREAD_SERIALIZED`` or more; the mpich wheel gives ``MULTIPLE``), so worker ranks get
new tasks even while the search is busy between two ``gather`` calls. With a library that
does not, communication happens inside ``gather`` (``progress_thread=False`` forces this).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping
from typing import Any, NoReturn, Optional

from ..backends.mpi import _BACKOFF_CAP, RESULT, STOP, TASK, comm_world, wait_message
from ..errors import UsageError
from .backends import Backend, Report
from .job import Task
from .outcome import failure
from .worker import RunFunction, execute

_FIRST_DELAY = 1e-4
_IDLE_WAIT = 0.05
_STOP_POLL = 0.05  # seconds between a busy worker rank's probes for STOP
_released = False  # this process's worker ranks were released: they are gone


def mpi_comm(comm: Any = None) -> Any:
    """The communicator to use (COMM_WORLD by default; UsageError without mpi4py)."""
    return comm if comm is not None else comm_world()


def check_layout(comm: Any, num_workers: Optional[int]) -> int:
    """The number of worker ranks to use; the same answer (or error) on every rank."""
    size = comm.Get_size()
    if size < 2:
        raise UsageError(
            "the mpi method needs an MPI job of at least 2 ranks (rank 0 searches, the others "
            "evaluate)",
            "run the script as: mpiexec -n 3 python script.py",
        )
    if num_workers is None:
        return int(size - 1)
    if num_workers > size - 1:
        raise UsageError(
            f"num_workers={num_workers} but this MPI job has only {size - 1} worker rank(s)",
            f"run with mpiexec -n {num_workers + 1}, or leave num_workers out",
        )
    return num_workers


def serve_rank(
    comm: Any, run_function: RunFunction, kwargs: Optional[Mapping[str, Any]]
) -> NoReturn:
    """Ranks 1..N-1: evaluate what rank 0 sends until it says stop, then exit the process."""
    try:
        serve(comm, run_function, kwargs)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    raise SystemExit(0)


def serve(comm: Any, run_function: RunFunction, kwargs: Optional[Mapping[str, Any]]) -> None:
    """The worker loop: receive a task, run it (never raises), send its Outcome back."""
    from mpi4py import MPI

    status = MPI.Status()
    watch = _StopWatch(comm) if MPI.Query_thread() >= MPI.THREAD_MULTIPLE else None
    while True:
        wait_message(comm, 0, MPI.ANY_TAG, status)
        tag = status.Get_tag()
        task = comm.recv(source=0, tag=tag)
        if tag == STOP:
            return
        try:
            if watch is None:
                outcome = execute(run_function, kwargs, task)
            else:
                with watch:
                    outcome = execute(run_function, kwargs, task)
        except _Released:  # rank 0 exited without waiting for this job: so do we
            comm.recv(source=0, tag=STOP)
            return
        try:
            comm.send(outcome, dest=0, tag=RESULT)
        except Exception as exc:  # something in the result does not pickle
            comm.send(failure(task.id, exc, "sending the result: "), dest=0, tag=RESULT)


class _Released(BaseException):
    """Raised in a worker rank's job when rank 0 released the rank while the job ran."""


class _StopWatch:
    """While a job runs on a worker rank, watch for rank 0's STOP and interrupt the job.

    Rank 0 releases its worker ranks without waiting for running jobs when the search script
    exits with an evaluator still open (issue 14): a rank that finished its job first would
    keep mpiexec, hence the script, alive for as long as the job lasts. The job runs in the
    main thread; a thread of this rank probes for STOP (MPI_THREAD_MULTIPLE only: the job may
    use MPI too) and sends the main thread a SIGINT, whose handler raises ``_Released`` only
    while a job is armed; any other SIGINT is a KeyboardInterrupt, as before.
    """

    def __init__(self, comm: Any) -> None:
        self._comm = comm
        self._lock = threading.Lock()
        self._armed = False
        self._job = 0  # jobs armed so far: the one running, while armed
        self._released = False  # rank 0 sent STOP
        self._raised = False  # _Released was raised in the job
        self._wake = threading.Event()
        signal.signal(signal.SIGINT, self._on_sigint)
        main = threading.main_thread().ident
        assert main is not None
        self._main = main
        threading.Thread(target=self._watch, name="gridman-evaluator-stop", daemon=True).start()

    def __enter__(self) -> None:
        with self._lock:
            self._armed = True
            self._job += 1
        self._wake.set()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._armed = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # No lock here: the handler runs in the main thread, which may hold it already. A
        # signal that lands after its job ended is dropped; the watcher signals the next job.
        if not self._released:
            raise KeyboardInterrupt
        if self._armed and not self._raised:
            self._raised = True  # once: the SIGINTs that follow must not hit the clean-up
            raise _Released()

    def _watch(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._armed or self._raised:
                        break
                    job = self._job
                if self._released or self._comm.Iprobe(source=0, tag=STOP):
                    with self._lock:
                        if not (self._armed and self._job == job):
                            continue
                        self._released = True
                    # Again and again until it is handled: a signal that lands just before
                    # the job enters a blocking call (sleep, I/O) trips Python's flag but
                    # interrupts nothing, and the call would block on.
                    signal.pthread_kill(self._main, signal.SIGINT)
                time.sleep(_STOP_POLL)


class MPIBackend(Backend):
    """Rank 0's side: hands tasks to worker ranks 1..num_workers, one each at a time."""

    name = "mpi"

    def __init__(
        self,
        run_function: RunFunction,
        kwargs: Optional[Mapping[str, Any]],
        num_workers: int,
        report: Report,
        comm: Any,
        progress_thread: Optional[bool] = None,
    ) -> None:
        global _released
        if _released:
            raise UsageError(
                "the worker ranks of this MPI job were released when the previous mpi "
                "evaluator closed",
                "create one mpi evaluator per mpiexec run (submit and gather as often as needed)",
            )
        super().__init__(run_function, kwargs, num_workers, report)
        from mpi4py import MPI

        self._comm = comm
        self._status = MPI.Status()
        self._any_source = MPI.ANY_SOURCE
        self._free: deque[int] = deque(range(1, num_workers + 1))
        self._busy = 0
        self._outbox: deque[Task] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._aborting = False
        self._thread: Optional[threading.Thread] = None
        if progress_thread is None:
            progress_thread = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
        self.driven = not progress_thread
        if progress_thread:
            self._thread = threading.Thread(
                target=self._loop, name="gridman-evaluator-mpi", daemon=True
            )
            self._thread.start()

    def start(self, task: Task) -> None:
        with self._lock:
            self._outbox.append(task)
        self._wake.set()

    def poll(self, timeout: float) -> None:
        """Driven mode: send and receive until something happened or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        delay = _FIRST_DELAY
        while not self._step():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(delay, left))
            delay = min(_BACKOFF_CAP, delay * 2)

    def _step(self) -> bool:
        """Send queued tasks to free ranks, then take one result if there is one."""
        sent = False
        while True:
            with self._lock:
                if not (self._outbox and self._free):
                    break
                task, rank = self._outbox.popleft(), self._free.popleft()
            self._comm.send(task, dest=rank, tag=TASK)
            self._busy += 1
            sent = True
        if self._busy and self._comm.Iprobe(
            source=self._any_source, tag=RESULT, status=self._status
        ):
            source = self._status.Get_source()
            outcome = self._comm.recv(source=source, tag=RESULT)
            with self._lock:
                self._free.append(source)
            self._busy -= 1
            self.report(outcome)
            return True
        return sent

    def _loop(self) -> None:
        try:
            delay = _FIRST_DELAY
            while True:
                if self._step():
                    delay = _FIRST_DELAY
                    continue
                with self._lock:
                    idle = not self._busy and not self._outbox
                if self._aborting or (idle and self._stopping):
                    return
                self._wake.wait(_IDLE_WAIT if idle else delay)
                self._wake.clear()
                delay = min(_BACKOFF_CAP, delay * 2)
        except BaseException:  # never leave rank 0 waiting on a dead dispatcher
            traceback.print_exc()
            sys.stderr.flush()
            self._comm.Abort(1)

    def abort(self) -> None:
        """Release the worker ranks without waiting for the results still out."""
        self._stopping = self._aborting = True
        self.close()

    def close(self) -> None:
        """Stop the dispatcher, then release every worker rank (exactly once)."""
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        release(self._comm)


def release(comm: Any) -> None:
    """Send STOP to every worker rank, once per process (they exit when they get it)."""
    global _released
    if _released:
        return
    _released = True
    for rank in range(1, comm.Get_size()):
        comm.send(None, dest=rank, tag=STOP)
