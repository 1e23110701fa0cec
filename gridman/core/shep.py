"""The Shepherd: reconciles a grid's herd with what already ran, as an explicit plan.

``make_plan`` is pure: from each XP's current state and the submit rules it decides submit /
keep / cancel / resubmit, each with a reason. ``--dry-run`` prints the plan; ``commit`` executes
it through a backend (cancels first, then submissions grouped into job arrays).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional

from .jobs import JobRecord, State


@dataclass(frozen=True)
class Rules:
    """What the user asked for on the command line."""

    retry: bool = False  # -r: resubmit failed, cancelled, timed out, vanished
    replace: bool = False  # -R: cancel and resubmit pending/running ones
    replace_done: bool = False  # -D: resubmit completed ones
    cancel: bool = False  # -C: cancel pending/running ones, submit nothing
    clear: bool = False  # --clear: cancel, delete the folders, submit again


class Action(str, enum.Enum):
    SUBMIT = "submit"
    KEEP = "keep"
    CANCEL = "cancel"
    RESUBMIT = "resubmit"  # cancel what runs (if anything), then submit

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Step:
    """What happens to one XP, and why."""

    sig: str
    action: Action
    reason: str
    state: Optional[str]
    removed: bool = False  # the XP is no longer in the grid file

    @property
    def cancels(self) -> bool:
        live = self.state in (State.PENDING.value, State.RUNNING.value, State.UNKNOWN.value)
        return self.action is Action.CANCEL or (self.action is Action.RESUBMIT and live)

    @property
    def submits(self) -> bool:
        return self.action in (Action.SUBMIT, Action.RESUBMIT)


@dataclass(frozen=True)
class Plan:
    """The steps for every XP of the grid (and for XPs removed from it)."""

    steps: tuple[Step, ...]

    def to_submit(self) -> list[str]:
        return [s.sig for s in self.steps if s.submits]

    def to_cancel(self) -> list[str]:
        return [s.sig for s in self.steps if s.cancels]

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for step in self.steps:
            out[step.action.value] += 1
        return out

    def step(self, sig: str) -> Step:
        return next(s for s in self.steps if s.sig == sig)


_FAILED = {
    State.FAILED, State.CANCELLED, State.VANISHED, State.TIMEOUT, State.PREEMPTED,
    State.OUT_OF_MEMORY, State.NODE_FAIL,
}  # fmt: skip


def plan_one(job: Optional[JobRecord], rules: Rules) -> tuple[Action, str]:
    """The action for one XP of the grid, with its reason."""
    state = job.state if job else None
    if rules.clear:
        return Action.RESUBMIT, "--clear: start over"
    if state is None:
        if rules.cancel:
            return Action.KEEP, "never submitted; nothing to cancel"
        return Action.SUBMIT, "new XP"
    latest = job.latest if job else None
    if state in (State.PENDING, State.RUNNING, State.UNKNOWN):
        if rules.cancel:
            return Action.CANCEL, f"{state.value.lower()}; --cancel"
        if rules.replace:
            return Action.RESUBMIT, f"{state.value.lower()}; --replace"
        return Action.KEEP, f"{state.value.lower()} ({latest.backend if latest else '?'})"
    if rules.cancel:
        return Action.KEEP, f"{state.value.lower()}; nothing to cancel"
    if state is State.COMPLETED:
        if rules.replace_done:
            return Action.RESUBMIT, "completed; --replace-done"
        return Action.KEEP, "completed"
    if state is State.VANISHED and latest is not None and latest.started is None:
        return Action.SUBMIT, "lost before it started (its queue or allocation is gone)"
    code = f" (exit {latest.exit_code})" if latest and latest.exit_code is not None else ""
    if state in _FAILED and rules.retry:
        return Action.SUBMIT, f"{state.value.lower()}{code}; --retry"
    return Action.KEEP, f"{state.value.lower()}{code}; --retry resubmits it"


def plan_removed(job: Optional[JobRecord], holders: Sequence[str]) -> tuple[Action, str]:
    """The action for an XP the grid asked for last time but no longer does."""
    state = job.state if job else None
    if state not in (State.PENDING, State.RUNNING, State.UNKNOWN):
        return Action.KEEP, "removed from the grid; not running"
    if holders:
        return Action.KEEP, f"removed from the grid; still held by grid {', '.join(holders)}"
    return Action.CANCEL, "removed from the grid file"


def make_plan(
    jobs: Iterable[tuple[str, Optional[JobRecord]]],
    rules: Rules,
    removed: Iterable[tuple[str, Optional[JobRecord], Sequence[str]]] = (),
) -> Plan:
    """The plan for the grid's XPs ``(sig, job)`` and the removed ones ``(sig, job, holders)``."""
    steps = []
    for sig, job in jobs:
        action, reason = plan_one(job, rules)
        steps.append(Step(sig, action, reason, job.state.value if job and job.state else None))
    for sig, job, holders in removed:
        action, reason = plan_removed(job, holders)
        state = job.state.value if job and job.state else None
        steps.append(Step(sig, action, reason, state, removed=True))
    return Plan(tuple(steps))
