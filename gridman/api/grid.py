"""``gridman grid``: build the herd, plan, commit, and report — as data, for the CLI to render.

Steps: load the main and the grid file; run the explore function (every XP validated); select
by patterns; under the project lock, read each XP's job record, refresh live ones through their
backend (one batch each), make the Shepherd's plan and, unless ``dry_run``, commit it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from ..backends import Backend, LaunchContext, Submission, get_backend, registry
from ..backends.attempt import snapshot_context
from ..core.explore import Sheep
from ..core.fsutil import FORMAT_VERSION, atomic_write_json, file_lock, read_json
from ..core.grids import (
    Grid,
    build_herd,
    grids_dir,
    in_grids_folder,
    list_grids,
    merge_warning,
    open_grid_file,
)
from ..core.jobs import PROJECT_LOCK, JobRecord, read_job
from ..core.loader import load_main
from ..core.main import DecoratedMain
from ..core.names import grid_items, grid_names
from ..core.perf import paused_gc
from ..core.project import Project, main_spec
from ..core.resources import Resources
from ..core.shep import Plan, Rules, make_plan
from ..core.snapshot import Snapshot, code_snapshot
from ..core.xp import clear_xp_folder, clearable_target, init_many, record_code, xp_folder
from ..errors import STORAGE_ERRNOS, UsageError, storage_error
from .patterns import select_xps
from .xp import check_project

GRIDS = "grids"
LOCK = PROJECT_LOCK


@dataclass(frozen=True)
class GridOptions:
    """Everything ``gridman grid`` was asked (besides what only the CLI shows)."""

    name: Optional[str]
    patterns: tuple[str, ...] = ()
    rules: Rules = field(default_factory=Rules)
    dry_run: bool = False
    init: bool = False
    backend: Optional[str] = None
    workers: Optional[int] = None
    gpus: Optional[int] = None
    grids_dir: Optional[str] = None
    main: Optional[str] = None
    resources: tuple[tuple[str, Any], ...] = ()  # CLI defaults (--time, -p ...): below slurm_()
    allow_dirty: bool = False  # git_save: submit despite uncommitted changes (--allow-dirty)


@dataclass
class GridSession:
    """A loaded grid: its main, herd, selection and backends (reused by the monitor)."""

    project: Project
    options: GridOptions
    spec: str
    main: DecoratedMain
    grid: Grid
    sheeps: list[Sheep]  # every XP of the grid, in order
    selected: list[int]  # indices into sheeps
    base_name: str
    names: list[str]
    backend: Backend
    backend_reason: str
    #: what the CLI should say on stderr before the plan (XPs merged by an exclude ...)
    warnings: list[str] = field(default_factory=list)
    _backends: dict[str, Backend] = field(default_factory=dict)
    _submissions: Optional[list[Submission]] = None

    @property
    def dir(self) -> Path:
        return self.main.dir

    @property
    def record_key(self) -> str:
        """Where this grid's records live under ``<dir>/grids/`` (see grid_record_key)."""
        return grid_record_key(self.project, self.grid)

    def chosen(self) -> list[Sheep]:
        return [self.sheeps[i] for i in self.selected]

    def submissions(self) -> list[Submission]:
        """The selected XPs as backend submissions (built once)."""
        if self._submissions is None:
            self._submissions = [_submission(s) for s in self.chosen()]
        return self._submissions

    def describe_backend(self) -> str:
        return self.backend.describe(self.submissions())

    def backend_for(self, name: str) -> Backend:
        if name == self.backend.name:
            return self.backend
        if name not in self._backends:
            self._backends[name] = get_backend(name, self.backend.ctx)
        return self._backends[name]

    def refresh(self, sheeps: Optional[Sequence[Sheep]] = None) -> None:
        """Re-read job records and refresh live ones through their backends (batched)."""
        targets = list(sheeps if sheeps is not None else self.chosen())
        for sheep in targets:
            sheep.job = read_job(sheep.xp.folder)
        poll_records(self, [(s.xp.folder, s.job) for s in targets if s.job], targets)


def poll_records(
    session: GridSession,
    records: Sequence[tuple[Path, Optional[JobRecord]]],
    sheeps: Sequence[Sheep] = (),
) -> dict[Path, JobRecord]:
    by_backend: dict[str, list[tuple[Path, JobRecord]]] = defaultdict(list)
    for folder, record in records:
        if record is not None and record.latest and not record.latest.state.finished:
            by_backend[record.latest.backend].append((folder, record))
    fresh: dict[Path, JobRecord] = {}
    for name, jobs in by_backend.items():
        try:
            backend = session.backend_for(name)
        except UsageError:
            continue  # recorded by a backend this gridman does not have: shown as recorded
        fresh.update(backend.poll(jobs))
    if fresh:  # (nothing live: no need to hash every folder)
        for sheep in sheeps:
            if sheep.xp.folder in fresh:
                sheep.job = fresh[sheep.xp.folder]
    return fresh


def choose_backend(project: Project, option: Optional[str]) -> tuple[str, str]:
    """(backend name, why it was chosen): ``--backend``, else what the backend registry says
    (a backend this process belongs to, gridman.yaml's ``backend:``, the first that can run
    here)."""
    configured = project.settings.get("backend")
    return registry.choose(option, str(configured) if configured else None, str(project.file))


def base_resources(
    project: Project, options: GridOptions, main: Optional[DecoratedMain] = None
) -> Resources:
    """Resources every launcher starts from: the main's own defaults (a Hydra config's
    ``slurm:`` section), then those of gridman.yaml's backend sections (Dora's ``slurm:``), then
    the CLI flags; ``launcher.slurm_(...)`` in the grid file overrides them all (resources are
    used by every backend that can: GPUs locally too)."""
    own = getattr(main, "resource_defaults", None)
    base = Resources().with_changes(own() if callable(own) else {})
    defaults = registry.resource_defaults(project.settings, project.file)
    return base.with_changes(defaults).with_changes(dict(options.resources))


def open_grid(
    project: Project, options: GridOptions, progress: Optional[Callable[[str], None]] = None
) -> GridSession:
    """Load the main and the grid, build the herd (validating every XP), select, pick backend."""
    if options.workers is not None and options.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {options.workers}")
    if options.gpus is not None and options.gpus < 0:
        raise UsageError(f"--gpus must be >= 0, got {options.gpus}")
    check_project(project)
    grid = open_grid_file(project, options.name, options.grids_dir, options.main)
    spec = main_spec(project, options.main)
    main = load_main(project, spec)
    herd = build_herd(grid, main, base_resources(project, options, main))
    sheeps = list(herd.sheeps.values())
    if options.gpus is not None:
        for sheep in sheeps:
            sheep.resources = sheep.resources.with_changes({"gpus": options.gpus})
    items = grid_items([s.xp.delta for s in sheeps], [s.xp.params for s in sheeps])
    base, names = grid_names(items)
    chosen = select_xps(options.patterns, items, [s.sig for s in sheeps])  # or exit 2
    name, reason = choose_backend(project, options.backend)
    settings = dict(project.section(name)) if name in project.settings else {}
    if options.workers is not None:
        settings["workers"] = options.workers
    ctx = LaunchContext(
        root=project.root, dir=main.dir, main_spec=spec, env=dict(os.environ),
        settings=settings, python=sys.executable, progress=progress,
    )  # fmt: skip
    backend = get_backend(name, ctx)
    warning = merge_warning(grid, herd, main)
    return GridSession(project, options, spec, main, grid, sheeps, chosen, base, names,
                       backend, reason, warnings=[warning] if warning else [])  # fmt: skip


@dataclass(frozen=True)
class GridResult:
    """What ``run_grid`` did."""

    plan: Plan
    committed: bool
    initialised: int
    #: signatures of the XP folders ``--init`` created (they hold argv.json only)
    created: frozenset[str] = frozenset()


def run_grid(session: GridSession) -> GridResult:
    """Plan and (unless dry-run) commit, under the project lock so racing commands never
    submit the same XP twice. Where the XP root cannot be written (a read-only mount, no
    permission, a full disk), a plan that changes nothing is still made and shown; one that
    would write is refused with the path and the reason (StorageError, exit 2)."""
    opts = session.options
    chosen = session.chosen()
    if not opts.dry_run:  # a plan is shown on any machine, one without the GPUs asked too
        session.backend.check(session.submissions())
    with project_lock(session.dir) as denied:
        session.refresh(chosen)
        removed = _removed(session)
        with paused_gc():  # a step per XP, none in cycles
            plan = make_plan([(s.sig, s.job) for s in chosen], opts.rules, removed)
        writes = opts.init or (not opts.dry_run and _changes(plan, opts.rules))
        if denied is not None and writes:
            raise storage_error(denied) or denied
        initialised, created = 0, frozenset[str]()
        if opts.init:
            created = frozenset(init_many([s.xp for s in chosen]))
            initialised = len(chosen)
        if opts.dry_run or denied is not None:
            return GridResult(plan, False, initialised, created)
        _commit(session, plan, chosen)
        _save_grid(session)
    return GridResult(plan, True, initialised, created)


def _changes(plan: Plan, rules: Rules) -> bool:
    """Whether committing ``plan`` writes anything besides the grid's own record."""
    return bool(plan.to_submit() or plan.to_cancel() or rules.clear)


@contextlib.contextmanager
def project_lock(dir: Path) -> Iterator[Optional[OSError]]:
    """Hold ``<dir>/.gridman.lock``; yields None, or the error that kept it from being created
    or opened for writing (read-only mount, no permission, full disk). Then the lock file, when
    it exists, is locked through a read-only descriptor (flock needs no write access: a
    command that only looks still waits for one that commits), else nothing is held: looking
    never needs to write."""
    path = dir / LOCK
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(path))
        except OSError as exc:
            if exc.errno not in STORAGE_ERRNOS:
                raise
            _shared_lock(stack, path)
            yield exc
            return
        yield None


def _shared_lock(stack: contextlib.ExitStack, path: Path) -> None:
    """flock ``path`` through a read-only descriptor, released by ``stack`` (when it exists)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no lock file (and none can be made): nobody commits here either
    stack.callback(os.close, fd)
    fcntl.flock(fd, fcntl.LOCK_EX)
    stack.callback(fcntl.flock, fd, fcntl.LOCK_UN)


def _submission(sheep: Sheep) -> Submission:
    return Submission(sheep.sig, sheep.xp.folder, tuple(sheep.xp.argv), sheep.resources,
                      sheep.array)  # fmt: skip


def _commit(session: GridSession, plan: Plan, chosen: list[Sheep]) -> None:
    # git_save: a dirty tree is refused (and the code copy made) before anything changes
    snap = code_snapshot(session.project, session.dir, session.main,
                         session.options.allow_dirty) if plan.to_submit() else None  # fmt: skip
    by_sig = {s.sig: s for s in chosen}
    jobs = []
    for sig in plan.to_cancel():
        folder = xp_folder(session.dir, sig)
        record = by_sig[sig].job if sig in by_sig else read_job(folder)
        if record is not None:
            jobs.append((folder, record))
    if session.options.rules.clear:  # refuse a folder --clear may not delete, before cancelling
        for sheep in chosen:
            clearable_target(sheep.xp.folder, session.dir)
    cancel_jobs(session, jobs)
    if session.options.rules.clear:
        for sheep in chosen:
            clear_xp_folder(sheep.xp.folder, session.dir)  # through a link too, or raises
            sheep.job = None
    submit = [by_sig[sig] for sig in plan.to_submit() if sig in by_sig]
    init_many([s.xp for s in submit])
    backend = session.backend if snap is None else _snapshot_backend(session, snap, submit)
    backend.submit([_submission(s) for s in submit])
    session.refresh(chosen)  # the table shows what was just cancelled and submitted


def _snapshot_backend(session: GridSession, snap: Snapshot, submit: list[Sheep]) -> Backend:
    """The backend whose XPs run from the code snapshot; argv.json records it first."""
    for sheep in submit:
        record_code(sheep.xp.folder, snap.to_json())
    return get_backend(session.backend.name, snapshot_context(session.backend.ctx, snap))


def cancel_jobs(session: GridSession, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
    """Cancel these jobs, each through the backend that recorded it (one batch per backend)."""
    by_backend: dict[str, list[tuple[Path, JobRecord]]] = defaultdict(list)
    for folder, record in jobs:
        if record.latest is not None and record.latest.n > 0:  # n == 0: unreadable job.json
            by_backend[record.latest.backend].append((folder, record))
    for name, items in by_backend.items():
        try:
            backend = session.backend_for(name)
        except UsageError:
            continue  # a backend this gridman does not have: nothing it could cancel
        backend.cancel(items)


def grid_record_key(project: Project, grid: Grid) -> str:
    """The folder under ``<dir>/grids/`` that records what this grid asked for (its sigs, its
    row cache): the grid's name for a file in the project's grids folder (as always), else
    ``NAME@HASH`` of the file's path, so that same-named grids of two folders (``--grids-dir``)
    never share a record, and never take each other's XPs for removed ones."""
    if in_grids_folder(project, grid):
        return grid.name
    digest = hashlib.sha1(_stored_path(project, grid.path).encode("utf8")).hexdigest()[:8]
    return f"{grid.name}@{digest}"


def _stored_path(project: Project, path: Path) -> str:
    """``path`` relative to the project root when inside it (a moved project keeps its keys)."""
    try:
        return str(path.absolute().relative_to(project.root))
    except ValueError:
        return str(path.absolute())


def _grid_file(dir: Path, key: str) -> Path:
    return dir / GRIDS / key / "sigs.json"


def _read_record(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sigs(record: dict[str, Any]) -> list[str]:
    sigs = record.get("sigs")
    return [str(s) for s in sigs] if isinstance(sigs, list) else []


def _save_grid(session: GridSession) -> None:
    path = _grid_file(session.dir, session.record_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": FORMAT_VERSION, "sigs": [s.sig for s in session.sheeps],
            "file": _stored_path(session.project, session.grid.path)}  # fmt: skip
    try:
        atomic_write_json(path, data, fsync=True, indent=None)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc  # a full disk: say where


def _holders(session: GridSession) -> dict[str, list[str]]:
    """For each sig, the other grids that asked for it last time and whose file still exists
    (a deleted grid holds nothing), wherever their file lives."""
    root = session.dir / GRIDS
    project = session.project
    default = grids_dir(project)
    current = session.grid.path.parent
    holders: dict[str, list[str]] = defaultdict(list)
    for key in sorted(os.listdir(root)) if root.is_dir() else []:
        if key == session.record_key:
            continue
        record = _read_record(_grid_file(session.dir, key))
        stored = record.get("file")
        if isinstance(stored, str):
            file, label = project.resolve(stored), stored
        else:  # written before records named their file: a grid of the project's folder
            file, label = default / f"{key}.py", key
            if not file.is_file():
                file = current / f"{key}.py"
        if file.is_file():
            for sig in _sigs(record):
                holders[sig].append(label if file.parent != default else file.stem)
    return holders


def _removed(session: GridSession) -> list[tuple[str, Optional[JobRecord], list[str]]]:
    """XPs the grid asked for last time and no longer does, with the other grids holding them."""
    dir = session.dir
    current = {s.sig for s in session.sheeps}
    own = _read_record(_grid_file(dir, session.record_key))
    old = [s for s in _sigs(own) if s not in current]
    if not old:
        return []
    holders = _holders(session)
    out = []
    records = []
    for sig in old:
        folder = xp_folder(dir, sig)
        record = read_job(folder)
        records.append((folder, record))
    fresh = poll_records(session, records)
    for (folder, record), sig in zip(records, old):
        out.append((sig, fresh.get(folder, record), holders.get(sig, [])))
    return out


def available_grids(
    project: Project, grids_dir_option: Optional[str], main: Optional[str] = None
) -> list[str]:
    """Dotted names of the project's grids (``gridman grid`` without a name lists them)."""
    return list_grids(grids_dir(project, grids_dir_option, main))


def with_rules(options: GridOptions, **changes: Any) -> GridOptions:
    return replace(options, rules=replace(options.rules, **changes))
