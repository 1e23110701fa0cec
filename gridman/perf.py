"""Small helpers for the bulk phases of a big grid (10,000 XPs and more).

``paused_gc()``: Python's cyclic garbage collector runs a full collection, traversing every
live object, each time enough new containers have survived; building a herd, its names, its
table rows or decoding a row cache creates hundreds of thousands of them at once (none of them
in reference cycles), so a 10,000-XP table spent ~15% of its time in collections that freed
nothing. Inside the block no collection runs; the state from before (enabled or not) comes back
after it, and reference counting frees everything as usual meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block (restored after, even on errors)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
