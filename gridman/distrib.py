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

import itertools
import os
import re
import sys
import zlib
from collections.abc import Mapping
from typing import Any, Optional

from .errors import UsageError

__all__ = [
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

#: The variables torch's ``env://`` initialisation (and torchrun) use.
TORCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_ADDR = "127.0.0.1"
DEFAULT_PORT = 29500  # torch's own default
# Ports are drawn below Linux's ephemeral range (32768-60999), where outgoing connections
# could already hold them; consecutive job ids get different ports.
_PORT_BASE, _PORT_SPAN = 20000, 12768


def derive_env(env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The torch variables for a process with environment ``env`` (default: this one's).

    Pure: reads ``env`` only. A launch that set ``RANK`` and ``WORLD_SIZE`` keeps them; a
    Slurm task (``SLURM_PROCID`` and ``SLURM_NTASKS``) gets them from Slurm; anything else is
    one process. ``MASTER_ADDR``/``MASTER_PORT`` already set are kept (a user's override).
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        derived = _from_launcher(env)
    elif "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        derived = _from_slurm(env)
    else:
        derived = dict(zip(TORCH_KEYS, ("0", "1", "0", "1", DEFAULT_ADDR, str(DEFAULT_PORT))))
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if env.get(key):
            derived[key] = env[key]
    return derived


def _from_launcher(env: Mapping[str, str]) -> dict[str, str]:
    rank_ = _int(env, "RANK")
    size = _int(env, "WORLD_SIZE")
    local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank_  # one node, as Dora
    local_size = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else size
    return _torch(rank_, size, local, local_size, DEFAULT_ADDR, DEFAULT_PORT)


def _from_slurm(env: Mapping[str, str]) -> dict[str, str]:
    # Inside an srun step the STEP_ variables describe the ranks; the job's are the fallback.
    size_key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    rank_, size = _int(env, "SLURM_PROCID"), _int(env, size_key)
    local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    hosts = expand_nodelist(nodelist)
    job_id = env.get("SLURM_JOB_ID", "")
    port = master_port(job_id) if job_id else DEFAULT_PORT
    return _torch(rank_, size, local, _tasks_on_this_node(env, size), hosts[0] if hosts
                  else DEFAULT_ADDR, port)  # fmt: skip


def _tasks_on_this_node(env: Mapping[str, str], size: int) -> int:
    """Tasks on this task's node: the node's entry in ``SLURM_STEP_TASKS_PER_NODE`` (the step's
    own), else ``SLURM_NTASKS_PER_NODE`` (set by ``--ntasks-per-node``), else the job's
    ``SLURM_TASKS_PER_NODE``. ``2(x3),1``: 2 on each of the first three nodes, 1 on the fourth."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE")
    if not spec and env.get("SLURM_NTASKS_PER_NODE"):
        return _int(env, "SLURM_NTASKS_PER_NODE")
    spec = spec or env.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return size
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise UsageError(f"cannot read SLURM_TASKS_PER_NODE={spec!r}")
        counts.extend([int(match[1])] * int(match[2] or 1))
    node = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
    return counts[node] if node < len(counts) else counts[-1]


def _torch(rank_: int, size: int, local: int, local_size: int, addr: str, port: int
           ) -> dict[str, str]:  # fmt: skip
    if not 0 <= rank_ < size:
        raise UsageError(f"rank {rank_} is outside a world of {size} processes",
                         "check the RANK/WORLD_SIZE (or Slurm task) variables")  # fmt: skip
    values = (rank_, size, local, local_size, addr, port)
    return {key: str(value) for key, value in zip(TORCH_KEYS, values)}


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise UsageError(f"{key}={env[key]!r} is not an integer") from None


def master_port(job_id: str) -> int:
    """A port every rank of job ``job_id`` computes alike (numeric ids map one-to-one over
    ``_PORT_SPAN`` consecutive jobs, so two jobs sharing a node rarely collide)."""
    seed = int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())
    return _PORT_BASE + seed % _PORT_SPAN


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compact host list expanded: ``node[01-03,7],gpu1`` -> node01 node02 node03
    node07 gpu1 (zero padding kept; several bracket groups in one name multiply)."""
    hosts: list[str] = []
    for name in _split_top_level(nodelist):
        pieces = re.split(r"\[([^\]]*)\]", name)  # text, ranges, text, ranges, ..., text
        choices: list[list[str]] = []
        for index, piece in enumerate(pieces):
            if index % 2 == 0 and ("[" in piece or "]" in piece):  # an unclosed bracket
                raise UsageError(f"cannot read the Slurm node list {nodelist!r}")
            choices.append(_expand_ranges(piece, nodelist) if index % 2 else [piece])
        hosts.extend("".join(parts) for parts in itertools.product(*choices))
    return hosts


def _split_top_level(nodelist: str) -> list[str]:
    names, depth, start = [], 0, 0
    for index, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            names.append(nodelist[start:index])
            start = index + 1
    names.append(nodelist[start:])
    return [n.strip() for n in names if n.strip()]


def _expand_ranges(ranges: str, nodelist: str) -> list[str]:
    values: list[str] = []
    for item in ranges.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if match is None:
            raise UsageError(f"cannot read the Slurm node list {nodelist!r}")
        low, high = match[1], match[2] or match[1]
        width = len(low)  # node[01-10]: the padding of the range's start
        values.extend(str(n).zfill(width) for n in range(int(low), int(high) + 1))
    return values


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
