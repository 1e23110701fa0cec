"""The stable name of the built-in stage main, ``gridman.stagerun:main`` (see backends/stagerun.py).

Stage records on users' disks name this path, and core.stages names it instead of a backend module.
"""

from __future__ import annotations

from .backends.stagerun import StageMain, main

__all__ = ["StageMain", "main"]
