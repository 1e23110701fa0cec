"""Where tasks run: the narrow interface between the evaluator and its workers.

A backend receives tasks through ``start`` (never more than ``capacity`` at once: the evaluator
keeps the rest queued) and reports each Outcome through the ``report`` callable it was given,
from whatever thread it likes. ``lazy`` backends are handed tasks only inside ``gather``;
``driven`` ones make progress only when ``poll`` is called (by ``gather`` and ``close``).

- ``serial``: lazy and driven: ``poll`` runs the one task it holds, in the caller's thread.
- ``thread``: ``num_workers`` threads taking tasks from one queue.
- ``process``: ``num_workers`` worker processes, each with its own pipe (procpool.py).

Both pools are gridman's own rather than ``concurrent.futures``: no Future per task, and a
process pool that knows which task each worker holds, so a worker that dies (a segfault,
``os._exit``, the OOM killer) fails its own task only (``F_WorkerDied``) and is replaced,
where a stdlib pool breaks and fails every task in it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable, Optional

from .job import Outcome, Task
from .outcome import failure
from .worker import RunFunction, execute

Report = Callable[[Outcome], None]


class Backend:
    """Base of the evaluator's backends (see the module docstring)."""

    name = ""
    lazy = False
    driven = False

    def __init__(
        self,
        run_function: RunFunction,
        kwargs: Optional[Mapping[str, Any]],
        num_workers: int,
        report: Report,
    ) -> None:
        self.run_function = run_function
        self.kwargs = dict(kwargs or {})
        self.num_workers = num_workers
        self.report = report

    @property
    def capacity(self) -> int:
        """How many tasks may be handed over and not yet reported."""
        return self.num_workers

    def start(self, task: Task) -> None:
        raise NotImplementedError

    def poll(self, timeout: float) -> None:
        """Make progress for at most ``timeout`` seconds (driven backends only)."""

    def close(self) -> None:
        """Release the workers; nothing is in flight when the evaluator calls this."""

    def abort(self) -> None:
        """Release the workers now, even with tasks in flight (after an interrupt)."""
        self.close()


class SerialBackend(Backend):
    """One task at a time, in the thread that calls ``gather``: the way to debug a run function
    (a breakpoint in it just works)."""

    name = "serial"
    lazy = True
    driven = True

    def __init__(
        self, run_function: RunFunction, kwargs: Optional[Mapping[str, Any]], report: Report
    ) -> None:
        super().__init__(run_function, kwargs, 1, report)
        self._held: deque[Task] = deque()

    def start(self, task: Task) -> None:
        self._held.append(task)

    def poll(self, timeout: float) -> None:
        if self._held:
            task = self._held.popleft()
            try:
                outcome = execute(self.run_function, self.kwargs, task)
            except BaseException as exc:  # Ctrl-C: the job failed, then the interrupt goes on
                self.report(failure(task.id, exc))
                raise
            self.report(outcome)


class ThreadBackend(Backend):
    """``num_workers`` threads (for run functions that release the GIL or wait on I/O)."""

    name = "thread"

    def __init__(
        self,
        run_function: RunFunction,
        kwargs: Optional[Mapping[str, Any]],
        num_workers: int,
        report: Report,
    ) -> None:
        super().__init__(run_function, kwargs, num_workers, report)
        self._queue: queue.SimpleQueue[Optional[Task]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, task: Task) -> None:
        self._queue.put(task)
        if len(self._threads) < self.num_workers:  # threads start with the first tasks
            with self._lock:
                if len(self._threads) < self.num_workers:
                    name = f"gridman-evaluator-{len(self._threads)}"
                    thread = threading.Thread(target=self._work, name=name, daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            # The report (and the start of the next task) happens in this very thread.
            self.report(execute(self.run_function, self.kwargs, task))

    def close(self) -> None:
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()

    def abort(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:  # tasks not started yet are dropped
                self._queue.get_nowait()
        with self._lock:
            threads = len(self._threads)
        for _ in range(threads):
            self._queue.put(None)  # threads cannot be killed: they stop after their task
