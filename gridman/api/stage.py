"""Stage jobs: plan, submit, poll and cancel a stage over a grid's XPs (``--stage test``).

The stage model (folders, results, the command template, the decision for one XP) is
core/stages.py's; this module runs it on the grid session's backend, with gridman's built-in
stage main (``gridman.stagerun:main``) in place of the training main, so that any backend that
can run a main runs stages, recorded, polled and cancelled like training attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Optional

from ..backends import Backend, Submission, get_backend
from ..core.explore import Sheep
from ..core.fsutil import file_lock
from ..core.jobs import JobRecord, read_job
from ..core.stages import (
    STAGE_MAIN,
    StagePlan,
    StageRequest,
    StageResult,
    check_stage_name,
    decide,
    expand,
    read_result,
    stage_folder,
    write_request,
)
from .grid import LOCK, GridSession, cancel_jobs, poll_records


def stage_backend(session: GridSession) -> Backend:
    """The session's backend, running the stage main instead of the training main."""
    ctx = replace(session.backend.ctx, main_spec=STAGE_MAIN)
    return get_backend(session.backend.name, ctx)


def refresh_stage(
    session: GridSession, name: str, sheeps: Sequence[Sheep]
) -> dict[str, Optional[JobRecord]]:
    """Each XP's stage job record, live ones refreshed through their backends."""
    folders = {s.sig: stage_folder(s.xp.folder, name) for s in sheeps}
    records = {sig: read_job(f) if f.is_dir() else None for sig, f in folders.items()}
    fresh = poll_records(session, [(folders[sig], r) for sig, r in records.items()])
    return {sig: fresh.get(folders[sig], record) for sig, record in records.items()}


def plan_stage(session: GridSession, request: StageRequest) -> StagePlan:
    """What to do with each selected XP (the caller holds the project lock)."""
    chosen = session.chosen()
    session.refresh(chosen)
    records = refresh_stage(session, request.name, chosen)
    steps = []
    for sheep in chosen:
        folder = stage_folder(sheep.xp.folder, request.name)
        result = read_result(folder) if folder.is_dir() else None
        steps.append(decide(sheep, records[sheep.sig], result, request.force))
    return StagePlan(request.name, tuple(steps))


def run_stage(session: GridSession, request: StageRequest, dry_run: bool = False) -> StageResult:
    """Plan the stage over the selected XPs and (unless ``dry_run``) submit it, under the
    project lock so that racing commands never run one XP's stage twice."""
    check_stage_name(request.name)
    backend = stage_backend(session)
    session.dir.mkdir(parents=True, exist_ok=True)
    with file_lock(session.dir / LOCK):
        plan = plan_stage(session, request)
        if dry_run:
            return StageResult(plan, False)
        submit = set(plan.to_submit())
        subs = []
        for sheep in session.chosen():
            if sheep.sig not in submit:
                continue
            folder = stage_folder(sheep.xp.folder, request.name)
            command = expand(request.template, sheep.sig, sheep.xp.folder, sheep.xp.argv)
            write_request(folder, request.name, sheep, command)
            subs.append(Submission(sheep.sig, folder, (str(folder), "--", *command),
                                   sheep.resources, 0))  # fmt: skip
        backend.check(subs)
        backend.submit(subs)
    return StageResult(plan, True)


def stage_states(session: GridSession, name: str, sigs: Sequence[str]) -> dict[str, str]:
    """The latest stage attempt's state of each XP in ``sigs`` (polled)."""
    wanted = set(sigs)
    sheeps = [s for s in session.chosen() if s.sig in wanted]
    records = refresh_stage(session, name, sheeps)
    return {sig: (r.state.value if r and r.state else "NEW") for sig, r in records.items()}


def cancel_stage(session: GridSession, name: str) -> int:
    """Cancel the selected XPs' pending and running stage jobs; returns how many."""
    chosen = session.chosen()
    records = refresh_stage(session, name, chosen)
    live = []
    for sheep in chosen:
        record = records[sheep.sig]
        latest = record.latest if record else None
        if record is not None and latest is not None and not latest.state.finished:
            live.append((stage_folder(sheep.xp.folder, name), record))
    cancel_jobs(session, live)
    return len(live)
