"""The Shepherd's pure plan: every state x flag combination, removed XPs, steps and counts."""

from __future__ import annotations

from typing import Optional

import pytest

from gridman.core.jobs import State
from gridman.core.shep import Action, Plan, Rules, Step, make_plan, plan_one, plan_removed
from gridman.testing.grids import job_record

SUBMIT, KEEP, CANCEL, RESUBMIT = Action.SUBMIT, Action.KEEP, Action.CANCEL, Action.RESUBMIT

RULES = {
    "none": Rules(),
    "retry": Rules(retry=True),
    "replace": Rules(replace=True),
    "replace_done": Rules(replace_done=True),
    "cancel": Rules(cancel=True),
    "clear": Rules(clear=True),
}

#: state -> expected action for each rule, in the order of RULES
#:                      none    retry   replace   replace_done cancel  clear
_NEW = (SUBMIT, SUBMIT, SUBMIT, SUBMIT, KEEP, RESUBMIT)
_LIVE = (KEEP, KEEP, RESUBMIT, KEEP, CANCEL, RESUBMIT)
_DONE = (KEEP, KEEP, KEEP, RESUBMIT, KEEP, RESUBMIT)
_BAD = (KEEP, SUBMIT, KEEP, KEEP, KEEP, RESUBMIT)
EXPECTED: dict[Optional[str], tuple[Action, ...]] = {
    None: _NEW,
    "PENDING": _LIVE,
    "RUNNING": _LIVE,
    "UNKNOWN": _LIVE,
    "COMPLETED": _DONE,
    "FAILED": _BAD,
    "CANCELLED": _BAD,
    "VANISHED": _BAD,
    "TIMEOUT": _BAD,
    "OUT_OF_MEMORY": _BAD,
    "NODE_FAIL": _BAD,
    "PREEMPTED": _BAD,
}
CASES = [
    pytest.param(state, rule, action, id=f"{state or 'never'}-{rule}")
    for state, actions in EXPECTED.items()
    for rule, action in zip(RULES, actions)
]


def test_table_covers_every_state() -> None:
    assert set(EXPECTED) - {None} == {s.value for s in State}


@pytest.mark.parametrize(("state", "rule", "action"), CASES)
def test_plan_one(state: Optional[str], rule: str, action: Action) -> None:
    got, reason = plan_one(
        job_record(state, exit_code=1 if state == "FAILED" else None), RULES[rule]
    )
    assert got is action, reason
    assert reason.strip()
    if rule == "clear":
        assert "--clear" in reason
    elif state is not None and state != "UNKNOWN":
        assert state.lower() in reason  # the reason says what the XP is in


@pytest.mark.parametrize(("state", "rule", "action"), CASES)
def test_make_plan_step_matches_plan_one(state: Optional[str], rule: str, action: Action) -> None:
    plan = make_plan([("0123abcd", job_record(state))], RULES[rule])
    (step,) = plan.steps
    assert step.action is action and step.state == state and not step.removed
    assert step.submits == (action in (SUBMIT, RESUBMIT))
    live = state in ("PENDING", "RUNNING", "UNKNOWN")
    assert step.cancels == (action is CANCEL or (action is RESUBMIT and live))
    assert plan.to_submit() == (["0123abcd"] if step.submits else [])
    assert plan.to_cancel() == (["0123abcd"] if step.cancels else [])


def test_reasons_are_informative() -> None:
    _, failed = plan_one(job_record("FAILED", exit_code=3), Rules())
    assert "exit 3" in failed and "--retry" in failed
    _, retried = plan_one(job_record("FAILED", exit_code=3), Rules(retry=True))
    assert "--retry" in retried
    _, running = plan_one(job_record("RUNNING", backend="local"), Rules())
    assert "running" in running and "local" in running
    _, new = plan_one(None, Rules())
    assert new == "new XP"
    _, nothing = plan_one(None, Rules(cancel=True))
    assert "never submitted" in nothing


def test_vanished_before_it_started_is_resubmitted_without_retry() -> None:
    # its queue entry or allocation was lost: it never ran, so it is simply submitted again
    action, reason = plan_one(job_record("VANISHED", started=False), Rules())
    assert action is SUBMIT and reason
    assert plan_one(job_record("VANISHED", started=False), Rules(cancel=True))[0] is KEEP
    assert plan_one(job_record("VANISHED", started=True), Rules())[0] is KEEP


@pytest.mark.parametrize(
    ("state", "holders", "action"),
    [
        ("RUNNING", [], CANCEL),
        ("PENDING", [], CANCEL),
        ("UNKNOWN", [], CANCEL),
        ("RUNNING", ["other"], KEEP),
        ("PENDING", ["a", "b"], KEEP),
        ("COMPLETED", [], KEEP),
        ("FAILED", [], KEEP),
        ("CANCELLED", [], KEEP),
        ("VANISHED", [], KEEP),
        (None, [], KEEP),
    ],
)
def test_removed_xps(state: Optional[str], holders: list[str], action: Action) -> None:
    got, reason = plan_removed(job_record(state), holders)
    assert got is action
    assert "removed" in reason
    for holder in holders:
        assert holder in reason  # says which grid still holds it


def test_removed_steps_in_the_plan() -> None:
    plan = make_plan(
        [("aaaaaaaa", job_record("COMPLETED"))],
        Rules(),
        removed=[
            ("bbbbbbbb", job_record("RUNNING"), []),
            ("cccccccc", job_record("RUNNING"), ["other"]),
            ("dddddddd", job_record("COMPLETED"), []),
        ],
    )
    assert [s.removed for s in plan.steps] == [False, True, True, True]
    assert plan.to_cancel() == ["bbbbbbbb"]
    assert plan.to_submit() == []
    assert plan.step("bbbbbbbb").state == "RUNNING"
    assert plan.step("cccccccc").action is KEEP
    assert plan.counts() == {"submit": 0, "keep": 3, "cancel": 1, "resubmit": 0}


def test_removed_xps_are_never_submitted_whatever_the_rules() -> None:
    for rules in RULES.values():
        plan = make_plan([], rules, removed=[("bbbbbbbb", job_record("FAILED"), [])])
        assert plan.to_submit() == [] and plan.to_cancel() == []


def test_step_properties() -> None:
    assert Step("a", CANCEL, "r", "RUNNING").cancels
    assert not Step("a", CANCEL, "r", "RUNNING").submits
    assert Step("a", RESUBMIT, "r", "RUNNING").cancels
    assert Step("a", RESUBMIT, "r", "PENDING").cancels
    assert Step("a", RESUBMIT, "r", "UNKNOWN").cancels
    assert not Step("a", RESUBMIT, "r", "COMPLETED").cancels  # nothing to stop
    assert not Step("a", RESUBMIT, "r", None).cancels
    assert Step("a", RESUBMIT, "r", "COMPLETED").submits
    assert Step("a", SUBMIT, "r", None).submits and not Step("a", SUBMIT, "r", None).cancels
    assert not Step("a", KEEP, "r", "RUNNING").submits
    assert not Step("a", KEEP, "r", "RUNNING").cancels


def test_plan_counts_every_action() -> None:
    plan = make_plan(
        [
            ("aaaaaaaa", None),
            ("bbbbbbbb", None),
            ("cccccccc", job_record("COMPLETED")),
            ("dddddddd", job_record("FAILED")),
        ],
        Rules(retry=True),
    )
    assert plan.counts() == {"submit": 3, "keep": 1, "cancel": 0, "resubmit": 0}
    assert plan.to_submit() == ["aaaaaaaa", "bbbbbbbb", "dddddddd"]
    assert Plan(()).counts() == {"submit": 0, "keep": 0, "cancel": 0, "resubmit": 0}
    assert str(Action.RESUBMIT) == "resubmit"


def test_plan_keeps_the_grid_order() -> None:
    sigs = [f"{i:08x}" for i in range(50)]
    plan = make_plan([(s, None) for s in reversed(sigs)], Rules())
    assert [s.sig for s in plan.steps] == list(reversed(sigs))
    assert plan.step(sigs[7]).sig == sigs[7]
