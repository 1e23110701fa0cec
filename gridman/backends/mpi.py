"""The MPI backend: a whole grid inside one allocation (``mpiexec -n N gridman grid ...``).

Rank 0 runs the command as usual: it builds the herd and the plan, records each XP to run as
PENDING, then hands XPs to ranks 1..N-1 one at a time (dynamic load balancing) and shows
progress. Every other rank serves in ``serve``: it runs each XP it receives as a child process
through the shared runner, so an XP that raises, exits non-zero, segfaults or is killed is
recorded FAILED and the rank goes on. Nothing of gridman's may escape a rank: an unexpected
error aborts the whole job (MPI_Abort) instead of deadlocking it. Waits use Iprobe with a
back-off so that no rank spins a core that belongs to the XPs.
"""

from __future__ import annotations

import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from ..core.jobs import JobRecord, State, now, pid_alive, this_host, update_job
from ..core.liveness import mark_vanished
from ..errors import UsageError
from .attempt import AttemptSpec, run_guarded
from .base import Backend, BackendSpec, Choice, LaunchContext, Submission, check_flag
from .local import configured_gpus, discover_gpus
from .mpienv import local_rank, world

TASK, RESULT, STOP = 1, 2, 3
_BACKOFF_CAP = 0.005
INSTALL_HINT = "install the MPI extra: pip install 'gridman[mpi]' (mpi4py and the mpich wheel)"


def comm_world() -> Any:
    """mpi4py's COMM_WORLD, or a UsageError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError("the MPI backend needs mpi4py", INSTALL_HINT) from None
    except RuntimeError as exc:  # mpi4py without an MPI library
        raise UsageError(f"mpi4py cannot load an MPI library ({exc})", INSTALL_HINT) from None
    return MPI.COMM_WORLD


def wait_message(comm: Any, source: int, tag: int, status: Any) -> None:
    """Block until a message is there, sleeping between probes (a blocking recv spins)."""
    delay = 1e-4
    while not comm.Iprobe(source=source, tag=tag, status=status):
        time.sleep(delay)
        delay = min(_BACKOFF_CAP, delay * 2)


class MPIBackend(Backend):
    """Runs XPs on the other ranks of the MPI job this command is rank 0 of."""

    name = "mpi"

    def __init__(self, ctx: LaunchContext) -> None:
        super().__init__(ctx)
        self.rank, self.size = world()

    def describe(self, submissions: Sequence[Submission] = ()) -> str:
        return f"mpi ({self.size - 1} worker ranks)"

    def check(self, submissions: Sequence[Submission]) -> None:
        if self.size < 2:
            raise UsageError(
                "the MPI backend runs inside an MPI job with at least 2 ranks",
                "mpiexec -n 9 gridman grid NAME --backend mpi (or srun -n 9 ... in sbatch)",
            )
        refuse_distributed(submissions)
        comm_world()

    def submit(self, submissions: Sequence[Submission]) -> None:
        if not submissions:
            return
        comm = comm_world()
        master = [this_host(), os.getpid()]
        tasks: deque[dict[str, Any]] = deque()
        for sub in submissions:
            job_id = f"mpi-{master[0]}-{master[1]}-{sub.sig}"
            update_job(sub.folder, _queued(job_id, master), durable=False)
            tasks.append(self._task(sub, job_id))
        dispatch(comm, tasks, self.ctx.progress)

    def _task(self, sub: Submission, job_id: str) -> dict[str, Any]:
        attempt = AttemptSpec.for_xp(self.ctx, sub.sig, sub.folder, sub.argv, "mpi",
                                     env=xp_environment(self.ctx.env), job_id=job_id)  # fmt: skip
        # "gpus": how many the XP asks for; the rank picks which (rank_gpus).
        return {"sig": sub.sig, "gpus": sub.resources.gpus, "settings": dict(self.ctx.settings),
                **attempt.to_json()}  # fmt: skip

    def poll(self, jobs: Sequence[tuple[Path, JobRecord]]) -> dict[Path, JobRecord]:
        """XPs of an allocation that is gone: RUNNING ones as the runner check says, PENDING
        ones (never started) VANISHED."""
        fresh: dict[Path, JobRecord] = {}
        for folder, record in jobs:
            latest = record.latest
            if latest is None or not _allocation_gone(latest.extra.get("master")):
                continue
            if latest.state is State.RUNNING:
                new = mark_vanished(folder)
            else:
                new = update_job(folder, _vanish_pending)
            if new is not None:
                fresh[folder] = new
        return fresh

    def cancel(self, jobs: Sequence[tuple[Path, JobRecord]]) -> None:
        live = [f.name for f, r in jobs if r.latest and not r.latest.state.finished]
        if live:
            raise UsageError(
                f"{len(live)} XP(s) ({', '.join(live[:3])}...) run inside an MPI allocation",
                "XPs of an MPI job end with it: stop its mpiexec (or scancel its Slurm job)",
            )


def refuse_distributed(submissions: Sequence[Submission]) -> None:
    """Raise UsageError for an XP that would run as several processes (one per GPU): an MPI
    rank hosts one XP as one process, and gives it no peers to train with."""
    for sub in submissions:
        res = sub.resources
        if res.gpus > 1 and not res.one_task_per_node:
            raise UsageError(
                f"XP {sub.sig} asks for gpus={res.gpus}, one rank per GPU: the MPI backend "
                "runs each XP as one process on one MPI rank",
                "run it with --backend slurm or local, or give it one_task_per_node=True "
                "(one process seeing its GPUs)",
            )


_LAUNCHER_VARS = ("PMI_", "PMIX_", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "OMPI_", "HYDRA_", "PRTE_")


def xp_environment(env: Any) -> dict[str, str]:
    """The scheduling environment minus the MPI launcher's variables: an XP is not a rank of
    this job (an XP using MPI itself would otherwise join the wrong world)."""
    return {k: v for k, v in env.items() if not k.startswith(_LAUNCHER_VARS)}


def _queued(job_id: str, master: list[Any]) -> Callable[[JobRecord], JobRecord]:
    def change(record: JobRecord) -> JobRecord:
        return record.with_new_attempt(
            "mpi", State.PENDING, job_id=job_id, submitted=now(), host=master[0],
            extra={"master": master},
        )  # fmt: skip

    return change


def _vanish_pending(record: JobRecord) -> JobRecord:
    if record.latest is None or record.latest.state is not State.PENDING:
        return record
    return record.with_latest(state=State.VANISHED, ended=now())


def _allocation_gone(master: Any) -> bool:
    if not isinstance(master, list) or len(master) != 2:
        return False
    host, pid = master
    return host == this_host() and not pid_alive(int(pid))


def dispatch(comm: Any, tasks: deque[dict[str, Any]], progress: Optional[Any]) -> None:
    """Rank 0: keep every worker rank busy until no task is left; report each result."""
    from mpi4py import MPI

    status = MPI.Status()
    busy = 0
    for worker in range(1, comm.Get_size()):
        if not tasks:
            break
        comm.send(tasks.popleft(), dest=worker, tag=TASK)
        busy += 1
    done = failed = 0
    total = busy + len(tasks)
    while busy:
        wait_message(comm, MPI.ANY_SOURCE, RESULT, status)
        source = status.Get_source()
        result = comm.recv(source=source, tag=RESULT)
        busy -= 1
        done += 1
        failed += result.get("state") != State.COMPLETED.value
        if progress is not None:
            progress(f"{done}/{total} done, {failed} failed, {busy} running")
        if tasks:
            comm.send(tasks.popleft(), dest=source, tag=TASK)
            busy += 1


def serve(comm: Any) -> None:
    """Ranks 1..N-1: run the XPs rank 0 sends until it says stop."""
    from mpi4py import MPI

    status = MPI.Status()
    while True:
        wait_message(comm, 0, MPI.ANY_TAG, status)
        tag = status.Get_tag()
        message = comm.recv(source=0, tag=tag)
        if tag == STOP:
            return
        comm.send(run_task(message), dest=0, tag=RESULT)


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one XP as a child process; never raises (the rank must survive any XP)."""
    try:
        spec = AttemptSpec.from_json(task, backend="mpi", gpus=tuple(rank_gpus(task)))
    except Exception as exc:
        return {"sig": task.get("sig"), "state": State.FAILED.value, "error": repr(exc)}
    outcome = run_guarded(spec)
    if outcome.error is not None:
        return {"sig": task["sig"], "state": outcome.state, "error": outcome.error}
    return {"sig": task["sig"], "state": outcome.state, "exit_code": outcome.exit_code}


def rank_gpus(task: dict[str, Any]) -> list[str]:
    """The GPUs an XP on this rank sees: ``gpus`` of the node's GPUs, picked by local rank."""
    want = int(task.get("gpus") or 0)
    settings = task.get("settings") or {}
    if not want or settings.get("bind_gpus") is False:
        return []
    gpus = list(discover_gpus(settings, dict(task["env"])))
    if not gpus:
        return []
    first = local_rank() * want
    return [gpus[(first + i) % len(gpus)] for i in range(min(want, len(gpus)))]


def run_rank(main: Callable[[], Any]) -> int:
    """Entry point of every rank of ``mpiexec -n N gridman ...``.

    Rank 0 runs ``main`` (the CLI) and then always releases the workers; other ranks serve.
    Anything escaping a worker rank aborts the whole job rather than leaving it hung.
    """
    comm = comm_world()
    rank = comm.Get_rank()
    if rank != 0:
        try:
            serve(comm)
        except BaseException:
            traceback.print_exc()
            comm.Abort(1)
        return 0
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        for worker in range(1, comm.Get_size()):
            comm.send(None, dest=worker, tag=STOP)
    return 0


# -- the registry's entry ------------------------------------------------------------------
def _detect(env: Mapping[str, str]) -> Optional[Choice]:
    rank, size = world(env)
    if size > 1:  # this process is a rank: the job's other ranks wait for XPs
        return Choice(f"running as rank {rank} of an MPI job of {size} ranks", over_config=True)
    return None


def _entry(main: Callable[[], Any]) -> Optional[int]:
    """Under ``mpiexec -n N gridman ...`` every rank runs gridman: rank 0 the command, the
    others serve it (run_rank)."""
    if world()[1] > 1:
        return run_rank(main)
    return None


def _check_values(section: Mapping[str, Any]) -> None:
    configured_gpus(section, "gpus")
    check_flag(section, "bind_gpus")


BACKEND = BackendSpec(
    name="mpi",
    description="the ranks of the MPI job this command runs in (mpiexec -n N gridman grid ...)",
    factory=MPIBackend,
    keys=("gpus", "bind_gpus"),
    check_values=_check_values,
    detect=_detect,
    entry=_entry,
)
