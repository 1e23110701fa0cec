"""Backends: where XPs run. Each implements the narrow interface of ``base.Backend`` and
declares itself once (``base.BackendSpec``) in the registry (registry.py)."""

from __future__ import annotations

from .base import Backend, BackendSpec, Choice, LaunchContext, Submission
from .registry import get_backend

__all__ = ["Backend", "BackendSpec", "Choice", "LaunchContext", "Submission", "get_backend"]
