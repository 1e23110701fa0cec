"""Values as short text: numbers for tables (``fmt_value``), sparklines, which way is better.

Leaf helpers shared by the grid table (table.py), the aggregated views (aggregate.py), the
exports (export.py) and the plots (plot.py); they import nothing of gridman's but the flattening
of nested metrics, so that every module of results/ can use them without import circles.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from ..core.config import flatten

SPARKS = "▁▂▃▄▅▆▇█"

LOWER_IS_BETTER_TAGS = ("loss", "err", "ppl", "perplexity", "wer", "cer", "mse", "mae", "nll")


def fmt_value(value: Any, spec: str = "") -> str:
    """A cell's text: ``spec`` when given (``.4f``), else about 4 significant digits for floats
    (scientific notation below 1e-3 and from 1e6), integers and the rest as ``str``."""
    if value is None:
        return ""
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        digits = max(0, 4 - len(str(int(abs(value)))))
        return f"{value:.{digits}f}"
    return str(value)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def lower_is_better(key: str) -> bool:
    """Whether a metric named ``key`` looks like a loss or an error (its last component)."""
    name = key.rsplit(".", 1)[-1].lower()
    return any(tag in name for tag in LOWER_IS_BETTER_TAGS)


def metric_history(history: Sequence[Any], key: str) -> list[Optional[float]]:
    """One flattened metric's value in each entry (None where absent or not a number)."""
    out: list[Optional[float]] = []
    for entry in history:
        value = flatten(entry).get(key) if isinstance(entry, Mapping) else None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        out.append(float(value) if ok and math.isfinite(value) else None)  # type: ignore[arg-type]
    return out


def sparkline(values: Sequence[Optional[float]], width: int = 24) -> str:
    """``▁▃▅█``: values scaled between their min and max; gaps as spaces; longer series are
    averaged into ``width`` buckets."""
    if len(values) > width:
        buckets = []
        for b in range(width):
            part = values[b * len(values) // width : (b + 1) * len(values) // width]
            nums = [v for v in part if v is not None]
            buckets.append(sum(nums) / len(nums) if nums else None)
        values = buckets
    nums = [v for v in values if v is not None]
    if not nums:
        return ""
    low, high = min(nums), max(nums)
    top = len(SPARKS) - 1
    chars = []
    for v in values:
        if v is None:
            chars.append(" ")
        elif high == low:
            chars.append(SPARKS[top // 2])
        else:
            chars.append(SPARKS[round((v - low) / (high - low) * top)])
    return "".join(chars)
