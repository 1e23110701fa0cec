"""gridman: a grid-search experiment manager.

Public API (imported lazily so that ``import gridman`` and ``gridman --help`` stay light):
``argparse_main``, ``yaml_main``, ``get_xp``, ``is_xp``, ``XP``, ``Link``, ``GridmanError``,
``load`` (a grid's results as records, see api/load.py), ``Evaluator`` and ``RunningJob``
(asynchronous evaluation of a function over configurations; the rest is in gridman.evaluator),
``distrib`` (a distributed XP's rank, world size and ``torch.distributed`` set-up).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "argparse_main": "gridman.core.main",
    "yaml_main": "gridman.core.main",
    "hydra_main": "gridman.core.hydra_main",  # needs the [hydra] extra, imported on use
    "DecoratedMain": "gridman.core.main",
    "get_xp": "gridman.core.xp",
    "is_xp": "gridman.core.xp",
    "XP": "gridman.core.xp",
    "Link": "gridman.core.link",
    "GridmanError": "gridman.errors",
    "Explorer": "gridman.core.explore",
    "Launcher": "gridman.core.explore",
    "load": "gridman.api.load",
    "Results": "gridman.results.records",
    "Record": "gridman.results.records",
    "Evaluator": "gridman.evaluator",
    "RunningJob": "gridman.evaluator",
    "distrib": "gridman.distrib",  # the module itself: gridman.distrib.rank()
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gridman' has no attribute {name!r}")
    import importlib

    imported = importlib.import_module(module)
    value = imported if module == f"{__name__}.{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
