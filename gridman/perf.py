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
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: Value types memoised by :func:`memoised` (hashable, and equal only to the same value).
_PLAIN = frozenset({str, int, float, bool, type(None)})


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


def memoised(
    memo: dict[tuple[str, type, Any], T], key: str, value: Any, make: Callable[[str, Any], T]
) -> T:
    """``make(key, value)``, remembered in ``memo`` for plain values (a grid repeats them).

    Keyed by key, value type and value, so that ``1``, ``1.0`` and ``True`` stay apart; floats
    by ``repr``: ``-0.0 == 0.0`` (same hash) but they are different arguments and names.
    """
    kind = type(value)
    if kind not in _PLAIN:
        return make(key, value)
    memo_key = (key, kind, repr(value) if kind is float else value)
    found = memo.get(memo_key)
    if found is None:
        found = memo[memo_key] = make(key, value)
    return found
