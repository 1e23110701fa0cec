"""``gridman info --sig A --diff B``: the parameters and final metrics two XPs differ in.

Parameters come from each XP's stored delta (a parameter missing from one delta is at its
default there); final metrics are the last value of every metric (as in the grid table and
the default export), stage metrics (``test.*``) included, and the number of epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from .format import is_number
from .records import Record, Results


@dataclass(frozen=True)
class Change:
    """One key whose values differ; ``in_a``/``in_b`` say whether each XP has it at all."""

    key: str
    a: Any
    b: Any
    in_a: bool
    in_b: bool

    @property
    def delta(self) -> Optional[float]:
        """``b - a`` when both are numbers."""
        if self.in_a and self.in_b and is_number(self.a) and is_number(self.b):
            return float(self.b) - float(self.a)
        return None

    def to_json(self) -> dict[str, Any]:
        a = self.a if self.in_a else None
        b = self.b if self.in_b else None
        return {"key": self.key, "a": a, "b": b, "in_a": self.in_a, "in_b": self.in_b}


@dataclass(frozen=True)
class XPDiff:
    a: Record
    b: Record
    params: tuple[Change, ...]
    metrics: tuple[Change, ...]

    def to_json(self) -> dict[str, Any]:
        def side(record: Record) -> dict[str, Any]:
            return {"sig": record.sig, "state": record.state, "folder": record.folder,
                    "epoch": record.epoch}  # fmt: skip

        return {
            "a": side(self.a), "b": side(self.b),
            "params": [c.to_json() for c in self.params],
            "metrics": [c.to_json() for c in self.metrics],
        }  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if is_number(a) and is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def changes(a: dict[str, Any], b: dict[str, Any]) -> tuple[Change, ...]:
    """Keys of ``a`` or ``b`` (in first-seen order) whose values differ or that one lacks."""
    out = []
    for key in dict.fromkeys([*a, *b]):
        in_a, in_b = key in a, key in b
        if in_a and in_b and _same(a[key], b[key]):
            continue
        out.append(Change(key, a.get(key), b.get(key), in_a, in_b))
    return tuple(out)


def diff_records(results: Results) -> XPDiff:
    """Compare the first and the last record of ``results`` (api/load.py's ``diff_xps`` reads
    the two XPs by signature)."""
    first = results.records[0]
    second = results.records[-1]  # the same record when both sigs are one: no difference
    metrics_a = {"epoch": first.epoch, **first.metrics}
    metrics_b = {"epoch": second.epoch, **second.metrics}
    return XPDiff(first, second, changes(dict(first.params), dict(second.params)),
                  changes(metrics_a, metrics_b))  # fmt: skip
