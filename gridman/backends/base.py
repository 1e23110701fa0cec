"""The backend interface: submit, poll (one batch), cancel; and ``BackendSpec``, what a backend
module declares about itself (name, gridman.yaml section, automatic choice, job ids).

A backend records what it does in each XP's ``job.json`` (jobs.py), with the same states on
every backend, so that any later command, whatever its backend, can read them.
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.jobs import JobRecord
from ..core.resources import FIELD_NAMES, Resources
from ..errors import UsageError


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


def _as_is(job_id: str) -> Optional[str]:
    return job_id


@dataclass(frozen=True)
class Choice:
    """Why the automatic choice may pick a backend on this machine, in this process."""

    reason: str
    #: Beats ``backend:`` in gridman.yaml: the process is already one of the backend's own
    #: (a rank of an MPI job must serve its job whatever the project's default is).
    over_config: bool = False


@dataclass(frozen=True)
class BackendSpec:
    """Everything gridman needs to know about a backend, declared once in its module as
    ``BACKEND`` and listed in registry.py. Nothing outside ``gridman.backends`` names one."""

    name: str
    description: str
    factory: Callable[[LaunchContext], Backend]
    #: Keys of its own ``gridman.yaml`` section (``local: {workers: 4}``).
    keys: tuple[str, ...] = ()
    #: Checks the section's values (its keys are checked already); raises UsageError.
    check_values: Optional[Callable[[Mapping[str, Any]], None]] = None
    #: Whether the automatic choice may pick it here, and why (None: not here).
    detect: Optional[Callable[[Mapping[str, str]], Optional[Choice]]] = None
    #: Other names its job records carry (``gridman run`` writes ``foreground``).
    aliases: tuple[str, ...] = ()
    #: Its job id as ``gridman info`` shows it; None hides it (a pid is shown instead).
    job_label: Callable[[str], Optional[str]] = _as_is
    #: Its section's other keys are resources every launcher starts from (Dora's ``slurm:``).
    resource_defaults: bool = False
    #: Runs the command line's entry point when this process belongs to the backend (every
    #: rank of an MPI job runs gridman); returns the exit status, or None to run it normally.
    entry: Optional[Callable[[Callable[[], Any]], Optional[int]]] = None

    def section_keys(self) -> tuple[str, ...]:
        return self.keys + (FIELD_NAMES if self.resource_defaults else ())

    def check_section(self, section: Mapping[str, Any]) -> None:
        """Raise a UsageError naming the first bad key or value of its gridman.yaml section."""
        valid = self.section_keys()
        for key in section:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                known = ", ".join(valid) if valid else "none (it takes no settings)"
                raise UsageError(f"unknown key {key!r}", f"{hint}valid keys: {known}")
        if self.resource_defaults:
            Resources().with_changes(self.resources(section))
        if self.check_values is not None:
            self.check_values(section)

    def resources(self, section: Mapping[str, Any]) -> dict[str, Any]:
        """The resource defaults its section holds ({} unless ``resource_defaults``)."""
        if not self.resource_defaults:
            return {}
        return {k: v for k, v in section.items() if k not in self.keys}


def check_flag(section: Mapping[str, Any], key: str) -> None:
    """A gridman.yaml section's ``key``, when set, is a boolean (a clear error otherwise)."""
    if section.get(key) not in (None, True, False):
        raise UsageError(f"{key} must be true or false, got {section[key]!r}")
