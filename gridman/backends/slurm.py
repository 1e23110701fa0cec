"""The Slurm backend: XPs go out through submitit as job arrays; states from squeue and sacct.

``submit`` groups XPs that share their resources (``slurm.group_arrays``, on by default; XPs of
one ``launcher.job_array()`` always share them) into job arrays of at most the cluster's
``MaxArraySize`` tasks: one ``sbatch`` per array, ``%N`` from ``array_parallelism``. Each array is
first written down as an *intent* (``<dir>/.slurm/submissions/<token>.json``, fsync'd, naming the
job ``gridman-<token>``) and its XPs recorded PENDING under that token; only then does sbatch run,
and the job ids are recorded after. If gridman dies in between, a later poll finds the job by
name and records it (or cancels what no XP claims any more), so no XP is ever submitted twice.

``poll`` makes one ``squeue`` call (shared between commands for a few seconds) and asks ``sacct``
only about jobs that left the queue (cached); without accounting, the status file that the job
writes itself settles jobs Slurm has forgotten. ``cancel`` is one ``scancel`` of the array tasks.

What each job asks for is :func:`gridman.core.resources.slurm_request` (Dora's mapping: one task
per GPU, at most ``max_gpus_per_node`` GPUs a node, more GPUs on more nodes).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shlex
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import atomic_write_json, read_json
from ..core.jobs import (
    JobRecord,
    State,
    end_latest,
    now,
    pid_alive,
    read_job,
    this_host,
    update_job,
)
from ..core.liveness import clear_cancel, request_cancel, worker_status
from ..core.resources import DEFAULT_MAX_GPUS_PER_NODE, Resources, slurm_request
from ..errors import UsageError
from .attempt import snapshot_setup
from .base import Backend, BackendSpec, Choice, LaunchContext, Submission, check_flag
from .slurm_job import XPTask
from .slurm_query import JobInfo, SlurmError, SlurmView, max_array_size, sacct_by_name, scancel

SLURM_DIR = ".slurm"
_GRACE = 60.0  # seconds a job may be unknown to Slurm after its submission (sacct lags)
_NO_REQUEUE_LIMIT = 10**6  # submitit's own timeout count: gridman counts (max_num_timeout)

#: gridman.yaml ``slurm:`` keys that configure the backend itself (the others are resources).
BACKEND_KEYS = ("group_arrays", "cache_s", "signal_delay_s", "max_array_size", "max_gpus_per_node")


@dataclass(frozen=True)
class Intent:
    """One array (or single job) about to be, or just, submitted."""

    token: str
    name: str
    folders: tuple[str, ...]  # the XPs' (or stages') folders, relative to the XP root
    array: bool
    pid: int
    host: str
    created: float
    job_id: Optional[str] = None  # the array's job id once sbatch answered
    void: bool = False  # sbatch never ran (or failed)

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, **{k: getattr(self, k) for k in self.__dataclass_fields__},
                "folders": list(self.folders)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Intent:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**fields, "folders": tuple(data["folders"])})

    def task_id(self, index: int) -> str:
        assert self.job_id is not None
        return f"{self.job_id}_{index}" if self.array else self.job_id


def array_chunks(
    submissions: Sequence[Submission], max_size: int, group: bool = True
) -> list[list[Submission]]:
    """Submissions grouped into arrays of at most ``max_size``: all XPs that share their
    resources, or (``group=False``) only those of one ``launcher.job_array()`` block."""
    groups: dict[Any, list[Submission]] = {}
    for sub in submissions:
        key: Any = sub.resources if group else (sub.resources, sub.array)
        groups.setdefault(key, []).append(sub)
    chunks = []
    for members in groups.values():
        for start in range(0, len(members), max_size):
            chunks.append(members[start : start + max_size])
    return chunks


def sbatch_parameters(
    res: Resources, name: str, signal_delay_s: int,
    max_gpus_per_node: int = DEFAULT_MAX_GPUS_PER_NODE,
) -> dict[str, Any]:  # fmt: skip
    """submitit's SlurmExecutor parameters for these resources (no site defaults)."""
    request = slurm_request(res, max_gpus_per_node)
    params: dict[str, Any] = {
        "job_name": name, "signal_delay_s": signal_delay_s, "stderr_to_stdout": True,
        "array_parallelism": res.array_parallelism, "time": res.time,  # None: cluster's default
        "nodes": request.nodes, "ntasks_per_node": request.ntasks_per_node,
    }  # fmt: skip
    extra: dict[str, Any] = {k: v if v != "" else True for k, v in res.sbatch_args}  # bare flag
    if request.gpus_per_node:
        params["gpus_per_node"] = request.gpus_per_node
    if request.mem and "mem" not in extra:  # a raw sbatch_args mem wins
        params["mem"] = request.mem
    if request.cpus_per_task:
        params["cpus_per_task"] = request.cpus_per_task
    for key in ("partition", "comment", "constraint", "exclude", "qos", "account", "nodelist"):
        value = getattr(res, key)
        if value:
            params[key] = value
    if res.setup:
        params["setup"] = list(res.setup)
    srun_args = list(res.srun_args)
    if request.tasks > 1 and not any(a.startswith(("--kill-on-bad-exit", "-K")) for a in srun_args):
        # A rank that fails ends the step: the others would otherwise wait on it forever.
        srun_args.insert(0, "--kill-on-bad-exit=1")
    if srun_args:
        params["srun_args"] = srun_args
    if extra:
        params["additional_parameters"] = extra
    return params


class SlurmBackend(Backend):
    """Submits XPs to Slurm through submitit."""

    name = "slurm"

    def __init__(self, ctx: LaunchContext) -> None:
        super().__init__(ctx)
        self.folder = Path(ctx.dir) / SLURM_DIR
        settings = dict(ctx.settings)
        self.group = bool(settings.get("group_arrays", True))
        self.signal_delay_s = int(settings.get("signal_delay_s", 90))
        self.max_array = settings.get("max_array_size")
        self.max_gpus_per_node = int(settings.get("max_gpus_per_node") or DEFAULT_MAX_GPUS_PER_NODE)
        self.view = SlurmView(self.folder, float(settings.get("cache_s", 2.0)))
        self.sbatch_calls = 0

    def check(self, submissions: Sequence[Submission]) -> None:
        for tool in ("sbatch", "srun", "squeue"):
            if shutil.which(tool) is None:
                raise UsageError(
                    f"the slurm backend needs {tool}, which is not on PATH",
                    "run on a Slurm login node, or use --backend local",
                )
        for res in {sub.resources for sub in submissions}:
            slurm_request(res, self.max_gpus_per_node)  # a bad GPU count fails before any sbatch

    def describe(self, submissions: Sequence[Submission] = ()) -> str:
        return "slurm (job arrays through submitit)"

    def wait_hint(self) -> Optional[str]:
        return "XPs wait in the Slurm queue: squeue shows them"

    # -- submit ----------------------------------------------------------------------
    def submit(self, submissions: Sequence[Submission]) -> None:
        if not submissions:
            return
        size = int(self.max_array or max_array_size())
        chunks = array_chunks(submissions, size, self.group)
        done = 0
        for chunk in chunks:
            self._submit_chunk(chunk)
            done += len(chunk)
            if self.ctx.progress is not None:
                self.ctx.progress(f"{done}/{len(submissions)} XPs submitted "
                                  f"({self.sbatch_calls} sbatch)")  # fmt: skip
        self.view.forget_queue()

    def _submit_chunk(self, chunk: list[Submission]) -> None:
        token = secrets.token_hex(6)
        folders = tuple(str(Path(s.folder).relative_to(self.ctx.dir)) for s in chunk)
        intent = Intent(token, f"gridman-{token}", folders, len(chunk) > 1, os.getpid(),
                        this_host(), now())  # fmt: skip
        self._write_intent(intent)  # durable: the one record a crash must not lose
        for index, sub in enumerate(chunk):
            clear_cancel(sub.folder)
            update_job(sub.folder, _pending(intent, index), durable=False)
        try:
            job_id = self._sbatch(chunk, intent)
        except SlurmError as exc:
            for sub in chunk:
                update_job(sub.folder, _failed(token, str(exc)))
            self._write_intent(replace(intent, void=True))
            raise
        _fault("after-sbatch")
        intent = replace(intent, job_id=job_id)
        for index, sub in enumerate(chunk):
            update_job(sub.folder, _with_job_id(token, intent.task_id(index)), durable=False)
        self._write_intent(intent)

    def _sbatch(self, chunk: list[Submission], intent: Intent) -> str:
        import submitit

        res = chunk[0].resources
        folder = self.folder / "jobs" / intent.token
        try:
            executor = submitit.SlurmExecutor(
                folder=folder,
                max_num_timeout=_NO_REQUEUE_LIMIT,
                python=shlex.quote(self.ctx.python or "python3"),
            )
            params = sbatch_parameters(res, intent.name, self.signal_delay_s,
                                       self.max_gpus_per_node)  # fmt: skip
            code = snapshot_setup(self.ctx.env)  # git_save: the job imports from the copy
            if code:
                params["setup"] = [*code, *params.get("setup", [])]
            executor.update_parameters(**params)
        except (RuntimeError, ValueError) as exc:
            raise SlurmError(f"cannot prepare the sbatch script: {exc}") from None
        tasks = [self._task(sub) for sub in chunk]
        self.sbatch_calls += 1
        try:
            # submitit prints sbatch's stderr itself: it goes into the error message instead.
            with contextlib.redirect_stderr(io.StringIO()), executor.batch():
                jobs = [executor.submit(task) for task in tasks]
        except Exception as exc:  # submitit raises several kinds; all mean sbatch failed
            raise SlurmError(
                f"sbatch failed: {str(exc).strip()}",
                "check the resources (sinfo, scontrol show partition)",
            ) from None
        return str(jobs[0].job_id).split("_", 1)[0]

    def _task(self, sub: Submission) -> XPTask:
        res = sub.resources
        return XPTask(
            folder=str(sub.folder), root=str(self.ctx.root), dir=str(self.ctx.dir),
            main_spec=self.ctx.main_spec, argv=tuple(sub.argv), python=self.ctx.python,
            time_min=res.time, max_num_timeout=res.max_num_timeout,
            signal_delay_s=self.signal_delay_s,
        )  # fmt: skip

    # -- intents ---------------------------------------------------------------------
    def _intent_path(self, token: str) -> Path:
        if not token.isalnum():
            raise ValueError(f"bad submission token {token!r}")  # never a path outside
        return self.folder / "submissions" / f"{token}.json"

    def _write_intent(self, intent: Intent) -> None:
        path = self._intent_path(intent.token)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, intent.to_json(), fsync=True)

    def _read_intent(self, token: str) -> Optional[Intent]:
        try:
            return Intent.from_json(read_json(self._intent_path(token)))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- poll ------------------------------------------------------------------------
    def poll(self, jobs: Sequence[tuple[Path, JobRecord]]) -> dict[Path, JobRecord]:
        live = [(f, r) for f, r in jobs if r.latest is not None and r.latest.backend == "slurm"]
        if not live:
            return {}
        # An orphan is looked for in a fresh squeue: a shared snapshot may predate its sbatch.
        queue = self.view.queue(fresh=any(not _job_id(r) for _, r in live))
        fresh = self._recover([(f, r) for f, r in live if not _job_id(r)], queue)
        live = [(f, fresh.get(f, r)) for f, r in live]
        gone_ids = [i for _, r in live if (i := _job_id(r)) and i not in queue]
        gone = self.view.finished(gone_ids) if gone_ids else {}
        for folder, record in live:
            job_id = _job_id(record)
            if job_id and record.latest is not None and not record.latest.state.finished:
                new = reconcile(folder, record, queue.get(job_id) or gone.get(job_id))
                if new is not None:
                    fresh[folder] = new
        return fresh

    def _recover(
        self, orphans: list[tuple[Path, JobRecord]], queue: dict[str, JobInfo]
    ) -> dict[Path, JobRecord]:
        """Record the job ids a dead submission could not (or cancel what nobody claims)."""
        by_token: dict[str, list[tuple[Path, JobRecord]]] = {}
        for folder, record in orphans:
            assert record.latest is not None
            by_token.setdefault(str(record.latest.extra.get("token", "")), []).append(
                (folder, record)
            )
        fresh: dict[Path, JobRecord] = {}
        for token, items in by_token.items():
            intent = self._read_intent(token) if token.isalnum() else None
            if intent is not None and intent.job_id is None and not intent.void:
                if intent.host == this_host() and pid_alive(intent.pid):
                    continue  # that submission is still going on
                intent = self._find_orphan(intent, queue)
            fresh.update(self._settle_intent(intent, token, items))
        return fresh

    def _find_orphan(self, intent: Intent, queue: dict[str, JobInfo]) -> Intent:
        ids = {i.split("_", 1)[0] for i, info in queue.items() if info.name == intent.name}
        if not ids:
            found = sacct_by_name(intent.name) or {}
            ids = {i.split("_", 1)[0] for i in found}
        if not ids:
            return replace(intent, void=True)
        intent = replace(intent, job_id=sorted(ids)[-1])
        self._write_intent(intent)
        return intent

    def _settle_intent(
        self, intent: Optional[Intent], token: str, items: list[tuple[Path, JobRecord]]
    ) -> dict[Path, JobRecord]:
        fresh: dict[Path, JobRecord] = {}
        if intent is None or intent.void or intent.job_id is None:
            # sbatch never ran: the XPs were never submitted (the next plan submits them).
            for folder, record in items:
                submitted = record.latest.submitted if record.latest else None
                if intent is not None or now() - (submitted or 0) > _GRACE:
                    fresh[folder] = update_job(folder, _vanished(token))
            return fresh
        unclaimed = []
        for index, relative in enumerate(intent.folders):
            where, task = self._inside(relative), intent.task_id(index)
            if where is None or read_job(where) is None:  # --clear deleted it: keep it so
                unclaimed.append(task)
                continue
            record = update_job(where, _with_job_id(token, task), durable=False)
            if _job_id(record) == task and _ours(record, token):
                fresh[where] = record
            else:
                unclaimed.append(task)  # its XP moved on: nobody waits for this task
        scancel(unclaimed)
        return fresh

    def _inside(self, relative: str) -> Optional[Path]:
        """``dir/relative`` when it stays inside the XP root (an intent file is data)."""
        root = Path(self.ctx.dir).resolve()
        folder = (root / relative).resolve()
        inside = folder.is_relative_to(root) and folder != root
        return Path(self.ctx.dir) / relative if inside else None

    # -- cancel ----------------------------------------------------------------------
    def cancel(self, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
        live = [(f, r) for f, r in jobs if r.latest is not None and not r.latest.state.finished]
        if not live:
            return
        queue = self.view.queue(fresh=True)
        live = [(f, self._recover([(f, r)], queue).get(f, r)) if not _job_id(r) else (f, r)
                for f, r in live]  # fmt: skip
        for folder, _ in live:
            request_cancel(folder)  # the job's runner records CANCELLED when its XP stops
        scancel([i for _, r in live if (i := _job_id(r))])
        for folder, _ in live:
            end_latest(folder, State.CANCELLED)
        self.view.forget_queue()


def reconcile(folder: Path, record: JobRecord, info: Optional[JobInfo]) -> Optional[JobRecord]:
    """The record updated with what Slurm says (None: nothing to change)."""
    latest = record.latest
    assert latest is not None
    if info is not None and info.state is State.PENDING:
        return None
    if info is not None and info.state is State.RUNNING:
        if latest.state is State.PENDING and not latest.extra.get("requeued"):
            return update_job(folder, _running(latest.n, info.node), durable=False)
        return None
    said = worker_status(folder, latest.n)
    code = said.get("exit_code")
    code = code if isinstance(code, int) else (info.exit_code if info else None)
    if info is None:
        if not isinstance(said.get("exit_code"), int) and now() - (latest.submitted or 0) < _GRACE:
            return None  # just submitted: accounting may lag
        state = State.VANISHED if code is None else (State.COMPLETED if code == 0 else State.FAILED)
    elif info.state in (State.COMPLETED, State.FAILED) and code is not None:
        state = State.COMPLETED if code == 0 else State.FAILED
    else:
        state = info.state
    return update_job(folder, _end(latest.n, state, code, info.node if info else None))


def _job_id(record: JobRecord) -> Optional[str]:
    return record.latest.job_id if record.latest is not None else None


def _fault(point: str) -> None:
    """Test hook: die like ``kill -9`` at ``point`` when GRIDMAN_FAULT names it."""
    if os.environ.get("GRIDMAN_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


# -- job.json changes (applied under the XP's lock) ----------------------------------------
def _pending(intent: Intent, index: int) -> Any:
    def change(record: JobRecord) -> JobRecord:
        return record.with_new_attempt(
            "slurm", State.PENDING, submitted=now(), array_index=index if intent.array else None,
            extra={"token": intent.token, "job_name": intent.name},
        )  # fmt: skip

    return change


def _ours(record: JobRecord, token: str) -> bool:
    latest = record.latest
    return latest is not None and latest.extra.get("token") == token and not latest.state.finished


def _with_job_id(token: str, job_id: str) -> Any:
    def change(record: JobRecord) -> JobRecord:
        if not _ours(record, token) or _job_id(record):
            return record
        return record.with_latest(job_id=job_id)

    return change


def _failed(token: str, error: str) -> Any:
    def change(record: JobRecord) -> JobRecord:
        if not _ours(record, token) or record.latest is None:
            return record
        extra = {**record.latest.extra, "error": error}
        return record.with_latest(state=State.FAILED, ended=now(), extra=extra)

    return change


def _vanished(token: str) -> Any:
    def change(record: JobRecord) -> JobRecord:
        if not _ours(record, token) or _job_id(record):
            return record
        return record.with_latest(state=State.VANISHED, ended=now())

    return change


def _running(n: int, node: Optional[str]) -> Any:
    def change(record: JobRecord) -> JobRecord:
        latest = record.latest
        if latest is None or latest.n != n or latest.state is not State.PENDING:
            return record
        return record.with_latest(state=State.RUNNING, host=node or latest.host)

    return change


def _end(n: int, state: State, code: Optional[int], node: Optional[str]) -> Any:
    def change(record: JobRecord) -> JobRecord:
        latest = record.latest
        if latest is None or latest.n != n or latest.state.finished:
            return record  # the job's runner recorded the end first: it knows best
        return record.with_latest(state=state, ended=now(), host=latest.host or node,
                                  exit_code=latest.exit_code if code is None else code)  # fmt: skip

    return change


# -- the registry's entry ------------------------------------------------------------------
def _detect(env: Mapping[str, str]) -> Optional[Choice]:
    if shutil.which("sbatch", path=env.get("PATH")):
        return Choice("sbatch is on PATH; --backend local runs XPs on this machine")
    return None


def _check_values(section: Mapping[str, Any]) -> None:
    for key in ("signal_delay_s", "max_array_size", "cache_s"):
        value = section.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):  # fmt: skip
            raise UsageError(f"{key} must be a non-negative number, got {value!r}")
    gpus = section.get("max_gpus_per_node")
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise UsageError(f"max_gpus_per_node must be a positive integer, got {gpus!r}",
                         "the GPUs on one node of this cluster, e.g. 8")  # fmt: skip
    check_flag(section, "group_arrays")


BACKEND = BackendSpec(
    name="slurm",
    description="a Slurm cluster, as job arrays through submitit (default when sbatch is on PATH)",
    factory=SlurmBackend,
    keys=BACKEND_KEYS,
    check_values=_check_values,
    detect=_detect,
    # As in Dora, `slurm:` also holds the resources every launcher starts from (partition,
    # time, gpus...): used by every backend that can (GPUs locally too).
    resource_defaults=True,
)
