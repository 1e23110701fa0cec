"""XP names and pattern filters.

A name shows the parameters that vary across the grid (``lr=0.01 seed=2``); the parameters all
XPs share form the base name shown once above the table. Patterns select XPs: ``lr=0.1``
matches the parameter exactly (never ``lr=0.15``), globs are allowed (``lr=0.1*``), a pattern
without ``=`` matches a key, a value part or a signature prefix, ``!pat`` negates, and an
integer selects by index.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageError
from .perf import memoised, paused_gc
from .signature import Delta


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)  # what json.dumps writes for numbers, without its overhead
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # a type=Path argument: its text, as on a command line
    return json.dumps(value, separators=(",", ":"), default=str)


def short_key(key: str) -> str:
    """``optim.lr`` -> ``opt.lr``: nested keys shortened to 3 characters per parent."""
    if "." not in key:
        return key
    pieces = key.split(".")
    return ".".join([p[:3] for p in pieces[:-1]] + [pieces[-1]])


def part(key: str, value: Any, full: bool = False) -> str:
    """``key=value`` as shown in names (True -> bare key, nested keys shortened unless full)."""
    shown = key if full else short_key(key)
    return shown if value is True else f"{shown}={_text(value)}"


def parts_of(delta: Delta) -> list[str]:
    return [part(k, v) for k, v in delta]


def grid_items(
    deltas: Sequence[Delta], params: Sequence[Mapping[str, Any]] = ()
) -> list[list[tuple[str, Any]]]:
    """For each XP, the (key, value) pairs its name is made of.

    A key set by any XP of the grid is given for every XP, with its value (default included,
    so the XP at the default learning rate still reads ``lr=0.1``) when ``params`` are known.
    Keys come in the parser's (or config's) order, whichever XP leaves them at their default:
    the order of a name never depends on which values are defaults.
    """
    with paused_gc():  # two containers per XP, none in cycles
        if params and len(params) == len(deltas):
            keys = _param_order({k for d in deltas for k, _ in d}, params)
            return [
                [(k, p[k]) for k in keys if k in p] if p else list(d)
                for p, d in zip(params, deltas)
            ]
        return [list(d) for d in deltas]


def _param_order(varied: set[str], params: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``varied`` keys in the order the parameters come in (the first XPs usually hold
    them all: the loop ends as soon as every key is placed)."""
    order: list[str] = []
    missing = set(varied)
    for values in params:
        if not missing:
            break
        for key in values or ():
            if key in missing:
                order.append(key)
                missing.discard(key)
    return order + sorted(missing)


def grid_names(items: Sequence[Sequence[tuple[str, Any]]]) -> tuple[str, list[str]]:
    """(base name, one name per XP) where names only show what varies across the grid."""
    if not items:
        return "", []
    with paused_gc():  # a few strings and lists per XP, none in cycles
        memo: dict[tuple[str, type, Any], str] = {}  # a grid repeats its values
        all_parts = [[memoised(memo, k, v, part) for k, v in pairs] for pairs in items]
        common = set(all_parts[0]).intersection(*all_parts[1:]) if len(all_parts) > 1 else set()
        base = [p for p in all_parts[0] if p in common]
        names = [" ".join([p for p in ps if p not in common]) or "(base)" for ps in all_parts]
    return " ".join(base), names


def _match_one(pattern: str, parts: list[str], sig: str) -> bool:
    if "=" in pattern:
        return any(fnmatch.fnmatchcase(p, pattern) for p in parts)
    if sig.startswith(pattern):
        return True
    for p in parts:
        key, _, value = p.partition("=")
        if fnmatch.fnmatchcase(key, pattern) or (value and fnmatch.fnmatchcase(value, pattern)):
            return True
    return False


def select(
    patterns: Sequence[str], items: Sequence[Sequence[tuple[str, Any]]], sigs: Sequence[str]
) -> list[int]:
    """Indices of the XPs matching every pattern (an integer pattern picks by index).

    Patterns see each XP's name parts in both the short form shown (``mod.depth=4``) and the
    full key (``model.depth=4``).
    """
    chosen = list(range(len(sigs)))
    if not patterns:
        return chosen
    all_parts = [
        list(dict.fromkeys([part(k, v) for k, v in pairs] + [part(k, v, True) for k, v in pairs]))
        for pairs in items
    ]
    for pattern in patterns:
        negate = pattern.startswith("!")
        text = pattern[1:] if negate else pattern
        if not text:
            raise UsageError(f"empty pattern {pattern!r}")
        if text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < len(chosen):
                raise UsageError(
                    f"index {index} is out of range", f"the grid has {len(chosen)} XPs here"
                )
            keep = {chosen[index]}
            chosen = [i for i in chosen if (i in keep) != negate]
            continue
        chosen = [i for i in chosen if _match_one(text, all_parts[i], sigs[i]) != negate]
    return chosen
