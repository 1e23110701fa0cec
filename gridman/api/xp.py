"""The API behind the CLI: functions that do one command's work and return data.

Nothing here prints, prompts or exits; the CLI (cli.py) renders what these return.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Optional

from ..backends import LaunchContext, get_backend, registry
from ..backends.attempt import FOREGROUND, AttemptSpec, run_here
from ..backends.runner import RunResult
from ..core.fsutil import file_lock
from ..core.jobs import PROJECT_LOCK, JobRecord, State, read_job
from ..core.link import history_warnings, load_history
from ..core.liveness import clear_cancel, is_running_here, process_is
from ..core.loader import load_main
from ..core.main import DecoratedMain
from ..core.project import Project, check_key, load_project, main_spec
from ..core.signature import delta_from_json
from ..core.xp import (
    ARGV_FILE,
    XP,
    check_owner,
    check_sig_or_prefix,
    clear_xp_folder,
    clearable_target,
    find_xp_folder,
    init_xp,
    read_argv_file,
)
from ..errors import UsageError, XPBusyError


def check_project(project: Project) -> None:
    """Check gridman.yaml's top-level keys and each backend's section, through the backend
    registry (core checks only its own keys)."""
    if project.file is None:
        return
    sections = registry.section_names()
    for key in project.settings:
        check_key(project.file, str(key), sections)
    registry.check_sections(project.settings, project.file)


def open_project(start: Optional[Path] = None) -> Project:
    """The project around ``start`` (default: the current directory), gridman.yaml checked."""
    project = load_project(start, registry.section_names())
    check_project(project)
    return project


def job_label(backend: str, job_id: str) -> Optional[str]:
    """A job id as the backend that recorded it shows it (None: not worth showing)."""
    return registry.job_label(backend, job_id)


@dataclass(frozen=True)
class Prepared:
    """An XP ready to run: the main that defines it and the spec to load that main again."""

    spec: str
    main: DecoratedMain
    xp: XP

    @property
    def exists(self) -> bool:
        return self.xp.folder.exists()


def stored_argv(dir: Path, sig: str) -> list[str]:
    """The argv recorded in ``argv.json`` of XP ``sig``, a signature or a unique prefix of one
    (unknown: the recent XPs; ambiguous: the candidates)."""
    folder = find_xp_folder(dir, sig)
    sig = folder.name
    try:
        return [str(a) for a in read_argv_file(folder)["argv"]]
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"XP {sig} has no readable argv.json ({exc})",
            "re-create it with `gridman grid NAME --init` or run with explicit ARGV",
        ) from None


def prepare(
    project: Project, main_override: Optional[str], sig: Optional[str], argv: Sequence[str]
) -> Prepared:
    """Resolve the XP that ``--sig`` and/or ARGV name, without writing anything.

    With ``sig``, the stored argv comes first and ARGV overrides it (the later value wins).
    """
    if sig is not None:
        check_sig_or_prefix(sig)  # before the main is imported or any path is built
    spec = main_spec(project, main_override)
    main = load_main(project, spec)
    full = list(argv)
    if sig is not None:
        full = stored_argv(main.dir, sig) + full
    return Prepared(spec=spec, main=main, xp=main.get_xp(full))


def clear(prepared: Prepared) -> bool:
    """Delete the XP's folder (history, logs, checkpoints); refuses while it runs."""
    folder = prepared.xp.folder
    clearable_target(folder, prepared.xp.dir)  # a link out of the XP root: refused first
    if not folder.exists():
        return False
    if is_running_here(folder):
        raise XPBusyError(f"XP {prepared.xp.sig} is running; not clearing it", "cancel it first")
    return clear_xp_folder(folder, prepared.xp.dir)


def run(
    project: Project,
    prepared: Prepared,
    echo: Optional[tuple[BinaryIO, BinaryIO]] = None,
    distributed: bool = False,
    ws: Optional[int] = None,
) -> RunResult:
    """Run the XP in the foreground (a child process), recording its state in job.json.

    ``distributed`` (Dora's ``run -d``) runs it as one rank per visible GPU, each seeing them
    all with its own LOCAL_RANK; ``ws`` runs it as that many ranks on CPUs (no GPU visible),
    to debug a distributed main without GPUs. One attempt either way: rank 0 records it.

    The decision to start it and its RUNNING record are made under the project lock, as
    ``gridman grid`` plans and commits under it: a racing grid either queued the XP first
    (refused here) or sees it RUNNING (and keeps it). The lock is let go as soon as the
    attempt is recorded, not held for the whole run.
    """
    xp = prepared.xp
    init_xp(xp)
    ranks, hide = _foreground_ranks(distributed, ws)
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if hide else {})}
    ctx = LaunchContext(root=project.root, dir=xp.dir, main_spec=prepared.spec, env=env)
    attempt = AttemptSpec.for_xp(ctx, xp.sig, xp.folder, xp.argv, FOREGROUND, ranks=ranks)
    decision = contextlib.ExitStack()
    decision.enter_context(file_lock(xp.dir / PROJECT_LOCK))
    try:
        _refuse_live(project, xp.sig, xp.folder)
        clear_cancel(xp.folder)
        # In the console's session: Ctrl-C reaches the XP, and echo copies its output. Once
        # the attempt is RUNNING, on_start lets go of the project lock.
        return run_here(attempt, echo=echo, new_session=False,
                        on_start=lambda proc: decision.close())  # fmt: skip
    finally:
        decision.close()  # (a second close does nothing)


def _foreground_ranks(distributed: bool, ws: Optional[int]) -> tuple[int, bool]:
    """(ranks, whether to hide the GPUs) of a foreground run."""
    if ws is not None:
        if ws < 1:
            raise UsageError(f"--ws must be at least 1, got {ws}")
        return ws, True
    if not distributed:
        return 1, False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = len([g for g in visible.split(",") if g.strip()]) if visible is not None else 0
    if visible is None:
        count = _nvidia_smi_gpus()
    if count == 0:
        raise UsageError("-d runs one rank per GPU, and no GPU is visible",
                         "use --ws N to run N ranks on CPUs")  # fmt: skip
    return count, False


def _nvidia_smi_gpus() -> int:
    """GPUs nvidia-smi lists (0 without it)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def _refuse_live(project: Project, sig: str, folder: Path) -> None:
    """Raise XPBusyError when the XP is live: queued by a backend, or running (a runner
    holds it, its process still runs, or its backend says so). The record is refreshed first,
    so that a dead runner's attempt is settled (VANISHED) rather than refused."""
    record = refreshed_record(project, folder) if folder.is_dir() else None
    latest = record.latest if record else None
    if latest is None or latest.n == 0:
        return
    if latest.state is State.PENDING:
        raise XPBusyError(
            f"XP {sig} is queued on the {latest.backend} backend",
            "running it here too would run it twice: cancel it first (gridman grid NAME -C)",
        )
    if latest.state is State.RUNNING or is_running_here(folder):
        where = f"pid {latest.pid}" if process_is(latest) else f"on {latest.backend}"
        raise XPBusyError(
            f"XP {sig} is already running ({where})",
            "wait for it, or cancel it first (gridman grid NAME -C)",
        )


@dataclass(frozen=True)
class XPInfo:
    """What ``gridman info`` shows about one XP."""

    sig: str
    folder: str
    exists: bool
    argv: list[str]
    delta: list[list[Any]]
    state: Optional[str]
    attempts: int
    job: Optional[dict[str, Any]]
    history_len: int
    last_metrics: Optional[dict[str, Any]]
    history_error: Optional[str]
    log: Optional[str]
    #: damaged metrics journals, set aside or still in place (see core/link.py)
    history_warnings: list[str] = field(default_factory=list)
    #: the main that defines the XP, as argv.json records it (None: recorded before mains were)
    main: Optional[str] = None
    #: with git_save, the code snapshot it runs from: {"commit", "path"} (argv.json's "code")
    code: Optional[dict[str, Any]] = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def xp_root(project: Project, main_override: Optional[str]) -> Path:
    """The XP root of the main in use, without importing it when gridman.yaml or GRIDMAN_DIR
    name the root and that main is the project's (another main has a root of its own)."""
    known = project.dir
    spec = main_override or os.environ.get("GRIDMAN_MAIN")
    if known is not None and (spec is None or spec == project.main_spec or not project.main_spec):
        return known
    return load_main(project, main_spec(project, main_override)).dir


def info(
    project: Project,
    main_override: Optional[str],
    sig: Optional[str] = None,
    argv: Optional[Sequence[str]] = None,
    *,
    refresh: bool = True,
) -> XPInfo:
    """Inspect one XP, by signature (or a unique prefix of one) or by ARGV. ``refresh=False``
    reads its job record as it is, never polling a backend (which may rewrite it): for views
    that must change nothing (``gridman serve``)."""
    if sig is not None and not argv:
        folder = find_xp_folder(xp_root(project, main_override), sig)
        sig = folder.name
        xp_argv, delta, owner = _stored_xp(folder)
    else:
        prepared = prepare(project, main_override, sig, argv or [])
        check_owner(prepared.xp)  # another main's XP of the same signature: refused
        folder = prepared.xp.folder
        sig = prepared.xp.sig
        xp_argv, delta = prepared.xp.argv, [[k, v] for k, v in prepared.xp.delta]
        owner = prepared.xp.main
    found = _describe(sig, folder, xp_argv, delta, project, refresh)
    return replace(found, main=owner)


def _stored_xp(folder: Path) -> tuple[list[str], list[list[Any]], Optional[str]]:
    """The argv, delta and main in the XP's argv.json (none without the file); a damaged file
    is reported with its path and what to do (exit 2), like a damaged history."""
    try:
        stored = read_argv_file(folder)
        delta = delta_from_json(stored.get("delta") or [])
    except FileNotFoundError:
        return [], [], None
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"XP {folder.name}: {folder / ARGV_FILE} is damaged ({exc})",
            "re-create it with `gridman grid NAME --init` (a grid that holds this XP), or "
            "name the XP by its arguments: gridman info -- ARGV",
        ) from None
    main = stored.get("main")
    owner = main if isinstance(main, str) else None
    return [str(a) for a in stored["argv"]], [[k, v] for k, v in delta], owner


def refreshed_record(project: Project, folder: Path) -> Optional[JobRecord]:
    """The XP's job record, refreshed through the backend that recorded it when still live."""
    record = read_job(folder)
    latest = record.latest if record else None
    if record is None or latest is None or latest.state.finished or latest.n == 0:
        return record
    settings = _section(project, latest.backend)
    ctx = LaunchContext(root=project.root, dir=folder.parent.parent, main_spec="",
                        env=dict(os.environ), settings=settings)  # fmt: skip
    try:
        backend = get_backend(latest.backend, ctx)
    except UsageError:
        return record  # recorded by a backend this gridman does not have
    return backend.poll([(folder, record)]).get(folder, record)


def _section(project: Project, name: str) -> dict[str, Any]:
    value = project.settings.get(name)
    return value if isinstance(value, dict) else {}


def _describe(
    sig: str, folder: Path, argv: list[str], delta: list[Any], project: Project,
    refresh: bool = True,
) -> XPInfo:  # fmt: skip
    exists = folder.is_dir()
    record = None
    if exists:
        record = refreshed_record(project, folder) if refresh else read_job(folder)
    history: list[Any] = []
    error = None
    warnings: list[str] = []
    if exists:
        try:
            history = load_history(folder)
        except Exception as exc:  # one bad history is reported, never fatal
            error = str(exc)
        warnings = history_warnings(folder)
    latest = record.latest if record else None
    log = str(folder / latest.log) if latest and latest.log else None
    last = history[-1] if history and isinstance(history[-1], dict) else None
    return XPInfo(
        sig=sig,
        folder=str(folder),
        exists=exists,
        argv=[str(a) for a in argv],
        delta=[list(p) for p in delta],
        state=latest.state.value if latest else None,
        attempts=len(record.attempts) if record else 0,
        job=record.to_json() if record else None,
        history_len=len(history),
        last_metrics=last,
        history_error=error,
        log=log,
        history_warnings=warnings,
        code=_code_of(folder) if exists else None,
    )


def _code_of(folder: Path) -> Optional[dict[str, Any]]:
    """The code snapshot argv.json records (git_save), when it records a readable one."""
    try:
        code = read_argv_file(folder).get("code")
    except (OSError, ValueError, AttributeError):
        return None
    return code if isinstance(code, dict) and isinstance(code.get("commit"), str) else None
