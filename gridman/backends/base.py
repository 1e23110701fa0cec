"""The backend interface: submit, poll (one batch), cancel. Nothing backend-specific leaks out.

A backend records what it does in each XP's ``job.json`` (jobs.py), with the same states on
every backend, so that any later command, whatever its backend, can read them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.jobs import JobRecord
from ..core.resources import Resources


@dataclass(frozen=True)
class Submission:
    """One XP to run."""

    sig: str
    folder: Path
    argv: tuple[str, ...]
    resources: Resources
    array: int = 0  # XPs with the same array id go out together when the backend can


@dataclass(frozen=True)
class LaunchContext:
    """Where and how XPs run: the project, its main, the environment to give them."""

    root: Path  # XPs run in this folder
    dir: Path  # the XP root (<dir>/xps/<sig>)
    main_spec: str
    env: Mapping[str, str]  # the scheduling command's environment
    settings: Mapping[str, Any] = field(default_factory=dict)  # gridman.yaml section + CLI
    python: str = ""
    progress: Optional[Callable[[str], None]] = None  # long submissions report through this


class Backend(abc.ABC):
    """Runs XPs somewhere and reports their states."""

    name = "?"

    def __init__(self, ctx: LaunchContext) -> None:
        self.ctx = ctx

    def check(self, submissions: Sequence[Submission]) -> None:
        """Raise a GridmanError if these cannot run here (called at plan time)."""
        return None

    @abc.abstractmethod
    def submit(self, submissions: Sequence[Submission]) -> None:
        """Start (or queue) these XPs, recording a new attempt for each."""

    @abc.abstractmethod
    def poll(self, jobs: Sequence[tuple[Path, JobRecord]]) -> dict[Path, JobRecord]:
        """Fresh records for live jobs (one batch); jobs missing from the result are unchanged."""

    @abc.abstractmethod
    def cancel(self, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
        """Stop these jobs; returns once their records say CANCELLED (or another end)."""

    def describe(self, submissions: Sequence[Submission] = ()) -> str:
        """One line for the user: what this backend will do with these XPs."""
        return self.name

    def wait_hint(self) -> Optional[str]:
        return None
