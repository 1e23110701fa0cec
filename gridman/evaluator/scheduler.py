"""The evaluator's bookkeeping: its jobs, its queue, what runs and what is left to gather.

One ``Scheduler`` per evaluator. It keeps its own queue and hands the backend at most its
``capacity`` of tasks at once (so ``num_workers=1`` is strictly serial on every method);
backends report each Outcome from whatever thread they like through ``report``. Everything
shared sits behind one condition variable. Callback events are queued and fired by ``fire`` in
the thread that calls ``submit``, ``gather`` or ``close``, never in a worker's thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .job import Job, JobStatus, MaximumJobsSpawnReached, Outcome, Task
from .outcome import failure

if TYPE_CHECKING:
    from .backends import Backend

#: What submit learnt about a configuration before queuing it: (sig, folder, stored result).
Plan = tuple[Optional[str], Optional[Path], Optional[Outcome]]


@dataclass
class Entry:
    """The scheduler's own mutable record of one job (``Job`` is its frozen snapshot)."""

    id: int
    parameters: dict[str, Any]
    submitted: float
    sig: Optional[str] = None
    folder: Optional[Path] = None
    status: JobStatus = JobStatus.READY
    outcome: Optional[Outcome] = None
    followers: list[int] = field(default_factory=list)  # the same configuration, submitted again
    gathered_at: Optional[float] = None

    def snapshot(self) -> Job:
        outcome = self.outcome
        metadata = dict(outcome.metadata) if outcome is not None else {}
        metadata["timestamp_submit"] = self.submitted
        if outcome is not None and outcome.cached:
            metadata["cached"] = True
        if self.gathered_at is not None:
            metadata["timestamp_gather"] = self.gathered_at
        return Job(
            id=self.id,
            parameters=self.parameters,
            status=self.status,
            objective=outcome.objective if outcome is not None else None,
            metadata=metadata,
            sig=self.sig,
            cached=outcome.cached if outcome is not None else False,
        )


class Scheduler:
    """Jobs, queue and results of one evaluator (see the module docstring)."""

    def __init__(
        self,
        method: str,
        cache: bool,
        retry_failed: bool,
        max_jobs: Optional[int],
        callbacks: Sequence[Any],
    ) -> None:
        import threading

        self.method = method
        self.cache = cache
        self.retry_failed = retry_failed
        self.max_jobs = max_jobs
        self.callbacks = list(callbacks)
        self.backend: Backend  # set by attach(), before any submission
        # One plain lock (never re-entered); ``with self.lock`` skips Condition's Python-level
        # __enter__, which counts when jobs take microseconds.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.entries: dict[int, Entry] = {}
        self.pending: deque[int] = deque()
        self.done: deque[int] = deque()  # finished, not gathered yet, in finishing order
        self.events: deque[tuple[str, Any]] = deque()
        self.inflight: dict[str, int] = {}  # sig -> id of the job that evaluates it
        self.memo: dict[str, Outcome] = {}  # sig -> result evaluated by this evaluator
        self.running = 0
        self.unfinished = 0
        self.spawned = 0
        self.want: Optional[int] = None  # finished jobs a waiting thread needs (0: all)
        self.closed = False
        self._next_id = 0

    def attach(self, backend: Backend) -> None:
        self.backend = backend

    # submission
    def add(self, batch: list[dict[str, Any]], plans: list[Plan]) -> tuple[list[int], list[Task]]:
        """Register a batch of configurations; returns their ids and the tasks to start."""
        ids: list[int] = []
        with self.lock:
            kinds = self._classify(plans)
            leaders = sum(1 for kind, _ in kinds if kind == "run")
            if self.max_jobs is not None and self.spawned + leaders > self.max_jobs:
                raise MaximumJobsSpawnReached(self.max_jobs, self.spawned, leaders)
            now = time.time()
            for parameters, (sig, folder, _), (kind, hit) in zip(batch, plans, kinds):
                entry = Entry(self._next_id, parameters, now, sig, folder)
                self._next_id += 1
                self.entries[entry.id] = entry
                ids.append(entry.id)
                self._event("submit", entry)
                if kind == "cached":
                    assert hit is not None
                    self._finish(entry, replace(hit, id=entry.id, cached=True))
                    continue
                self.unfinished += 1
                if kind == "follow":
                    assert sig is not None
                    self.entries[self.inflight[sig]].followers.append(entry.id)
                    continue
                self.spawned += 1
                self.pending.append(entry.id)
                if sig is not None and self.cache:
                    self.inflight[sig] = entry.id
            tasks = [] if self.backend.lazy else self.take()
        return ids, tasks

    def known(self, sig: str) -> bool:
        """Whether this evaluator has a result for ``sig`` or is evaluating it."""
        return sig in self.memo or sig in self.inflight

    def _classify(self, plans: list[Plan]) -> list[tuple[str, Optional[Outcome]]]:
        """For each plan: ("cached", result), ("follow", None) when the same configuration is
        in flight here (or earlier in the batch), or ("run", None)."""
        kinds: list[tuple[str, Optional[Outcome]]] = []
        batch: set[str] = set()
        for sig, _, hit in plans:
            if sig is None or not self.cache:
                kinds.append(("run", None))
            elif sig in self.memo or hit is not None:
                kinds.append(("cached", self.memo.get(sig, hit)))
            elif sig in self.inflight or sig in batch:
                kinds.append(("follow", None))
            else:
                kinds.append(("run", None))
                batch.add(sig)
        return kinds

    def take(self) -> list[Task]:
        """Under the lock: move queued jobs to RUNNING, up to the backend's capacity."""
        tasks = []
        capacity = self.backend.capacity
        while self.pending and self.running < capacity:
            entry = self.entries[self.pending.popleft()]
            entry.status = JobStatus.RUNNING
            self.running += 1
            folder = str(entry.folder) if entry.folder is not None else None
            tasks.append(
                Task(entry.id, entry.parameters, entry.submitted, self.method, entry.sig,
                     folder, self.cache)
            )  # fmt: skip
            self._event("launch", entry)
        return tasks

    def dispatch(self, tasks: list[Task]) -> None:
        """Outside the lock: start tasks; one that cannot start is a failed job."""
        while tasks:
            failed = []
            for task in tasks:
                try:
                    self.backend.start(task)
                except Exception as exc:
                    failed.append(failure(task.id, exc, "starting the job: "))
            tasks = self._settle(failed) if failed else []

    # results
    def report(self, outcome: Outcome) -> None:
        """Backends call this (from any thread) with each finished task's Outcome."""
        self.dispatch(self._settle([outcome]))

    def _settle(self, outcomes: list[Outcome]) -> list[Task]:
        with self.lock:
            for outcome in outcomes:
                entry = self.entries.get(outcome.id)
                if entry is None or entry.outcome is not None:
                    continue
                if entry.status is JobStatus.RUNNING:
                    self.running -= 1
                self._finish(entry, outcome)
                self.unfinished -= 1
                for follower in entry.followers:
                    copy = replace(outcome, id=follower, cached=True)
                    self._finish(self.entries[follower], copy)
                    self.unfinished -= 1
                if entry.sig is not None and self.inflight.get(entry.sig) == entry.id:
                    del self.inflight[entry.sig]
                    if not (outcome.failed and self.retry_failed):
                        self.memo[entry.sig] = outcome
            tasks = [] if self.backend.lazy or self.closed else self.take()
            if self._wakes():
                self.cond.notify_all()
        return tasks

    def _wakes(self) -> bool:
        """Whether a waiting gather/close has something to do (waking it for every job would
        have it fight the workers for the GIL)."""
        want = self.want
        if want is None or self.events or self.unfinished == 0 or self.running == 0:
            return True
        return 0 < want <= len(self.done)

    def _finish(self, entry: Entry, outcome: Outcome) -> None:
        entry.outcome = outcome
        entry.status = JobStatus.FAILED if outcome.failed else JobStatus.DONE
        self.done.append(entry.id)
        self._event("done", entry)

    def wait(self, want: int, timeout: float) -> None:
        """Under the lock: sleep until ``want`` jobs are done (0: all), an event, or timeout."""
        self.want = want
        try:
            self.cond.wait(timeout)
        finally:
            self.want = None

    def collect(self) -> list[Job]:
        """Under the lock: the finished jobs not gathered yet, now gathered."""
        now = time.time()
        jobs = []
        while self.done:
            entry = self.entries[self.done.popleft()]
            entry.gathered_at = now
            jobs.append(entry.snapshot())
        return jobs

    def cancel_pending(self) -> None:
        """Under the lock: queued jobs (and their duplicates) will never run."""
        for job_id in self.pending:
            for cancelled in (job_id, *self.entries[job_id].followers):
                self.entries[cancelled].status = JobStatus.CANCELLED
                self.unfinished -= 1
        self.pending.clear()

    # callbacks
    def _event(self, name: str, entry: Entry) -> None:
        if self.callbacks:
            self.events.append((name, entry.snapshot()))

    def fire(self, close: bool = False) -> None:
        """Run the callbacks of the queued events, in order, in this thread."""
        if not self.callbacks:
            return
        if close:
            with self.lock:
                self.events.append(("close", None))
        while True:
            with self.lock:
                if not self.events:
                    return
                name, job = self.events.popleft()
            for callback in self.callbacks:
                hook = getattr(callback, f"on_{name}", None)
                if hook is None:
                    continue
                if name == "close":
                    hook()
                else:
                    hook(job)
