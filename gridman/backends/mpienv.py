"""Where this process sits in an MPI job, read from the launcher's environment (no mpi4py).

MPICH's hydra sets PMI_RANK/PMI_SIZE, Open MPI OMPI_COMM_WORLD_RANK/SIZE, Slurm's srun
SLURM_PROCID/SLURM_NTASKS (only trusted together with a PMI variable, since plain sbatch jobs
set SLURM_NTASKS too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Optional

_PAIRS = (
    ("PMI_RANK", "PMI_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE"),
)
_LOCAL = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")


def world(env: Optional[Mapping[str, str]] = None) -> tuple[int, int]:
    """(rank, size) of this process (or of the one with ``env``); (0, 1) outside an MPI job."""
    env = os.environ if env is None else env
    for rank, size in _PAIRS:
        if rank in env and size in env:
            try:
                return int(env[rank]), int(env[size])
            except ValueError:
                continue
    return 0, 1


def in_job() -> bool:
    """Whether this process is one rank of several (the registry's entry gate for MPI)."""
    return world()[1] > 1


def local_rank() -> int:
    """Rank among the processes of this node (0 when unknown)."""
    for name in _LOCAL:
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0
