"""Persistence: every configuration the evaluator runs is an XP under ``<dir>/xps/<sig>/``.

The signature is ``compute_sig`` of the configuration's parameters (sorted ``(key, value)``
pairs, as for any delta), so the same configuration always lands in the same folder, whatever
the key order. The folder holds what every XP holds, which is why ``gridman info --sig SIG``
(with ``GRIDMAN_DIR=<dir>``) and ``gridman``'s tables work on evaluator results:

- ``argv.json``: ``argv`` as ``key=value`` tokens and ``delta`` = the parameters (written by
  the evaluator at submission; a different configuration with the same signature is a
  SignatureCollisionError);
- ``job.json``: one attempt per evaluation (backend ``evaluator``), RUNNING while it runs (with
  the pid of the process running it, so a crashed search shows VANISHED; not fsync'd, as
  everywhere in gridman), then COMPLETED or FAILED (fsync'd), written by the worker itself
  right after the run: results survive a crash of the search process;
- ``history.json``: one entry per evaluation, ``{"objective", "status", "metadata"}`` (the last
  one is the result), written through ``Link``;
- ``log/<n>.log``: the traceback of a failed attempt (kept out of the history, so that tables
  stay readable; a cached failure gets it back in its metadata).

The worker holds the XP's run lock while it evaluates: a second search process that gets the
same configuration waits for the first one and takes its result.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import file_lock
from ..core.jobs import RUN_LOCK, JobRecord, State, now, read_job, this_host, update_job
from ..core.link import Link, load_history
from ..core.signature import Delta, compute_sig, jsonable
from ..core.xp import XP, init_xp
from ..errors import HistoryError, UsageError
from .job import Outcome, Task
from .outcome import plain

BACKEND = "evaluator"


def make_xp(dir: Path, parameters: Mapping[str, Any]) -> XP:
    """The XP of one configuration (nothing written yet)."""
    delta: Delta = sorted((str(k), _value(str(k), v)) for k, v in parameters.items())
    argv = [f"{key}={token(value)}" for key, value in delta]
    return XP(cfg=dict(parameters), argv=argv, delta=delta, sig=compute_sig(delta), dir=Path(dir))


def _value(key: str, value: Any) -> Any:
    try:
        return jsonable(value)
    except TypeError:
        if hasattr(value, "item") or hasattr(value, "tolist"):  # numpy scalars and arrays
            return plain(value)
        raise UsageError(
            f"parameter {key}={value!r} ({type(value).__name__}) cannot be part of a signature",
            "with log_dir, parameters must be JSON data (str, int, float, bool, None, lists, "
            "dicts); pass objects through run_function_kwargs instead",
        ) from None


def token(value: Any) -> str:
    """``value`` as it appears after ``key=`` in argv: plain strings as they are, anything else
    (and strings that would read as something else) as JSON."""
    if isinstance(value, str) and value and value.strip() == value and "\n" not in value:
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def prepare(xp: XP) -> None:
    """Create the XP folder and its argv.json (raises SignatureCollisionError)."""
    init_xp(xp)


def lookup(
    folder: Path, retry_failed: bool = False, since: Optional[float] = None
) -> Optional[Outcome]:
    """The stored result of the configuration in ``folder``, if it finished (id -1).

    Failed results count unless ``retry_failed``; with ``since``, only a result that ended at
    or after that time counts. Anything else (never evaluated, running, vanished, cancelled,
    an unreadable file, an XP that is not an evaluator's) is a miss.
    """
    try:
        record = read_job(folder)
    except OSError:
        return None
    latest = record.latest if record else None
    if latest is None or latest.n == 0 or latest.backend != BACKEND:
        return None
    if latest.state is not State.COMPLETED and (latest.state is not State.FAILED or retry_failed):
        return None
    if since is not None and (latest.ended or 0.0) < since:
        return None
    try:
        history = load_history(folder)
    except (HistoryError, OSError):
        return None
    entry = history[-1] if history else None
    if not isinstance(entry, dict) or "objective" not in entry:
        return None
    objective = entry["objective"]
    if isinstance(objective, list):
        objective = tuple(objective)
    stored = entry.get("metadata")
    metadata = dict(stored) if isinstance(stored, dict) else {}
    if latest.log:
        with contextlib.suppress(OSError, ValueError):
            metadata["traceback"] = (folder / latest.log).read_text(encoding="utf8")
    failed = entry.get("status") == "FAILED"
    return Outcome(id=-1, objective=objective, failed=failed, metadata=metadata, cached=True)


def record_start(task: Task, folder: Path) -> int:
    """Record a RUNNING attempt for this evaluation; returns its number."""

    def change(record: JobRecord) -> JobRecord:
        return record.with_new_attempt(
            BACKEND, State.RUNNING, job_id=f"{BACKEND}-{os.getpid()}-{task.id}",
            submitted=task.submitted, started=now(), host=this_host(), pid=os.getpid(),
            log=None, extra={"method": task.method, "eval_id": task.id},
        )  # fmt: skip

    latest = update_job(folder, change, durable=False).latest
    assert latest is not None
    return latest.n


def record_end(task: Task, folder: Path, attempt: int, outcome: Outcome) -> None:
    """Append the result to the history, then end the attempt COMPLETED or FAILED."""
    objective = plain(outcome.objective)
    metadata = {k: v for k, v in outcome.metadata.items() if k != "traceback"}  # in the log
    entry = {
        "objective": objective,
        "status": "FAILED" if outcome.failed else "DONE",
        "metadata": plain(metadata),
    }
    link = Link(folder)
    try:
        link.update_history([*link.history, entry])
    finally:
        link.close()
    log: Optional[str] = None
    trace = outcome.metadata.get("traceback")
    if outcome.failed and isinstance(trace, str):
        log = f"log/{attempt}.log"
        (folder / "log").mkdir(exist_ok=True)
        (folder / log).write_text(trace, encoding="utf8")
    state = State.FAILED if outcome.failed else State.COMPLETED

    def change(record: JobRecord) -> JobRecord:
        if record.latest is None or record.latest.n != attempt:
            return record
        extra = {**record.latest.extra, "objective": _short(objective)}
        return record.with_latest(state=state, ended=now(), log=log, extra=extra)

    update_job(folder, change)


def record_lost(task: Task, outcome: Outcome) -> None:
    """End the RUNNING attempt of a task whose worker died (the worker could not record it)."""
    if task.folder is None:
        return
    folder = Path(task.folder)
    record = read_job(folder)
    latest = record.latest if record else None
    if latest is None or latest.state is not State.RUNNING:
        return
    if latest.backend != BACKEND or latest.extra.get("eval_id") != task.id:
        return
    record_end(task, folder, latest.n, outcome)


def _short(objective: Any) -> Any:
    """The objective as job.json keeps it (a long failure reason is cut)."""
    if isinstance(objective, str) and len(objective) > 200:
        return objective[:200] + "..."
    return objective


def run_recorded(run: Any, task: Task, folder: Path) -> Outcome:
    """Evaluate ``task`` through ``run(task)`` under the XP's run lock, recording it on disk.

    When another process holds the lock (it evaluates the same configuration), wait for it.
    Once the lock is ours, a result recorded since the task was submitted (by another search
    process, which the evaluator could not know about) is returned (``cached``) instead of
    running again, unless the task opted out of the cache. A failure to record is noted in the
    metadata (``persist_error``); the result is returned all the same.
    """
    with contextlib.ExitStack() as stack:
        if not stack.enter_context(file_lock(folder / RUN_LOCK, blocking=False)):
            stack.enter_context(file_lock(folder / RUN_LOCK))
        hit = lookup(folder, since=task.submitted) if task.cache else None
        if hit is not None:
            return replace(hit, id=task.id)
        try:
            attempt: Optional[int] = record_start(task, folder)
        except Exception as exc:
            attempt, error = None, f"{type(exc).__name__}: {exc}"
        outcome: Outcome = run(task)
        if attempt is not None:
            try:
                record_end(task, folder, attempt, outcome)
                return outcome
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        return replace(outcome, metadata={**outcome.metadata, "persist_error": error})
