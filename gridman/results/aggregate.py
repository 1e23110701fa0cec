"""Aggregation across XPs: group by every parameter but one (typically ``seed``), then give
each metric's mean, sample standard deviation (n - 1) and count.

Pure functions over plain data, shared by ``gridman export --aggregate`` and the grid table's
``--aggregate``. Only finite real numbers count (booleans, strings, None, NaN and infinities
are left out of a metric's statistics, and out of its count).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ..core.names import grid_names
from ..errors import UsageError
from .format import fmt_value, is_number


@dataclass(frozen=True)
class Stat:
    """One metric over one group: mean, sample std (None below 2 values) and count."""

    mean: Optional[float]
    std: Optional[float]
    count: int

    def text(self, fmt: Any = None, total: Optional[int] = None) -> str:
        """``0.912 ± 0.013`` (a constant shows alone); ``(k)`` appended when only k of
        ``total`` XPs have a value."""
        if self.mean is None:
            return ""
        show = fmt or _default_fmt
        if self.std == 0.0:  # every value the same: that value (an integer stays one)
            text = show(int(self.mean) if self.mean.is_integer() else self.mean)
        else:
            text = show(self.mean)
            if self.std is not None:
                text += f" ± {show(self.std)}"
        if total is not None and self.count != total:
            text += f" ({self.count})"
        return text


@dataclass(frozen=True)
class Group:
    """XPs that differ only in the aggregated parameter."""

    params: tuple[tuple[str, Any], ...]  # the group's values of every other parameter
    name: str  # the parameters that vary across groups, as in XP names
    members: tuple[int, ...]  # indices of the XPs in the input
    over: tuple[Any, ...]  # the aggregated parameter's value of each member
    stats: Mapping[str, Stat]

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Aggregation:
    """Groups in first-seen order, and the metric keys in first-seen order."""

    over: str
    param_keys: tuple[str, ...]  # every parameter but ``over``
    metric_keys: tuple[str, ...]
    groups: tuple[Group, ...]
    base_name: str = ""


def stat_of(values: Sequence[Any]) -> Stat:
    numbers = [float(v) for v in values if is_number(v)]
    if not numbers:
        return Stat(None, None, 0)
    std = statistics.stdev(numbers) if len(numbers) > 1 else None
    return Stat(statistics.fmean(numbers), std, len(numbers))


def aggregate(
    params: Sequence[Sequence[tuple[str, Any]]],
    metrics: Sequence[Mapping[str, Any]],
    over: str,
    metric_keys: Optional[Sequence[str]] = None,
) -> Aggregation:
    """Group XP ``i`` (``params[i]``, flat ``metrics[i]``) by every parameter except ``over``.

    Raises UsageError when no XP has the parameter ``over``.
    """
    keys = list(dict.fromkeys(k for pairs in params for k, _ in pairs))
    if over not in keys:
        shown = ", ".join(keys) or "none (every XP has the defaults)"
        raise UsageError(
            f"cannot aggregate over {over!r}: no XP sets that parameter",
            f"parameters that vary: {shown}",
        )
    others = tuple(k for k in keys if k != over)
    if metric_keys is None:
        metric_keys = list(dict.fromkeys(k for m in metrics for k in m))
    buckets: dict[str, list[int]] = {}
    group_params: dict[str, tuple[tuple[str, Any], ...]] = {}
    for index, pairs in enumerate(params):
        values = dict(pairs)
        kept = tuple((k, values[k]) for k in others if k in values)
        ident = json.dumps([[k, v] for k, v in kept], sort_keys=True, default=str)
        buckets.setdefault(ident, []).append(index)
        group_params.setdefault(ident, kept)
    base, names = grid_names([group_params[i] for i in buckets])
    groups = []
    for (ident, members), name in zip(buckets.items(), names):
        stats = {key: stat_of([metrics[i].get(key) for i in members]) for key in metric_keys}
        over_values = tuple(dict(params[i]).get(over) for i in members)
        groups.append(Group(group_params[ident], name, tuple(members), over_values, stats))
    numeric = tuple(k for k in metric_keys if any(g.stats[k].count for g in groups))
    return Aggregation(over, others, numeric, tuple(groups), base)


def _default_fmt(value: float) -> str:
    return fmt_value(value)
