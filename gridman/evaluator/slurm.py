"""The evaluator's ``slurm`` method: the tasks handed over together go out as one job array.

A driven backend: ``start`` only holds tasks; ``poll`` (called right after ``submit`` and by
``gather``) sends what it holds through submitit as job arrays (split at ``MaxArraySize``), then
collects results. A job's result is the pickle submitit writes when the run function returns
(the shared worker turns every way it can end into an Outcome); a job that Slurm ended without
one (time limit, cancel, out of memory, node failure) fails as ``F_<STATE>``, read from one
``squeue`` per poll (and ``sacct`` for jobs that left the queue), so that it works without
accounting too and never waits forever on a dead job, as submitit's own ``result()`` does.
"""

from __future__ import annotations

import contextlib
import io
import secrets
import shlex
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from ..backends.base import Submission
from ..backends.slurm import array_chunks, sbatch_parameters
from ..backends.slurm_query import SlurmError, SlurmView, max_array_size, scancel
from ..core.jobs import State
from ..core.resources import Resources
from ..errors import UsageError
from .backends import Backend, Report
from .job import Outcome, Task
from .outcome import failure
from .worker import RunFunction, execute

_RESULT_GRACE = 10.0  # seconds a COMPLETED job's result pickle may take to appear (NFS)


class SlurmEnded(Exception):
    """A Slurm job ended without a result."""


class SlurmBackend(Backend):
    """Runs each task as a Slurm job (array task); ``slurm``: the resources (Dora's keys)."""

    name = "slurm"
    driven = True

    def __init__(
        self,
        run_function: RunFunction,
        kwargs: Optional[Mapping[str, Any]],
        num_workers: int,
        report: Report,
        folder: Path,
        slurm: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(run_function, kwargs, num_workers, report)
        try:
            self.resources = Resources().with_changes(dict(slurm or {}))
        except UsageError as exc:
            raise UsageError(f"slurm={dict(slurm or {})!r}: {exc.message}", exc.hint) from None
        self.folder = Path(folder)
        self.view = SlurmView(self.folder, cache_s=0.0)
        self._held: list[Task] = []
        self._live: dict[str, tuple[Task, Any, float]] = {}  # job id -> task, job, ended-at
        self.sbatch_calls = 0

    def start(self, task: Task) -> None:
        self._held.append(task)

    def poll(self, timeout: float) -> None:
        if self._held:
            held, self._held = self._held, []
            self._submit(held)
        deadline = time.monotonic() + timeout
        while True:
            self._collect()
            left = deadline - time.monotonic()
            if not self._live or left <= 0:
                return
            time.sleep(min(0.5, left))

    def _submit(self, tasks: list[Task]) -> None:
        subs = [Submission(str(t.id), self.folder, (), self.resources) for t in tasks]
        by_id = {str(t.id): t for t in tasks}
        try:
            size = max_array_size()
            for chunk in array_chunks(subs, size):
                self._submit_chunk([by_id[s.sig] for s in chunk])
        except SlurmError as exc:
            submitted = {t.id for t, _, _ in self._live.values()}
            for task in tasks:
                if task.id not in submitted:
                    self.report(failure(task.id, exc, "sbatch: "))

    def _submit_chunk(self, tasks: list[Task]) -> None:
        import submitit

        name = f"gridman-eval-{secrets.token_hex(4)}"
        try:
            executor = submitit.SlurmExecutor(folder=self.folder / "jobs",
                                              python=shlex.quote(sys.executable))  # fmt: skip
            executor.update_parameters(**sbatch_parameters(self.resources, name, 90))
            self.sbatch_calls += 1
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                jobs = [executor.submit(execute, self.run_function, self.kwargs, task)
                        for task in tasks]  # fmt: skip
        except Exception as exc:  # submitit raises several kinds; all mean sbatch failed
            raise SlurmError(f"sbatch failed: {str(exc).strip()}") from None
        for task, job in zip(tasks, jobs):
            self._live[str(job.job_id)] = (task, job, 0.0)

    def _collect(self) -> None:
        waiting = []
        for job_id, (task, job, _) in list(self._live.items()):
            if job.paths.result_pickle.exists():
                del self._live[job_id]
                self.report(_outcome(task, job))
            else:
                waiting.append(job_id)
        if not waiting:
            return
        queue = self.view.queue(fresh=True)
        gone = self.view.finished([i for i in waiting if i not in queue])
        for job_id in waiting:
            info = queue.get(job_id) or gone.get(job_id)
            if info is None or not info.state.finished:
                continue
            task, job, ended = self._live[job_id]
            if info.state is State.COMPLETED and not ended:
                self._live[job_id] = (task, job, time.monotonic())  # its pickle may lag
                continue
            if info.state is State.COMPLETED and time.monotonic() - ended < _RESULT_GRACE:
                continue
            del self._live[job_id]
            exc = SlurmEnded(f"job {job_id} ended {info.raw} without a result")
            self.report(_named_failure(task, info.state.value, exc))

    def abort(self) -> None:
        with contextlib.suppress(SlurmError):
            scancel(list(self._live))
        self._live.clear()


def _outcome(task: Task, job: Any) -> Outcome:
    try:
        outcome = job.result()
    except Exception as exc:  # the job's own error (it could not even run the worker)
        return failure(task.id, exc, "in the Slurm job: ")
    if isinstance(outcome, Outcome):
        return outcome
    return failure(task.id, TypeError(f"unexpected result {outcome!r}"))


def _named_failure(task: Task, state: str, exc: BaseException) -> Outcome:
    base = failure(task.id, exc)
    return Outcome(id=base.id, objective=f"F_{state}", failed=True, metadata=base.metadata)
