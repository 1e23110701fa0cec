"""Return conventions: turn whatever the run function returned (or raised) into an Outcome.

Accepted return values (DeepHyper's conventions):

- a number: the objective (``42.0``);
- a string starting with ``F``: a failure, the string being its reason (``"F_out_of_memory"``);
- a dict with ``objective`` (any of these forms) and optional ``metadata`` (a dict); other keys
  join the metadata;
- a tuple (or list) of numbers: several objectives, shown as ``objective_0``, ``objective_1``...

A run function that raises gives a failed job whose objective is ``"F_<ExceptionName>"``, with
``error`` and ``traceback`` in its metadata. Anything else (``None``, another string, an
object) is a failed job ``"F_InvalidReturn"`` whose ``error`` says what came back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Optional

from .job import Objective, Outcome, Task

INVALID = "F_InvalidReturn"


class InvalidReturn(ValueError):
    """The run function returned something that is not an objective."""


def plain(value: Any) -> Any:
    """``value`` as plain JSON-able data: numpy scalars and arrays become Python numbers and
    lists, tuples lists, paths and other objects their ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        try:
            return plain(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return plain(tolist())
        except (TypeError, ValueError):
            pass
    return str(value)


def is_failure(objective: Any) -> bool:
    """Whether an objective marks a failed evaluation (a string starting with ``F``)."""
    if isinstance(objective, str):
        return objective.startswith("F")
    if isinstance(objective, tuple):
        return any(is_failure(o) for o in objective)
    return False


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return value
    converted = plain(value)  # numpy scalars
    if isinstance(converted, (int, float)) and not isinstance(converted, bool):
        return converted
    raise InvalidReturn(f"the run function returned {_short(value)}, not a number")


def parse_objective(value: Any) -> Objective:
    """A number, a tuple of numbers (or ``F`` strings), or a failure string; else raises."""
    if isinstance(value, str):
        if value.startswith("F"):
            return value
        raise InvalidReturn(
            f"the run function returned the string {value!r}: only strings starting with 'F' "
            "(a failure and its reason) are objectives"
        )
    if isinstance(value, (tuple, list)):
        if not value:
            raise InvalidReturn("the run function returned an empty tuple")
        return tuple(v if isinstance(v, str) and v.startswith("F") else _number(v) for v in value)
    if value is None:
        raise InvalidReturn("the run function returned None, not an objective")
    return _number(value)


def parse_return(value: Any) -> tuple[Objective, dict[str, Any]]:
    """(objective, metadata) of a run function's return value; raises InvalidReturn."""
    if isinstance(value, Mapping):
        if "objective" not in value:
            raise InvalidReturn(
                f"the run function returned a dict without 'objective' (keys: {sorted(value)})"
            )
        metadata = value.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise InvalidReturn("'metadata' must be a dict")
        extra = {str(k): v for k, v in value.items() if k not in ("objective", "metadata")}
        return parse_objective(value["objective"]), {**extra, **metadata}
    return parse_objective(value), {}


def call(run_function: Any, task: Task, kwargs: Optional[Mapping[str, Any]]) -> Outcome:
    """Run the function on one task and return its Outcome; never raises an Exception.

    ``KeyboardInterrupt`` goes through (Ctrl-C must stop a serial evaluation); ``SystemExit``
    from the run function is a failure like any exception.
    """
    start = time.time()
    try:
        value = run_function(task.running_job(), **(kwargs or {}))
        end = time.time()
        objective, metadata = parse_return(value)
    except InvalidReturn as exc:
        end = time.time()
        return _finish(task, INVALID, True, {"error": str(exc)}, start, end)
    except (Exception, SystemExit) as exc:
        end = time.time()
        import traceback  # only on failures: it costs 1.5 ms to import

        failure = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        return _finish(task, f"F_{type(exc).__name__}", True, failure, start, end)
    return _finish(task, objective, is_failure(objective), metadata, start, end)


def _finish(
    task: Task,
    objective: Objective,
    failed: bool,
    metadata: Mapping[str, Any],
    start: float,
    end: float,
) -> Outcome:
    meta: dict[str, Any] = {
        "timestamp_submit": task.submitted,
        "timestamp_start": start,
        "timestamp_end": end,
    }
    meta.update(metadata)  # @profile's own timestamps (tighter) win
    return Outcome(id=task.id, objective=objective, failed=failed, metadata=meta)


def failure(task_id: int, exc: BaseException, what: str = "") -> Outcome:
    """The Outcome of a task that could not run or report (a broken pool, pickling...)."""
    name = type(exc).__name__
    error = f"{what}{name}: {exc}" if what else f"{name}: {exc}"
    return Outcome(id=task_id, objective=f"F_{name}", failed=True, metadata={"error": error})


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"
