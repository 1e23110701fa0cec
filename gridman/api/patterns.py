"""Grid patterns as the table shows them: indices are grid indices, and no match is an error.

``gridman grid``, ``export``, ``plot`` and ``gridman.load`` select XPs with the same patterns
(core/names.py matches them). Two rules are added here, for what a user sees in the table:

- an integer pattern (``6``, ``!6``) is the XP's index in the grid (the table's first column),
  never a position within what other patterns left;
- patterns that leave nothing selected are a usage error (exit 2) naming the pattern that
  matched nothing, the keys of the grid and a close value (``lr=1`` when values are ``1.0``),
  instead of an empty plan that exits 0.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Optional

from ..core.names import part, select
from ..errors import UsageError

#: How many keys or values a hint lists before "...".
_SHOWN = 8


def is_index(pattern: str) -> bool:
    """Whether ``pattern`` (``6``, ``!6``, ``-1``) picks an XP by its index."""
    text = pattern[1:] if pattern.startswith("!") else pattern
    return bool(text) and text.lstrip("-").isdigit()


def select_xps(
    patterns: Sequence[str], items: Sequence[Sequence[tuple[str, Any]]], sigs: Sequence[str]
) -> list[int]:
    """Indices of the XPs matching every pattern; integer patterns are grid indices.

    Raises UsageError for an index outside the grid, and when the patterns select nothing.
    """
    named = [p for p in patterns if not is_index(p)]
    chosen = select(named, items, sigs)
    for pattern in patterns:
        if not is_index(pattern):
            continue
        negate = pattern.startswith("!")
        index = int(pattern[1:] if negate else pattern)
        check_index(index, len(sigs))
        chosen = [i for i in chosen if (i == index) != negate]
    if patterns and not chosen:
        raise no_match(patterns, items, sigs)
    return chosen


def check_index(index: int, size: int) -> None:
    """An XP index must be one of the grid's (the table's first column)."""
    if not 0 <= index < size:
        raise UsageError(
            f"XP index {index} is out of range",
            f"the grid's XPs are numbered 0 to {size - 1}" if size else "the grid is empty",
        )


def no_match(
    patterns: Sequence[str], items: Sequence[Sequence[tuple[str, Any]]], sigs: Sequence[str]
) -> UsageError:
    """The error for patterns that select nothing: the first pattern that matches no XP on
    its own, with the grid's keys and a close value; else the patterns together."""
    for pattern in patterns:
        if is_index(pattern):
            continue
        if not select([pattern], items, sigs):
            return UsageError(f"pattern {pattern!r} matches no XP", _hint(pattern, items))
    shown = " ".join(patterns)
    return UsageError(
        f"patterns {shown!r} together match no XP (each matches some)",
        f"drop one of them; keys of the grid: {_listing(_keys(items))}",
    )


def _keys(items: Sequence[Sequence[tuple[str, Any]]]) -> list[str]:
    return list(dict.fromkeys(k for pairs in items for k, _ in pairs))


def _values(items: Sequence[Sequence[tuple[str, Any]]], key: str) -> list[str]:
    """The texts of ``key``'s values, as patterns write them (``1.0``, ``true``)."""
    texts = [part(k, v, True) for pairs in items for k, v in pairs if k == key]
    return list(dict.fromkeys(t.partition("=")[2] or "true" for t in texts))


def _listing(texts: Sequence[str]) -> str:
    if not texts:
        return "none (every XP has the defaults)"
    more = f", ... ({len(texts) - _SHOWN} more)" if len(texts) > _SHOWN else ""
    return ", ".join(texts[:_SHOWN]) + more


def _hint(pattern: str, items: Sequence[Sequence[tuple[str, Any]]]) -> str:
    negate = pattern.startswith("!")
    text = pattern[1:] if negate else pattern
    keys = _keys(items)
    if negate:
        return f"every XP matches {text!r}; keys of the grid: {_listing(keys)}"
    key, eq, value = text.partition("=")
    if not eq:
        close = _close(text, keys + [v for k in keys for v in _values(items, k)])
        guess = f"; did you mean {close!r}?" if close else ""
        return f"keys of the grid: {_listing(keys)}{guess}"
    known = _known_key(key, keys)
    if known is None:
        close = _close(key, keys)
        guess = f"; did you mean {close}={value}?" if close else ""
        return f"no key {key!r}; keys of the grid: {_listing(keys)}{guess}"
    values = _values(items, known)
    close = _close_value(value, values)
    guess = f"; did you mean {key}={close}?" if close else ""
    return f"values of {known}: {_listing(values)}{guess}"


def _known_key(key: str, keys: Sequence[str]) -> Optional[str]:
    from ..core.names import short_key

    for candidate in keys:
        if key in (candidate, short_key(candidate)):
            return candidate
    return None


def _close(text: str, candidates: Sequence[str]) -> Optional[str]:
    found = difflib.get_close_matches(text, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return found[0] if found else None


def _close_value(value: str, values: Sequence[str]) -> Optional[str]:
    """The same number written as the grid does (``1.0`` for ``1``), or for a text the
    closest text (``0.3`` is no guess for ``0.9``: the values are listed anyway)."""
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is None:
        return _close(value, values)
    for candidate in values:  # a number: only the same number, written otherwise, is close
        try:
            if float(candidate) == number:
                return candidate
        except ValueError:
            continue
    return None
