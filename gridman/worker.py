"""Alias of :mod:`gridman.backends.worker` for command lines written by gridman 0.1.0.

Queue entries and Slurm scripts on users' disks run ``python -m gridman.worker``; this keeps them
working after the module moved.
"""

from __future__ import annotations

import sys

from .backends.worker import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
