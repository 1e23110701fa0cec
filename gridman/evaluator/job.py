"""What the evaluator hands around: job statuses, finished jobs, the running job, messages.

``Job`` is what ``gather`` returns: a frozen snapshot of one evaluation (its id, parameters,
status, objective and metadata). ``RunningJob`` is what the run function receives. ``Task`` and
``Outcome`` are the two messages between the evaluator and its workers (threads, processes or
MPI ranks): small frozen dataclasses of plain data, so they pickle cheaply.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import GridmanError

#: An objective: a number, a tuple of numbers (several objectives), or ``"F..."`` (a failure).
Objective = Any


class JobStatus(str, enum.Enum):
    """Where a job is: queued in the evaluator, handed to a worker, or finished."""

    READY = "READY"  # submitted, waiting for a free worker
    RUNNING = "RUNNING"  # handed to a worker
    DONE = "DONE"  # finished with an objective
    FAILED = "FAILED"  # finished with a failure ("F..." objective)
    CANCELLED = "CANCELLED"  # never ran: the evaluator was closed first

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED)


class MaximumJobsSpawnReached(GridmanError):
    """``submit`` would make the evaluator spawn more than ``max_jobs`` jobs.

    Nothing of that ``submit`` call was queued; ``remaining`` says how many more jobs may still
    be spawned (configurations answered from the cache spawn nothing and always pass).
    """

    def __init__(self, max_jobs: int, spawned: int, wanted: int) -> None:
        self.max_jobs = max_jobs
        self.spawned = spawned
        self.remaining = max(0, max_jobs - spawned)
        super().__init__(
            f"max_jobs={max_jobs} reached: {spawned} job(s) spawned so far and this submit "
            f"needs {wanted} more",
            f"submit at most {self.remaining} more configuration(s), or raise max_jobs",
        )


@dataclass(frozen=True)
class Job:
    """One evaluation as ``gather`` returns it (a snapshot: it never changes).

    ``objective`` is a float (or whatever number the run function returned), a tuple for
    several objectives, or a string starting with ``F`` for a failed job. ``metadata`` holds
    the run function's own metadata plus ``timestamp_submit``, ``timestamp_start``,
    ``timestamp_end`` and ``timestamp_gather`` (seconds since the epoch) and, for a failure,
    ``error`` and ``traceback``. ``cached`` is True when the result came from an earlier
    evaluation of the same configuration (``log_dir``) instead of a run.
    """

    id: int
    parameters: Mapping[str, Any]
    status: JobStatus
    objective: Objective = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sig: Optional[str] = None
    cached: bool = False

    @property
    def failed(self) -> bool:
        return self.status is JobStatus.FAILED

    @property
    def output(self) -> dict[str, Any]:
        """``{"objective": ..., "metadata": {...}}`` (DeepHyper's ``job.output``)."""
        return {"objective": self.objective, "metadata": dict(self.metadata)}


@dataclass(frozen=True)
class RunningJob(Mapping[str, Any]):
    """What the run function receives: the job's id and parameters (also as a mapping).

    ``job["x"]`` is ``job.parameters["x"]``. With persistence on, ``sig`` is the
    configuration's signature and ``folder`` its XP folder (``<log_dir>/xps/<sig>``), a place
    for checkpoints that a later evaluation of the same configuration finds again.
    """

    id: int
    parameters: Mapping[str, Any]
    sig: Optional[str] = None
    folder: Optional[Path] = None

    def __getitem__(self, key: str) -> Any:
        return self.parameters[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)


@dataclass(frozen=True)
class Task:
    """Evaluator -> worker: run this configuration (and record it there when ``folder``)."""

    id: int
    parameters: Mapping[str, Any]
    submitted: float
    method: str
    sig: Optional[str] = None
    folder: Optional[str] = None
    #: with persistence: whether a result recorded meanwhile by another process may be reused
    cache: bool = True

    def running_job(self) -> RunningJob:
        folder = Path(self.folder) if self.folder else None
        return RunningJob(id=self.id, parameters=self.parameters, sig=self.sig, folder=folder)


@dataclass(frozen=True)
class Outcome:
    """Worker -> evaluator: how one task ended (plain data; never an exception object)."""

    id: int
    objective: Objective
    failed: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)
    cached: bool = False
