"""A fake backend for tests: the proof that a backend is one module plus one registry line.

Registered by adding ``"gridman.testing.fake_backend"`` to ``gridman.backends.registry.MODULES``
(tests do it with ``monkeypatch``), it is then picked by ``gridman grid NAME --backend fake``
with nothing else changed: it runs each XP at submission, as a child process through the
shared attempt entry (backends/attempt.py), records it under job ids ``fake-<sig>``, and owns
a ``fake:`` section in gridman.yaml (``note``: a string, written in each attempt's record).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from ..backends.attempt import AttemptSpec, run_here
from ..backends.base import Backend, BackendSpec, Submission
from ..core.jobs import JobRecord
from ..errors import UsageError

NAME = "fake"


class FakeBackend(Backend):
    """Runs XPs one after the other, each in a child process, before ``submit`` returns."""

    name = NAME

    def describe(self, submissions: Sequence[Submission] = ()) -> str:
        return f"fake ({len(submissions)} XPs, note {self.ctx.settings.get('note')!r})"

    def submit(self, submissions: Sequence[Submission]) -> None:
        for sub in submissions:
            spec = AttemptSpec.for_xp(self.ctx, sub.sig, sub.folder, sub.argv, NAME,
                                      job_id=f"fake-{sub.sig}")  # fmt: skip
            run_here(spec)

    def poll(self, jobs: Sequence[tuple[Path, JobRecord]]) -> dict[Path, JobRecord]:
        return {}  # its jobs have ended when submit returns

    def cancel(self, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
        return None


def _check_values(section: Mapping[str, Any]) -> None:
    note = section.get("note")
    if note is not None and not isinstance(note, str):
        raise UsageError(f"note must be a string, got {note!r}")


def _label(job_id: str) -> Optional[str]:
    return f"<{job_id}>"  # so that tests can tell the backend's label from the raw id


BACKEND = BackendSpec(
    name=NAME,
    description="a fake backend for tests (gridman.testing.fake_backend)",
    factory=FakeBackend,
    keys=("note",),
    check_values=_check_values,
    job_label=_label,
)
