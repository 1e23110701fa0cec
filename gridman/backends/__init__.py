"""Backends: where XPs run. Each implements the narrow interface of ``base.Backend`` and
declares itself once (``base.BackendSpec``) in the registry (registry.py).

The names below are imported when first used: every command's entry point passes through
``registry.run_entry``, which must not pay for the backends' modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Backend, BackendSpec, Choice, LaunchContext, Submission
    from .registry import get_backend

__all__ = ["Backend", "BackendSpec", "Choice", "LaunchContext", "Submission", "get_backend"]
_FROM = {name: ".registry" if name == "get_backend" else ".base" for name in __all__}


def __getattr__(name: str) -> Any:
    if name not in _FROM:
        raise AttributeError(f"module 'gridman.backends' has no attribute {name!r}")
    return getattr(importlib.import_module(_FROM[name], __name__), name)
