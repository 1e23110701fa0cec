"""The inline backend: runs each XP in this very process, one after the other.

For debugging (a breakpoint in the training code just works) and for fast tests of the whole
grid path. Output goes to the attempt's log; states are recorded as on every backend.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.jobs import JobRecord, State, now, this_host, update_job
from ..core.loader import load_main
from ..core.project import load_project
from .base import Backend, Submission


class InlineBackend(Backend):
    """Runs XPs synchronously, in-process, at submission."""

    name = "inline"

    def submit(self, submissions: Sequence[Submission]) -> None:
        main = load_main(load_project(self.ctx.root), self.ctx.main_spec)
        for sub in submissions:
            record = update_job(
                sub.folder,
                lambda r: r.with_new_attempt(
                    "inline", State.RUNNING, submitted=now(), started=now(), host=this_host()
                ),
            )
            assert record.latest is not None and record.latest.log is not None
            log = sub.folder / record.latest.log
            log.parent.mkdir(parents=True, exist_ok=True)
            code = _run(main, list(sub.argv), log)
            state = State.COMPLETED if code == 0 else State.FAILED
            update_job(sub.folder, _ended(state, code))

    def poll(self, jobs: Sequence[tuple[Path, JobRecord]]) -> dict[Path, JobRecord]:
        return {}  # inline jobs have ended by the time submit returns

    def cancel(self, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
        return None


def _ended(state: State, code: int) -> Callable[[JobRecord], JobRecord]:
    def change(record: JobRecord) -> JobRecord:
        return record.with_latest(state=state, exit_code=code, ended=now())

    return change


def _run(main: object, argv: list[str], log: Path) -> int:
    from ..core.main import DecoratedMain
    from .worker import exit_status

    assert isinstance(main, DecoratedMain)
    with open(log, "a", encoding="utf8") as out:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main.run_argv(argv)
            except SystemExit as exc:
                return exit_status(exc)
            except Exception:
                out.write(traceback.format_exc())
                return 1
    return 0
