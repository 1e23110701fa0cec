"""Asynchronous evaluation of a Python function over configurations (issue 6).

Search algorithms (random search, successive halving, Bayesian optimisation, a loop of one's
own) submit configurations and gather results as they finish::

    from gridman.evaluator import Evaluator, RunningJob

    def run(job: RunningJob) -> float:
        return -(job.parameters["x"] - 2) ** 2

    with Evaluator.create(run, method="process", method_kwargs={"num_workers": 4}) as ev:
        ev.submit([{"x": 0.5}, {"x": 1.5}])
        done = ev.gather("BATCH", size=1)

Methods ``serial``, ``thread``, ``process``, ``mpi`` and ``slurm``. With
``log_dir``, every configuration is an XP keyed by the signature of its parameters: results
survive the search process and a configuration already evaluated is not run again. See
docs/evaluator.md.
"""

from __future__ import annotations

from . import callbacks
from .callbacks import Callback, ProgressBar
from .evaluator import METHODS, Evaluator
from .job import Job, JobStatus, MaximumJobsSpawnReached, RunningJob
from .profiling import profile

__all__ = [
    "METHODS",
    "Callback",
    "Evaluator",
    "Job",
    "JobStatus",
    "MaximumJobsSpawnReached",
    "ProgressBar",
    "RunningJob",
    "callbacks",
    "profile",
]
