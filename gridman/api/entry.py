"""The command line's entry point, as the backends need it: kept apart from the other api
modules so that ``gridman --version`` imports only the backend registry and its backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from ..backends import registry


def run_entry(main: Callable[[], Any]) -> Optional[int]:
    """Run the command line's entry point the way the backend this process belongs to needs
    (every rank of ``mpiexec -n N gridman ...``); None: run it as usual."""
    return registry.run_entry(main)
