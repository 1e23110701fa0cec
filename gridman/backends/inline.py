"""The inline backend: runs each XP in this very process, one after the other.

For debugging (a breakpoint in the training code just works) and for fast tests of the whole
grid path. Output goes to the attempt's log; the attempt is recorded by the shared runner
(attempt.py), as on every backend. This module and its one line in registry.py are all there
is to it: the model of a new backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.jobs import JobRecord
from ..core.loader import load_main
from ..core.project import load_project
from .attempt import run_in_process
from .base import Backend, BackendSpec, Submission


class InlineBackend(Backend):
    """Runs XPs synchronously, in-process, at submission."""

    name = "inline"

    def submit(self, submissions: Sequence[Submission]) -> None:
        if not submissions:
            return
        main = load_main(load_project(self.ctx.root), self.ctx.main_spec)
        for sub in submissions:
            run_in_process(sub.folder, main, sub.argv, self.ctx.root, self.name)

    def poll(self, jobs: Sequence[tuple[Path, JobRecord]]) -> dict[Path, JobRecord]:
        return {}  # inline jobs have ended by the time submit returns

    def cancel(self, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
        return None


BACKEND = BackendSpec(
    name="inline",
    description="in this process, one XP after the other (debugging, tests)",
    factory=InlineBackend,
)
