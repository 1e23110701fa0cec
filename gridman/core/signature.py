"""Signatures: a pure module turning a delta into the 8-hex-character key of an XP.

The delta is the list of ``(key, value)`` pairs whose parsed value differs from the default,
minus the keys matching an ``exclude`` glob. The signature is the first 8 hex characters of the
sha1 of its canonical JSON: ``json.dumps`` of the pairs sorted by key, as ``[key, value]`` lists,
with the default separators. This is byte-compatible with Dora's algorithm for scalar and list
values, so a project moving from Dora keeps its signatures. Dict values are serialised with
sorted keys (Dora keeps insertion order) so that their order never matters.

Golden tests (tests/test_signature.py) pin argv -> sig: never change this module's output.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

SIG_LENGTH = 8
_SIG_RE = re.compile(r"^[0-9a-f]{8}$")

Delta = list[tuple[str, Any]]


def jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON data (paths and enums become strings, tuples lists)."""
    if type(value) in _PLAIN or value is None:  # the usual case, without isinstance
        return value
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    raise TypeError(
        f"value {value!r} of type {type(value).__name__} cannot be part of a signature; "
        "use str, int, float, bool, None, lists, dicts or paths"
    )


def is_excluded(key: str, exclude: Iterable[str]) -> bool:
    """True when ``key`` matches one of the ``exclude`` globs (fnmatch, case-sensitive)."""
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in exclude)


def _same(a: Any, b: Any) -> bool:
    """Whether a parsed value equals its default (so it stays out of the delta)."""
    kind = type(a)
    if kind is type(b) and kind in _PLAIN:  # the usual case, decided without isinstance
        return a == b or (kind is float and a != a and b != b)
    # NaN defaults must compare equal to a NaN value, otherwise they would enter every delta.
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    # True == 1 in Python, but a flag set to True is not the integer default 1.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        # nargs values parse to lists while defaults are often tuples: compare as JSON data
        return _json_equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # objects with exotic __eq__ (numpy arrays): compare their JSON form
        return _json_equal(a, b)


_PLAIN = frozenset({str, int, float, bool})


def _json_equal(a: Any, b: Any) -> bool:
    try:
        return json.dumps(jsonable(a), sort_keys=True) == json.dumps(jsonable(b), sort_keys=True)
    except TypeError:
        return False


def compute_delta(
    values: Mapping[str, Any], defaults: Mapping[str, Any], exclude: Sequence[str] = ()
) -> Delta:
    """Pairs of ``values`` that differ from ``defaults`` and match no ``exclude`` glob, by key
    (sorted, values already :func:`jsonable`: see :func:`canonical_of_delta`)."""
    delta: Delta = []
    patterns = tuple(exclude)
    for key in sorted(values):
        value = values[key]
        if key in defaults and _same(value, defaults[key]):
            continue
        if patterns and _excluded(key, patterns):
            continue
        delta.append((key, jsonable(value)))
    return delta


@functools.lru_cache(maxsize=4096)
def _excluded(key: str, patterns: tuple[str, ...]) -> bool:
    return is_excluded(key, patterns)


def canonical_json(delta: Iterable[tuple[str, Any]]) -> str:
    """The canonical text hashed into a signature.

    ``sort_keys`` only affects dict values, so scalar and list deltas keep Dora's exact bytes.
    """
    pairs = sorted([str(k), jsonable(v)] for k, v in delta)
    return _CANONICAL.encode(pairs)


def canonical_of_delta(delta: Delta) -> str:
    """:func:`canonical_json` of a delta made by :func:`compute_delta`, whose keys are sorted
    strings and whose values are jsonable already (the same text, without redoing either)."""
    if delta and type(delta[0][0]) is not str:  # keys sorted as they are, not as strings
        return canonical_json(delta)
    return _CANONICAL.encode([[k, v] for k, v in delta])


#: ``json.dumps(..., sort_keys=True)`` without building an encoder per call (same output).
_CANONICAL = json.JSONEncoder(sort_keys=True)


def compute_sig(delta: Iterable[tuple[str, Any]]) -> str:
    """sha1 of ``canonical_json(delta)``, first 8 hex characters."""
    return sig_of_canonical(canonical_json(delta))


def sig_of_canonical(text: str) -> str:
    """The signature of an already canonical delta text."""
    return hashlib.sha1(text.encode("utf8")).hexdigest()[:SIG_LENGTH]


def is_valid_sig(text: str) -> bool:
    """True when ``text`` is exactly 8 lowercase hex characters (nothing else is a signature)."""
    return bool(_SIG_RE.fullmatch(text))


def delta_from_json(data: Any) -> Delta:
    """Parse a delta stored as JSON (a list of ``[key, value]`` lists)."""
    if not isinstance(data, list) or not all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in data
    ):
        raise ValueError("a delta must be a list of [key, value] pairs")
    return [(p[0], p[1]) for p in data]
