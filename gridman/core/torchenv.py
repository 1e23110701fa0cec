"""torch's distributed environment derived from a launcher's or Slurm's variables (pure).

The part of :mod:`gridman.distrib` that reads only an environment mapping, here in core so that
the backends (which give every rank its variables) and the Link (which writes only on rank 0)
use the same rules. See :mod:`gridman.distrib` for what each rank gets.
"""

from __future__ import annotations

import itertools
import os
import re
import zlib
from collections.abc import Mapping
from typing import Optional

from ..errors import UsageError

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


def env_rank(env: Optional[Mapping[str, str]] = None) -> int:
    """This process's rank from ``env`` (default: this one's); 0 when it cannot be read, so
    that a malformed variable never silences the one process of an XP."""
    try:
        return int(derive_env(env)["RANK"])
    except UsageError:
        return 0
