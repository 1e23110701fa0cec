"""Resources an XP asks for (``launcher.slurm_(...)``), shared by every backend that can use them.

Frozen, so launchers share one object instead of deep-copying it on every ``bind`` (a hotspot
in Dora). Keys are Dora's, so Dora grid files run unchanged; an unknown key is an error that
lists the valid ones with a close match.
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
