"""The ``process`` method: a pool of worker processes, each fed through its own pipe.

The run function (and ``run_function_kwargs``) reach each worker once, when it starts: with
the ``fork`` start method (Linux's default before Python 3.14) by inheritance, so anything
works, even a lambda; with ``spawn``/``forkserver`` by pickling, so it must be importable (a
module-level function of a module, not of an interactive ``__main__``). Tasks and outcomes
are the only per-job traffic.

A daemon thread of the evaluator's process waits on every worker's pipe and process sentinel
(``multiprocessing.connection.wait``: no polling). The pool knows which task each worker
holds, so a worker that dies (a segfault, ``os._exit``, the OOM killer) fails exactly its own
task (``F_WorkerDied`` with the exit code) and is replaced; tasks queued behind it go to the
new worker. Workers ignore SIGINT (Ctrl-C is the search's to handle) and exit when their pipe
closes or the evaluator's process disappears.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from .backends import Backend, Report
from .job import Outcome, Task
from .outcome import failure
from .worker import RunFunction, execute

WORKER_DIED = "F_WorkerDied"
_ORPHAN_CHECK = 1.0  # seconds between checks that the evaluator's process is still there
_JOIN = 5.0
#: Set when multiprocessing's exit handler starts: from then on a worker that dies was killed
#: by it (it terminates daemonic children, then joins every child) and must not be replaced,
#: or that join waits forever on the replacement, which waits for tasks.
_exiting = threading.Event()
_watching = False


def _watch_exit() -> None:
    """Import multiprocessing's exit handler now, and have it set ``_exiting`` first thing.

    Its finalizers with an exit priority run before it terminates the children. This matters
    for pools the exit handler of the evaluator did not stop: an evaluator that was garbage
    collected without being closed (its pool lives on in its thread).
    """
    global _watching
    from multiprocessing import util

    if not _watching:
        util.Finalize(None, _exiting.set, exitpriority=100)
        _watching = True


def serve_pipe(
    conn: Any, run_function: RunFunction, kwargs: Mapping[str, Any], parent: int
) -> None:
    """A worker process: run each task received on ``conn`` and send its Outcome back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        while not conn.poll(_ORPHAN_CHECK):
            if os.getppid() != parent:
                return  # the evaluator's process died: nobody will read our results
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        outcome = execute(run_function, kwargs, task)
        try:
            conn.send(outcome)
        except Exception as exc:  # something in the result does not pickle
            conn.send(failure(task.id, exc, "sending the result: "))


@dataclass
class _Worker:
    process: Any
    conn: Any
    tasks: deque[Task] = field(default_factory=deque)  # sent, in order; the first one runs
    unsent: deque[Task] = field(default_factory=deque)  # its pipe broke: for its replacement


class ProcessBackend(Backend):
    """``num_workers`` processes; ``prefetch`` more tasks per worker may wait in its pipe
    (for very short jobs; keep their parameters small then: a pipe holds about 200 KiB)."""

    name = "process"

    def __init__(
        self,
        run_function: RunFunction,
        kwargs: Optional[Mapping[str, Any]],
        num_workers: int,
        report: Report,
        start_method: Optional[str] = None,
        prefetch: Optional[int] = None,
    ) -> None:
        super().__init__(run_function, kwargs, num_workers, report)
        import multiprocessing

        _watch_exit()  # before the evaluator registers its exit handler: see evaluator.py
        self._context: Any = multiprocessing.get_context(start_method)
        self.start_method: str = self._context.get_start_method()
        self.prefetch = max(0, int(prefetch or 0))
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._thread: Optional[threading.Thread] = None
        self._closing = False

    @property
    def capacity(self) -> int:
        return self.num_workers * (1 + self.prefetch)

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=serve_pipe,
            args=(child, self.run_function, self.kwargs, os.getpid()),
            name="gridman-evaluator-worker",
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def start(self, task: Task) -> None:
        with self._lock:
            if not self._workers:
                self._workers = [self._spawn() for _ in range(self.num_workers)]
                self._thread = threading.Thread(
                    target=self._loop, name="gridman-evaluator-pool", daemon=True
                )
                self._thread.start()
            self._send(min(self._workers, key=lambda w: len(w.tasks) + len(w.unsent)), task)

    def _send(self, worker: _Worker, task: Task) -> None:
        """Under the lock. A worker that died before its death was noticed cannot take the
        task: it goes to the worker that replaces it (see ``_died``)."""
        worker.tasks.append(task)
        try:
            worker.conn.send(task)
        except OSError:  # a broken pipe: the worker is dead, its sentinel will say so
            worker.tasks.pop()
            worker.unsent.append(task)
        except BaseException:  # the task does not pickle: the evaluator fails that job
            worker.tasks.pop()
            raise

    def _loop(self) -> None:
        from multiprocessing.connection import wait

        while True:
            with self._lock:
                if self._closing and not any(w.process.is_alive() for w in self._workers):
                    return
                by_handle: dict[Any, _Worker] = {}
                for worker in self._workers:
                    by_handle[worker.conn] = worker
                    by_handle[worker.process.sentinel] = worker
            for handle in wait(list(by_handle), timeout=_JOIN if self._closing else None):
                worker = by_handle[handle]
                if handle is worker.conn:
                    self._receive(worker)
                else:
                    self._died(worker)

    def _receive(self, worker: _Worker) -> bool:
        """Take one outcome from ``worker``; False when its pipe is closed (it died)."""
        try:
            outcome = worker.conn.recv()
        except (EOFError, OSError):
            return False  # its sentinel will say so
        with self._lock:
            if worker.tasks:
                worker.tasks.popleft()
        self.report(outcome)
        return True

    def _died(self, worker: _Worker) -> None:
        """A worker process ended: take what it sent, fail the task it held, replace it."""
        while True:
            try:
                if not worker.conn.poll():
                    break
            except (EOFError, OSError):
                break
            if not self._receive(worker):
                break
        lost: list[tuple[Task, Outcome]] = []
        with self._lock:
            if worker not in self._workers:
                return
            worker.process.join()
            worker.conn.close()
            index = self._workers.index(worker)
            if self._closing or _exiting.is_set():  # at exit: multiprocessing killed it
                self._workers.pop(index)
                return  # closing: nothing is in flight (or, aborting, nothing matters)
            if worker.tasks:
                held = worker.tasks.popleft()
                code = worker.process.exitcode
                error = f"the worker process running this job died (exit code {code})"
                lost.append((held, Outcome(held.id, WORKER_DIED, True, {"error": error})))
            fresh = self._spawn()
            self._workers[index] = fresh
            for queued in (*worker.tasks, *worker.unsent):  # never started: to the new worker
                self._send(fresh, queued)
        for task, outcome in lost:
            self._record(task, outcome)
            self.report(outcome)

    @staticmethod
    def _record(task: Task, outcome: Outcome) -> None:
        """With persistence, record the death of a worker as the end of its attempt."""
        try:
            from .store import record_lost

            record_lost(task, outcome)
        except Exception:  # best effort: the job already failed, the XP shows VANISHED
            pass

    def close(self) -> None:
        with self._lock:
            self._closing = True
            workers = list(self._workers)
        for worker in workers:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
        self._join(workers)

    def abort(self) -> None:
        with self._lock:
            self._closing = True
            workers = list(self._workers)
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
        self._join(workers)

    def _join(self, workers: list[_Worker]) -> None:
        for worker in workers:
            worker.process.join(_JOIN)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
