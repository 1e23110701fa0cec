"""Where this process stands in a distributed XP: rank, world size, and torch's setup.

Every rank of an XP gets the environment ``torch.distributed`` reads (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). A launcher that sets
it (the local pool, ``torchrun``) wins; inside a Slurm step it is derived from the task's own
Slurm variables, so that all ranks agree on the master's address (the first host of the step's
node list) and port (a function of the job id) without talking to each other first.

Dora's ``dora.distrib`` calls map onto these names: ``rank()``, ``world_size()``,
``is_master()``, ``init()`` (and ``set_distrib_env()`` onto :func:`set_env`). torch is imported
only by :func:`init`, and only when the XP has several ranks: gridman never needs it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from .core.torchenv import (
    DEFAULT_ADDR,
    DEFAULT_PORT,
    TORCH_KEYS,
    derive_env,
    expand_nodelist,
    master_port,
)
from .errors import UsageError

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_PORT",
    "TORCH_KEYS",
    "derive_env",
    "expand_nodelist",
    "init",
    "is_master",
    "local_rank",
    "local_world_size",
    "master_port",
    "rank",
    "set_env",
    "world_size",
]


# -- this process ---------------------------------------------------------------------------
def _torch_group() -> Any:
    """torch.distributed when torch is already imported and its group is up, else None."""
    torch = sys.modules.get("torch")  # never imported here: only looked at
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def rank() -> int:
    """This process's rank (0 outside a distributed XP)."""
    dist = _torch_group()
    return int(dist.get_rank()) if dist is not None else int(derive_env()["RANK"])


def world_size() -> int:
    """How many processes the XP runs as (1 outside a distributed XP)."""
    dist = _torch_group()
    return int(dist.get_world_size()) if dist is not None else int(derive_env()["WORLD_SIZE"])


def local_rank() -> int:
    """This process's rank among those on its node: the GPU index it should use."""
    return int(derive_env()["LOCAL_RANK"])


def local_world_size() -> int:
    """How many of the XP's processes run on this node."""
    return int(derive_env()["LOCAL_WORLD_SIZE"])


def is_master() -> bool:
    """True on rank 0, the one that writes checkpoints and logs once for the XP."""
    return rank() == 0


def set_env() -> dict[str, str]:
    """Put the torch variables into ``os.environ`` (for a framework that initialises torch
    itself, e.g. Lightning); returns them."""
    derived = derive_env()
    os.environ.update(derived)
    return derived


def init(backend: Optional[str] = None, force: bool = False, **kwargs: Any) -> bool:
    """Start ``torch.distributed`` for this rank; False when there is nothing to start.

    A single process skips it unless ``force`` (Dora's ``DORA_FORCE_DISTRIB``, also read).
    ``backend`` defaults to nccl when CUDA is available, else gloo; with CUDA each rank takes
    the GPU of its local rank. ``kwargs`` go to ``init_process_group`` (e.g. ``timeout``).
    """
    size = int(derive_env()["WORLD_SIZE"])
    if size == 1 and not (force or os.environ.get("DORA_FORCE_DISTRIB")):
        return False  # nothing to start, and the environment is left as it was
    try:
        import torch
        import torch.distributed as dist
    except ImportError:
        raise UsageError(
            f"gridman.distrib.init() needs torch for a world of {size} processes",
            "install torch in the XP's environment",
        ) from None
    if dist.is_initialized():
        return False
    derived = set_env()  # env:// reads MASTER_ADDR and MASTER_PORT from os.environ
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(derived["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"),
                            init_method="env://", world_size=size,
                            rank=int(derived["RANK"]), **kwargs)  # fmt: skip
    return True
