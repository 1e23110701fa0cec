"""Backends: where XPs run. Each implements the narrow interface of ``base.Backend``."""

from __future__ import annotations

from ..errors import UsageError
from .base import Backend, LaunchContext, Submission

__all__ = ["BACKENDS", "Backend", "LaunchContext", "Submission", "get_backend"]

#: Backend names a user can choose, with what they are.
BACKENDS = {
    "local": "a detached pool of worker processes on this machine (GPU slots included)",
    "inline": "in this process, one XP after the other (debugging, tests)",
    "mpi": "the ranks of the MPI job this command runs in (mpiexec -n N gridman grid ...)",
    "slurm": "a Slurm cluster, as job arrays through submitit (default when sbatch is on PATH)",
}
# Records written by `gridman run` and by an Evaluator (a process on this host, with its pid)
# are polled like local ones: a dead process shows VANISHED.
_ALIASES = {"foreground": "local", "evaluator": "local"}


def get_backend(name: str, ctx: LaunchContext) -> Backend:
    """The backend called ``name``; an unknown name is a usage error listing the valid ones."""
    name = _ALIASES.get(name, name)
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(ctx)
    if name == "mpi":
        from .mpi import MPIBackend

        return MPIBackend(ctx)
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(ctx)
    if name == "inline":
        from .inline import InlineBackend

        return InlineBackend(ctx)
    raise UsageError(
        f"unknown backend {name!r}",
        "valid backends: " + ", ".join(f"{k} ({v})" for k, v in BACKENDS.items()),
    )
