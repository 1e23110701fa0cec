"""Small helpers for the bulk phases of a big grid (10,000 XPs and more).

``paused_gc()``: Python's cyclic garbage collector runs a full collection, traversing every
live object, each time enough new containers have survived; building a herd, its names, its
table rows or decoding a row cache creates hundreds of thousands of them at once (none of them
in reference cycles), so a 10,000-XP table spent ~15% of its time in collections that freed
nothing. Inside the block no collection runs; the state from before (enabled or not) comes back
after it, and reference counting frees everything as usual meanwhile. Within ``freezing()``
(the CLI, around one command) the objects left when such a block ends are frozen as well.
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
    """No cyclic garbage collection inside the block (restored after, even on errors).

    Inside :func:`freezing`, what exists when the block ends is moved out of the collector's
    reach (``gc.freeze``): otherwise the young objects the block made are traversed again by
    the next collections after it, as they age through the generations."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _freezing:
            gc.freeze()
        if enabled:
            gc.enable()


_freezing = False


@contextlib.contextmanager
def freezing() -> Iterator[None]:
    """For one command of the CLI (a short process that owns the heap, unlike a library
    call): the bulk phases' objects are frozen as each ends (~5% of a 10,000-XP command).
    Everything is unfrozen when the block ends, or at :func:`thaw`."""
    global _freezing
    outer = _freezing
    _freezing = True
    try:
        yield
    finally:
        _freezing = outer
        if not outer:
            gc.unfreeze()


def thaw() -> None:
    """Stop freezing and give the frozen objects back to the collector (before a loop that
    runs for hours, such as the monitor, whose garbage must stay collectable)."""
    global _freezing
    _freezing = False
    gc.unfreeze()


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
