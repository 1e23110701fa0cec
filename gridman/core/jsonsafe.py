"""The one rule for JSON that gridman prints or exports: NaN and infinities become ``null``.

Python's ``json`` writes ``NaN``/``Infinity``, which ``JSON.parse``, ``jq`` and most other
parsers reject; a diverged metric must not make a whole ``--json`` output unreadable. Every
JSON output (``grid --json``, ``info --json``, ``export --format json``...) goes through
:func:`dumps`.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (in nested dicts, lists, tuples) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``: strict JSON that any parser accepts."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
