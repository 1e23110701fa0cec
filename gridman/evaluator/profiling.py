"""``@profile``: record when a run function ran and how much memory it took at its peak.

The decorated function's result gets ``timestamp_start`` and ``timestamp_end`` (seconds since
the epoch, taken right around the call) and, with ``memory=True`` (the default), ``memory``:
the peak of Python allocations during the call in bytes, as ``tracemalloc`` sees them (numpy
arrays included; memory that libraries allocate behind Python's back, such as GPU memory, is
not). A plain number becomes ``{"objective": number, "metadata": {...}}``.

Tracing allocations slows them down while the function runs, and ``tracemalloc`` is global to
the process: under the ``thread`` method, concurrent jobs share one peak (exact with
``serial``, ``process`` and ``mpi``). ``@profile(memory=False)`` only records the times.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_active = 0  # profiled calls in progress in this process (tracemalloc is global)
_owner = False  # whether gridman started tracemalloc (else someone else did: never stop it)


@overload
def profile(run_function: F) -> F: ...


@overload
def profile(run_function: None = None, *, memory: bool = True) -> Callable[[F], F]: ...


def profile(run_function: Optional[F] = None, *, memory: bool = True) -> Any:
    """Decorator (``@profile`` or ``@profile(memory=False)``) for a run function."""
    if run_function is None:
        return functools.partial(profile, memory=memory)

    @functools.wraps(run_function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if memory:
            _start_tracing()
        start = time.time()
        try:
            result = run_function(*args, **kwargs)
            end = time.time()
            extra: dict[str, Any] = {"timestamp_start": start, "timestamp_end": end}
            if memory:
                import tracemalloc

                extra["memory"] = tracemalloc.get_traced_memory()[1]
        finally:
            if memory:
                _stop_tracing()
        return _with_metadata(result, extra)

    return wrapper


def _start_tracing() -> None:
    import tracemalloc  # here: it imports pickle, and most scripts never profile

    global _active, _owner
    with _lock:
        if _active == 0:
            _owner = not tracemalloc.is_tracing()
            if _owner:
                tracemalloc.start()
        _active += 1
        tracemalloc.reset_peak()


def _stop_tracing() -> None:
    import tracemalloc

    global _active, _owner
    with _lock:
        _active -= 1
        if _active == 0 and _owner:
            tracemalloc.stop()
            _owner = False


def _with_metadata(result: Any, extra: Mapping[str, Any]) -> Any:
    if isinstance(result, Mapping) and "objective" in result:
        metadata = dict(result.get("metadata") or {})
        for key, value in extra.items():
            metadata.setdefault(key, value)
        return {**result, "metadata": metadata}
    return {"objective": result, "metadata": dict(extra)}
