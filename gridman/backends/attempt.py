"""Run one attempt of an XP here: the single entry every backend's host goes through.

Whatever hosts the attempt (the local pool daemon, a Slurm job, an MPI rank, ``gridman run``
in the foreground, the inline backend in this very process), it describes the attempt as an
:class:`AttemptSpec` and calls :func:`run_here` (or :func:`run_guarded` when the host must
survive anything, or :func:`run_in_process` to run the main in this process). All of them end
in the shared runner (runner.py), which takes the XP's run lock and records the attempt in
``job.json``, so an attempt means the same on every backend.
"""

from __future__ import annotations

import contextlib
import shlex
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Optional

from ..core.jobs import State
from ..core.snapshot import COMMIT_ENV, ROOT_ENV, Snapshot, snapshot_env
from ..errors import XPBusyError
from .base import LaunchContext
from .runner import RunResult, run_attempt, worker_command, worker_env
from .worker import exit_status

#: The backend ``gridman run`` records for the attempts it runs in the console (polled as
#: local ones: see local.py's aliases).
FOREGROUND = "foreground"


@dataclass(frozen=True)
class AttemptSpec:
    """One attempt to run: the child's command line and environment, and how to record it.

    Its JSON form is what the local pool's queue entries and MPI messages carry (the keys of
    gridman 0.1.0's queue entries, so entries already on disk still run).
    """

    folder: Path
    command: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)
    backend: str = "local"
    job_id: Optional[str] = None
    #: CUDA_VISIBLE_DEVICES for the XP (None: the host's environment decides).
    gpus: Optional[tuple[str, ...]] = None
    #: Processes (ranks) the runner starts for the XP, each seeing all of ``gpus``.
    ranks: int = 1
    #: Ranks started by others (a Slurm step's tasks 1..peers), watched by this rank 0.
    peers: int = 0

    @classmethod
    def for_xp(
        cls,
        ctx: LaunchContext,
        sig: str,
        folder: Path,
        argv: Sequence[str],
        backend: str,
        *,
        env: Optional[Mapping[str, str]] = None,
        job_id: Optional[str] = None,
        extra_env: Optional[Mapping[str, str]] = None,
        ranks: int = 1,
    ) -> AttemptSpec:
        """The attempt of XP ``sig`` that a backend with this context starts."""
        command = worker_command(ctx.main_spec, ctx.root, argv, ctx.python)
        base = ctx.env if env is None else env
        return cls(Path(folder), tuple(command), Path(ctx.root),
                   worker_env(base, ctx.dir, sig, extra_env or {}), backend, job_id,
                   ranks=ranks)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "command": list(self.command), "cwd": str(self.cwd),
                "env": dict(self.env), "backend": self.backend, "job_id": self.job_id,
                "ranks": self.ranks}  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, **changes: Any) -> AttemptSpec:
        """From :meth:`to_json`'s form (or an older queue entry); ``changes`` win.

        Raises ValueError saying what is wrong with a malformed one (a queue entry is a file
        anyone with a shell may have edited).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"an attempt is a JSON object, not {type(data).__name__}")
        command = data.get("command")
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise ValueError(f"'command' must be a non-empty list of strings, got {command!r}")
        env = data.get("env") or {}
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise ValueError("'env' must map names to strings")
        job_id = data.get("job_id")
        ranks = data.get("ranks", 1)  # absent from entries written before ranks existed
        if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
            raise ValueError(f"'ranks' must be a positive count of processes, got {ranks!r}")
        fields: dict[str, Any] = {
            "ranks": ranks,
            "folder": Path(_text(data, "folder")),
            "command": tuple(command),
            "cwd": Path(_text(data, "cwd")),
            "env": {str(k): v for k, v in env.items()},
            "backend": str(data.get("backend") or "local"),
            "job_id": None if job_id is None else str(job_id),
        }
        fields.update(changes)
        return cls(**fields)

    def environment(self) -> dict[str, str]:
        env = dict(self.env)
        if self.gpus is not None:
            # The XP sees only the GPUs it was given; one that asked for none sees none.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        return env


def snapshot_context(ctx: LaunchContext, snapshot: Snapshot) -> LaunchContext:
    """The context of XPs that run from a code snapshot (git_save): their cwd is the copy's
    project root, their main is imported from it, and PYTHONPATH has it first. The XP root
    stays the original one (``GRIDMAN_DIR``)."""
    return replace(ctx, root=snapshot.root, main_spec=snapshot.main_spec(ctx.main_spec),
                   env=snapshot_env(snapshot, ctx.env))  # fmt: skip


def snapshot_setup(env: Mapping[str, str]) -> list[str]:
    """Shell lines that give a batch job (Slurm) the snapshot's variables of ``env`` (a
    job's environment is the submitting process's, not the context's); none without one."""
    if ROOT_ENV not in env:
        return []
    names = ("PYTHONPATH", COMMIT_ENV, ROOT_ENV)
    return [f"export {name}={shlex.quote(env[name])}" for name in names if name in env]


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a path, got {value!r}")
    return value


def run_here(
    spec: AttemptSpec,
    *,
    echo: Optional[tuple[BinaryIO, BinaryIO]] = None,
    new_session: bool = True,
    on_start: Optional[Callable[[Any], None]] = None,
) -> RunResult:
    """Run the attempt as a child process and record it; raises XPBusyError when the XP
    already runs. ``echo`` copies its output to the console too (``gridman run``)."""
    return run_attempt(
        spec.folder, spec.command, cwd=spec.cwd, env=spec.environment(), backend=spec.backend,
        echo=echo, job_id=spec.job_id, new_session=new_session, on_start=on_start,
        ranks=spec.ranks, peers=spec.peers,
    )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, for a host that must go on whatever happened."""

    state: str
    exit_code: Optional[int] = None
    error: Optional[str] = None  # why it did not run (or the host's own error)
    busy: bool = False  # not started: the XP already runs elsewhere

    def text(self) -> str:
        if self.busy:
            return f"not started: {self.error}"
        if self.error:
            return f"runner error:\n{self.error}"
        return f"{self.state} exit={self.exit_code}"


def run_guarded(spec: AttemptSpec, on_start: Optional[Callable[[Any], None]] = None) -> Outcome:
    """:func:`run_here` in a new session, never raising: a pool thread or an MPI rank must
    survive any XP and any error of its own. ``on_start`` must not raise either: the XP
    would run on unwaited."""
    try:
        result = run_here(spec, on_start=on_start)
    except XPBusyError as exc:
        return Outcome(State.FAILED.value, error=exc.message, busy=True)
    except Exception:
        return Outcome(State.FAILED.value, error=traceback.format_exc())
    return Outcome(result.state.value, result.exit_code)


def run_in_process(
    folder: Path, main: Any, argv: Sequence[str], cwd: Path, backend: str
) -> RunResult:
    """Run the attempt in this very process (a breakpoint in the training code just works),
    its output going to the attempt's log; recorded like any other attempt."""

    def call(log: Path) -> int:
        with open(log, "a", encoding="utf8") as out:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    main.run_argv(list(argv))
                except SystemExit as exc:
                    return exit_status(exc)
                except Exception:
                    out.write(traceback.format_exc())
                    return 1
        return 0

    return run_attempt(folder, (), cwd=cwd, env={}, backend=backend, call=call)
