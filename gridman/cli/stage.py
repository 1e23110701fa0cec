"""``gridman grid NAME --stage STAGE -- COMMAND``: plan and run a stage, wait, show the table.

Rendering only: the work is in api/stage.py (the stage model in core/stages.py). The plan is
printed like the grid's (submit / keep / skip with reasons); jobs run on the grid's backend;
progress lines are printed until every submitted stage job has ended (unless --no-monitor or
--json), then the grid table, whose rows now carry the stage's metrics (``test.acc``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import typer

from ..core.stages import StagePlan, StageRequest
from ..errors import EXIT_XP_FAILED

_ENDED_OK = "COMPLETED"


def run_stage_command(
    session: Any, request: StageRequest, dry_run: bool, cancel: bool, monitor: bool,
    interval: float, as_json: bool, view: Any,
) -> int:  # fmt: skip
    """The whole ``--stage`` flow; returns the exit status."""
    from ..api.stage import cancel_stage, run_stage
    from .common import backend_line
    from .common import stderr as _stderr
    from .view import watch as _watch

    say: Callable[[str], None] = _stderr if as_json else typer.echo
    name = request.name
    if cancel:
        count = cancel_stage(session, name)
        say(f"gridman: cancelled {count} {name} job(s)")
        return _watch(session, interval, view, False, as_json)
    backend_line(session)
    result = run_stage(session, request, dry_run)
    print_stage_plan(result.plan, session, dry_run, say)
    failed = 0
    submitted = result.plan.to_submit()
    if result.committed and submitted and monitor and not as_json:
        try:
            states = wait_stage(session, name, submitted, interval, say)
            failed = sum(1 for s in states.values() if s != _ENDED_OK)
        except KeyboardInterrupt:
            _stderr(f"gridman: stopped monitoring; the {name} jobs keep running "
                    f"(gridman grid {session.grid.name} re-attaches)")  # fmt: skip
        if failed:
            say(f"gridman: {failed} {name} job(s) failed: see their logs in "
                f"<xp folder>/stages/{name}/log/")  # fmt: skip
    code = _watch(session, interval, view, False, as_json)
    return EXIT_XP_FAILED if failed else code


def print_stage_plan(plan: StagePlan, session: Any, verbose: bool, say: Any) -> None:
    counts = plan.counts()
    labels = {s.sig: session.names[i] for i, s in enumerate(session.sheeps)}
    head = ", ".join(f"{n} {a}" for a, n in counts.items() if n)
    say(f"gridman: stage {plan.name} for grid {session.grid.name}: {head or 'nothing'}")
    steps = [s for s in plan.steps if verbose or s.action == "submit"]
    for step in steps[: 200 if verbose else 20]:
        say(f"  {step.action:<8} {step.sig}  {labels.get(step.sig, '')}: {step.reason}")
    hidden = len(steps) - (200 if verbose else 20)
    if hidden > 0:
        say(f"  ... and {hidden} more")


def wait_stage(
    session: Any, name: str, sigs: list[str], interval: float, say: Any
) -> dict[str, str]:
    """Poll the stage jobs of ``sigs`` until they have all ended; print progress lines."""
    from ..api.stage import stage_states
    from ..core.jobs import State

    live = {State.PENDING.value, State.RUNNING.value, State.UNKNOWN.value}
    last = ""
    while True:
        states = stage_states(session, name, sigs)
        done = sum(1 for s in states.values() if s == _ENDED_OK)
        running = sum(1 for s in states.values() if s == State.RUNNING.value)
        pending = sum(1 for s in states.values() if s in live) - running
        bad = len(states) - done - running - pending
        line = (f"stage {name}: {done}/{len(states)} done, {running} running, "
                f"{pending} pending, {bad} failed")  # fmt: skip
        if line != last:
            say(f"gridman: {line}")
            last = line
        if not any(s in live for s in states.values()):
            return states
        time.sleep(min(interval, 0.5))
