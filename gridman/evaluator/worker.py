"""The worker side, shared by every method: run one task and return its Outcome.

``execute`` never raises an Exception: whatever the run function does (returns garbage, raises,
calls ``sys.exit``) and whatever recording the result on disk does, the worker returns an
Outcome and goes on. Threads, worker processes and MPI ranks all call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

from .job import Outcome, Task
from .outcome import call, failure

RunFunction = Callable[..., Any]


def execute(run_function: RunFunction, kwargs: Optional[Mapping[str, Any]], task: Task) -> Outcome:
    """Run ``task`` (recording it when it has a folder); never raises an Exception."""

    def run(t: Task) -> Outcome:
        return call(run_function, t, kwargs)

    if task.folder is None:
        return run(task)
    try:
        from .store import run_recorded  # only with persistence: keeps the import light

        return run_recorded(run, task, Path(task.folder))
    except Exception as exc:
        return failure(task.id, exc, "recording the evaluation: ")
