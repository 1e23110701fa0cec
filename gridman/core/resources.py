"""Resources an XP asks for (``launcher.slurm_(...)``), shared by every backend that can use them.

Frozen, so launchers share one object instead of deep-copying it on every ``bind`` (a hotspot
in Dora). Keys are Dora's, so Dora grid files run unchanged; an unknown key is an error that
lists the valid ones with a close match.

:func:`slurm_request` turns them into what one Slurm job asks for, as Dora did: at most
``max_gpus_per_node`` GPUs on a node, more GPUs spread over whole nodes, one task per GPU
unless ``one_task_per_node``, CPUs and memory per GPU scaled to the node.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Optional

from ..errors import UsageError


@dataclass(frozen=True)
class Resources:
    """What one XP needs. ``gpus`` defaults to 0: no site-specific defaults."""

    gpus: int = 0
    mem_per_gpu: Optional[float] = None  # GB
    mem: Optional[str] = None  # raw sbatch --mem (e.g. "16G"), wins over mem_per_gpu
    cpus_per_gpu: Optional[int] = None
    cpus_per_task: Optional[int] = None
    time: Optional[int] = None  # minutes
    partition: Optional[str] = None
    comment: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    qos: Optional[str] = None
    account: Optional[str] = None
    setup: tuple[str, ...] = ()  # shell lines run before the XP (module load, source venv)
    max_num_timeout: int = 20
    one_task_per_node: bool = False
    array_parallelism: int = 256
    nodelist: Optional[str] = None
    srun_args: tuple[str, ...] = ()
    sbatch_args: tuple[tuple[str, str], ...] = field(default=())  # raw escape hatch

    def with_changes(self, changes: Mapping[str, Any]) -> Resources:
        """A copy with ``changes``; unknown keys raise UsageError with the valid ones."""
        clean = {key: _normalise(key, value) for key, value in changes.items()}
        for key in clean:
            if key not in FIELD_NAMES:
                close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UsageError(
                    f"unknown resource {key!r}", f"{hint}valid: {', '.join(FIELD_NAMES)}"
                )
        return replace(self, **clean) if clean else self

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Resources:
        return cls().with_changes({k: v for k, v in data.items() if k in FIELD_NAMES})


def _normalise(key: str, value: Any) -> Any:
    if key in ("setup", "srun_args"):
        if isinstance(value, str):
            return (value,)
        return tuple(str(v) for v in value or ())
    if key == "sbatch_args":
        items = value.items() if isinstance(value, Mapping) else value or ()
        return tuple((str(k), str(v)) for k, v in items)
    if key == "gpus":
        if value is None:
            return 0
        if not isinstance(value, int) or value < 0:
            raise UsageError(f"gpus must be a non-negative integer, got {value!r}")
    return value


FIELD_NAMES = tuple(f.name for f in fields(Resources))


#: GPUs on one node unless gridman.yaml says otherwise (``slurm: {max_gpus_per_node: N}``).
DEFAULT_MAX_GPUS_PER_NODE = 8


@dataclass(frozen=True)
class SlurmRequest:
    """What one XP's job asks Slurm for, under sbatch's own option names.

    ``mem`` is per node, as a Slurm size (``80G``, ``7680M``); ``cpus_per_task`` and ``mem`` are
    None when the XP asked nothing (the cluster's default applies: no site defaults here).
    """

    nodes: int = 1
    ntasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None

    @property
    def tasks(self) -> int:
        """Processes (ranks) of the job: its world size."""
        return self.nodes * self.ntasks_per_node

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def slurm_request(
    res: Resources, max_gpus_per_node: int = DEFAULT_MAX_GPUS_PER_NODE
) -> SlurmRequest:
    """The nodes, tasks, GPUs, CPUs and memory one job asks for ``res`` (Dora's mapping).

    Up to ``max_gpus_per_node`` GPUs fit on one node; more must fill whole nodes. Each task is
    one rank: one per GPU, or one per node seeing all its GPUs (``one_task_per_node``). An XP
    without GPUs scales ``cpus_per_gpu`` and ``mem_per_gpu`` as if it had one, as Dora does.
    """
    if isinstance(max_gpus_per_node, bool) or not isinstance(max_gpus_per_node, int) \
            or max_gpus_per_node < 1:  # fmt: skip
        raise UsageError(
            f"max_gpus_per_node must be a positive integer, got {max_gpus_per_node!r}",
            "set it in gridman.yaml: slurm: {max_gpus_per_node: 8}",
        )
    gpus = res.gpus
    if gpus <= max_gpus_per_node:
        nodes, per_node = 1, gpus
    elif gpus % max_gpus_per_node == 0:
        nodes, per_node = gpus // max_gpus_per_node, max_gpus_per_node
    else:
        lower = gpus // max_gpus_per_node * max_gpus_per_node
        raise UsageError(
            f"gpus={gpus} cannot be spread over whole nodes of {max_gpus_per_node} GPUs",
            f"ask for at most {max_gpus_per_node} GPUs or a multiple of {max_gpus_per_node} "
            f"(e.g. {lower} or {lower + max_gpus_per_node}), or set slurm: "
            "{max_gpus_per_node: N} in gridman.yaml if this cluster's nodes hold more",
        )
    scale = max(per_node, 1)  # CPUs and memory of a GPU-less XP: as for one GPU
    tasks = 1 if res.one_task_per_node else scale
    cpus = res.cpus_per_task
    if cpus is None and res.cpus_per_gpu:
        cpus = res.cpus_per_gpu * (scale if res.one_task_per_node else 1)
    mem = str(res.mem) if res.mem else None  # the raw --mem wins, as given
    if mem is None and res.mem_per_gpu:
        mem = slurm_size_gb(res.mem_per_gpu * scale)
    return SlurmRequest(nodes, tasks, per_node, cpus, mem)


def slurm_size_gb(gigabytes: float) -> str:
    """``gigabytes`` (Slurm's G: 1024 M) as a size sbatch takes: ``80G``, else whole ``M``."""
    megabytes = round(gigabytes * 1024)
    if megabytes % 1024 == 0:
        return f"{megabytes // 1024}G"
    return f"{megabytes}M"
