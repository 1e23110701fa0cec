"""The local backend: a detached pool of worker processes on this machine.

``submit`` records each XP as PENDING and drops a queue entry in ``<dir>/.pool/queue/``; a pool
daemon (pool.py, started on demand, in its own session so that Ctrl-C on the CLI never reaches
it) runs them with at most ``workers`` at once, each in its own process and process group, with
GPU slots assigned through ``CUDA_VISIBLE_DEVICES``. Jobs outlive the CLI; any later command
re-attaches by reading the XP folders. The queue entry carries the scheduling command's
environment and interpreter, so an XP runs as if that command had started it.

Whatever is queued runs as the user, so ``.pool`` and its folders are private (0700) and one
that another user owns or may write is refused (UnsafePathError, exit 2); its daemon.log and
locks are never opened through a symbolic link.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import atomic_write_json, ensure_private_dir, file_lock, open_nofollow
from ..core.jobs import (
    Attempt,
    JobRecord,
    State,
    end_latest,
    now,
    read_job,
    this_host,
    update_job,
)
from ..core.liveness import (
    clear_cancel,
    is_running_here,
    mark_vanished,
    process_is,
    request_cancel,
    signal_attempt,
)
from ..core.resources import Resources
from ..errors import ConfigError, UsageError
from .attempt import FOREGROUND, AttemptSpec
from .base import Backend, BackendSpec, Choice, LaunchContext, Submission

POOL = ".pool"
_CANCEL_WAIT = 10.0
_PENDING_GRACE = 10.0


@dataclass(frozen=True)
class PoolConfig:
    """How many XPs run at once and which GPUs they share."""

    workers: int
    gpus: tuple[str, ...]
    xps_per_gpu: int

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "workers": self.workers, "gpus": list(self.gpus),
                "xps_per_gpu": self.xps_per_gpu}  # fmt: skip


def local_ranks(res: Resources) -> int:
    """Processes an XP runs as on one machine: one per GPU (each sees them all and takes the
    one of its LOCAL_RANK), or one seeing them all with ``one_task_per_node``."""
    return 1 if res.one_task_per_node else max(res.gpus, 1)


def pool_dir(dir: Path) -> Path:
    return Path(dir) / POOL


def configured_gpus(
    settings: Mapping[str, Any], label: str = "local.gpus"
) -> Optional[tuple[str, ...]]:
    """GPUs named by a section's ``gpus`` (ids or a count); None when it names none."""
    configured = settings.get("gpus")
    if configured is None:
        return None
    if isinstance(configured, int) and not isinstance(configured, bool) and configured >= 0:
        return tuple(str(i) for i in range(configured))
    if isinstance(configured, (list, tuple)):
        return tuple(str(g) for g in configured)
    raise ConfigError(f"{label} must be a count or a list of ids, got {configured!r}")


def discover_gpus(settings: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, ...]:
    """GPUs from ``local.gpus`` (ids or a count), CUDA_VISIBLE_DEVICES, or nvidia-smi."""
    configured = configured_gpus(settings)
    if configured is not None:
        return configured
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1")
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


class LocalBackend(Backend):
    """Runs XPs in a detached local pool."""

    name = "local"

    def __init__(self, ctx: LaunchContext) -> None:
        super().__init__(ctx)
        self.pool = pool_dir(ctx.dir)

    # -- configuration ---------------------------------------------------------------
    def config(self, submissions: Sequence[Submission] = ()) -> PoolConfig:
        settings = dict(self.ctx.settings)
        gpus = discover_gpus(settings, dict(self.ctx.env))
        per_gpu = int(settings.get("xps_per_gpu") or 1)
        if per_gpu < 1:
            raise ConfigError(f"local.xps_per_gpu must be >= 1, got {per_gpu}")
        workers = settings.get("workers")
        if workers is None:
            wants_gpu = any(s.resources.gpus for s in submissions)
            workers = len(gpus) * per_gpu if wants_gpu and gpus else (os.cpu_count() or 1)
        if int(workers) < 1:
            raise UsageError(f"workers must be >= 1, got {workers}")
        return PoolConfig(int(workers), gpus, per_gpu)

    def check(self, submissions: Sequence[Submission]) -> None:
        cfg = self.config(submissions)
        need = max((s.resources.gpus for s in submissions), default=0)
        if need and need > len(cfg.gpus):
            have = f"only {len(cfg.gpus)}" if cfg.gpus else "none"
            raise UsageError(
                f"XPs ask for {need} GPU(s) but this machine has {have}",
                "run with --gpus 0 to run them without GPUs, or set local.gpus in gridman.yaml",
            )

    def describe(self, submissions: Sequence[Submission] = ()) -> str:
        cfg = self.config(submissions)
        gpus = f", GPUs {','.join(cfg.gpus)} x{cfg.xps_per_gpu}" if cfg.gpus else ""
        return f"local pool ({cfg.workers} workers{gpus})"

    # -- submit ----------------------------------------------------------------------
    def submit(self, submissions: Sequence[Submission]) -> None:
        if not submissions:
            return
        cfg = self.config(submissions)
        queue = self.pool / "queue"
        secure_pool(self.pool)
        atomic_write_json(self.pool / "config.json", cfg.to_json(), fsync=False)
        env = dict(self.ctx.env)
        for sub in submissions:
            name = f"{time.time_ns():020d}-{sub.sig}.json"
            clear_cancel(sub.folder)
            # job.json first: a crash before the queue entry leaves a PENDING attempt with
            # no entry, which poll() reports as VANISHED (and --retry resubmits).
            update_job(sub.folder, _queued(name), durable=False)
            attempt = AttemptSpec.for_xp(self.ctx, sub.sig, sub.folder, sub.argv, "local",
                                         env=env, job_id=name,
                                         ranks=local_ranks(sub.resources))  # fmt: skip
            # "gpus" is how many the XP asks for; the daemon picks which (pool.py).
            item = {"version": 1, "sig": sub.sig, "gpus": sub.resources.gpus, **attempt.to_json()}
            _write_private(queue / name, item)
        ensure_daemon(self.pool, self.ctx.python or sys.executable)

    # -- poll ------------------------------------------------------------------------
    def poll(self, jobs: Sequence[tuple[Path, JobRecord]]) -> dict[Path, JobRecord]:
        fresh: dict[Path, JobRecord] = {}
        restart = False
        for folder, record in jobs:
            latest = record.latest
            if latest is None or latest.host not in (None, this_host()):
                continue
            if latest.state is State.RUNNING:
                new = mark_vanished(folder)
                if new is not None and new is not record:
                    fresh[folder] = new
            elif latest.state is State.PENDING and latest.backend == "local":
                queued = bool(latest.job_id) and (self.pool / "queue" / str(latest.job_id)).exists()
                restart |= queued
                if not queued and self._lost(folder, latest.job_id, latest.submitted):
                    fresh[folder] = end_latest(folder, State.VANISHED)
        if restart:
            ensure_daemon(self.pool, self.ctx.python or sys.executable)
        for folder, record in fresh.items():
            _drop_settled_claim(self.pool, folder, record)
        return fresh

    def _lost(self, folder: Path, job_id: Optional[str], submitted: Optional[float]) -> bool:
        if job_id and (self.pool / "claimed" / job_id).exists() and daemon_alive(self.pool):
            return False  # the daemon took it and is starting it
        if is_running_here(folder):
            return False
        return submitted is None or now() - submitted > _PENDING_GRACE

    # -- cancel ----------------------------------------------------------------------
    def cancel(self, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
        live = [(f, r) for f, r in jobs if r.latest is not None and not r.latest.state.finished]
        running: list[Path] = []
        # Unqueue every pending XP first, so that no freed slot picks one of them up.
        for folder, record in live:
            latest = record.latest
            assert latest is not None
            if latest.state is State.PENDING and latest.job_id and self._unqueued(folder, latest):
                end_latest(folder, State.CANCELLED)
            else:
                request_cancel(folder)  # the runner checks it before and after starting
                running.append(folder)
        for folder in running:
            _signal(folder, signal.SIGTERM)
        _wait_finished(running)
        for folder, _ in live:
            settled = read_job(folder)
            if settled is not None:
                _drop_settled_claim(self.pool, folder, settled)

    def _unqueued(self, folder: Path, latest: Attempt) -> bool:
        """Whether a PENDING attempt can never start now: its entry was taken out of the
        queue here, or was gone already (lost, or claimed by a daemon since killed) with no
        runner on it. Then there is nothing to wait for."""
        job_id = str(latest.job_id)
        if _unqueue(self.pool, job_id):
            return True
        if (self.pool / "claimed" / job_id).exists() and daemon_alive(self.pool):
            return False  # the daemon took it and is starting it: its runner sees the cancel
        return not is_running_here(folder)


def _queued(name: str) -> Callable[[JobRecord], JobRecord]:
    def change(record: JobRecord) -> JobRecord:
        return record.with_new_attempt(
            "local", State.PENDING, job_id=name, submitted=now(), host=this_host()
        )

    return change


def _drop_settled_claim(pool: Path, folder: Path, record: JobRecord) -> None:
    """Remove the claim of an attempt whose end is recorded and that no runner holds: a
    killed daemon left it, and it holds the user's environment."""
    latest = record.latest
    if latest is None or not latest.state.finished or latest.backend != "local":
        return
    if not latest.job_id or "/" in latest.job_id:
        return
    claim = pool / "claimed" / latest.job_id
    if claim.exists() and not is_running_here(folder):  # (the lock only when there is one)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(claim)


def secure_pool(pool: Path) -> None:
    """Create the pool's folders private (0700); refuse ones another user owns or may write
    (UnsafePathError): what their queue holds runs as this user."""
    for path in (pool, pool / "queue", pool / "claimed"):
        ensure_private_dir(path)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    # Queue entries hold the user's environment: readable by the user only.
    # Not fsync'd: an entry lost in a crash leaves a PENDING attempt without its entry, which
    # poll() reports as lost before it started, and the next plan submits again.
    atomic_write_json(path, data, fsync=False, private=True)


def _unqueue(pool: Path, job_id: str) -> bool:
    try:
        os.unlink(pool / "queue" / job_id)
    except FileNotFoundError:
        return False  # the daemon claimed it already: it is starting or running
    return True


def _signal(folder: Path, sig: int) -> None:
    record = read_job(folder)
    latest = record.latest if record else None
    if latest is not None:
        # Only while the pid is still the XP's process (start time, boot id): never a stranger.
        signal_attempt(latest, sig)


def _wait_finished(folders: list[Path]) -> None:
    """Wait for runners to record the end; escalate to SIGKILL, then record it ourselves."""
    deadline = time.monotonic() + _CANCEL_WAIT
    killed = False
    while folders:
        folders = [f for f in folders if not _finished(f)]
        if not folders:
            return
        if time.monotonic() > deadline:
            if killed:
                for folder in folders:
                    end_latest(folder, State.CANCELLED)
                return
            for folder in folders:
                _signal(folder, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 3.0
        time.sleep(0.05)


def _finished(folder: Path) -> bool:
    record = read_job(folder)
    if record is None or record.latest is None or record.latest.state.finished:
        return True
    latest = record.latest
    if latest.state is State.RUNNING and not process_is(latest) and not is_running_here(folder):
        end_latest(folder, State.CANCELLED)
        return True
    return False


# -- the daemon ----------------------------------------------------------------------
def daemon_alive(pool: Path) -> bool:
    with file_lock(pool / "daemon.lock", blocking=False) as got:
        return not got


def ensure_daemon(pool: Path, python: str) -> None:
    """Start a pool daemon unless one is alive (a second one exits at once if both start)."""
    secure_pool(pool)
    if daemon_alive(pool):
        return
    # Never through a link: one planted there would have the daemon append to its target.
    log = open_nofollow(pool / "daemon.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        subprocess.Popen(
            [python, "-m", "gridman.backends.pool", str(pool)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    finally:
        os.close(log)


# -- the registry's entry ------------------------------------------------------------------
def _check_values(section: Mapping[str, Any]) -> None:
    configured_gpus(section, "gpus")
    for key in ("workers", "xps_per_gpu"):
        value = section.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):  # fmt: skip
            raise UsageError(f"{key} must be a positive integer, got {value!r}")


def _queue_file_hidden(job_id: str) -> Optional[str]:
    # The pool's job ids are its queue files' names: the attempt's pid says more.
    return None if job_id.endswith(".json") else job_id


BACKEND = BackendSpec(
    name="local",
    description="a detached pool of worker processes on this machine (GPU slots included)",
    factory=LocalBackend,
    keys=("workers", "gpus", "xps_per_gpu"),
    check_values=_check_values,
    detect=lambda env: Choice("the default"),
    # Records written by `gridman run` and by an Evaluator (a process on this host, with its
    # pid) are polled like local ones: a dead process shows VANISHED.
    aliases=(FOREGROUND, "evaluator"),
    job_label=_queue_file_hidden,
)
