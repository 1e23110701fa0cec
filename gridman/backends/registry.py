"""The backend registry: the one list of backends, and every question asked about them.

Each backend module declares a ``BACKEND`` (a :class:`~gridman.backends.base.BackendSpec`: its
name, description, gridman.yaml section, whether the automatic choice may pick it here, how its
job ids show, its aliases). :data:`MODULES` lists those modules, one line each, in the order
the automatic choice tries them. Everything outside ``gridman.backends`` asks here, by name,
so a new backend is one new module plus one line below.

Modules are imported by name when first asked about (``importlib``), so that this module
depends on none of them and ``import gridman.backends`` stays light.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError, UsageError

if TYPE_CHECKING:  # at run time imported by the functions that need it: see run_entry
    from .base import Backend, BackendSpec, LaunchContext

#: Every backend's module, in the order of the automatic choice (the first that says it can
#: run here wins; inline never volunteers).
MODULES: tuple[str, ...] = (
    "gridman.backends.mpi",
    "gridman.backends.slurm",
    "gridman.backends.local",
    "gridman.backends.inline",
)
#: Backends whose ``entry`` may run the command line itself (every rank of their job), each
#: with a light function saying whether this process is one of those: it is asked before any
#: backend module is imported, so that every command's start-up stays light.
ENTRY_GATES: dict[str, str] = {"gridman.backends.mpi": "gridman.backends.mpienv:in_job"}


def specs() -> list[BackendSpec]:
    """Every registered backend, in the order of :data:`MODULES`."""
    return [_declared(module) for module in MODULES]


def _declared(module: str) -> BackendSpec:
    from .base import BackendSpec

    spec = getattr(importlib.import_module(module), "BACKEND", None)
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"{module} declares no BACKEND (a BackendSpec)")
    return spec


def find(name: str) -> Optional[BackendSpec]:
    """The backend called ``name`` (or one of its aliases); None when there is none."""
    for spec in specs():
        if name == spec.name or name in spec.aliases:
            return spec
    return None


def names() -> list[str]:
    return [spec.name for spec in specs()]


def _unknown(name: str) -> UsageError:
    return UsageError(
        f"unknown backend {name!r}",
        "valid backends: " + ", ".join(f"{s.name} ({s.description})" for s in specs()),
    )


def get_backend(name: str, ctx: LaunchContext) -> Backend:
    """The backend called ``name``; an unknown name is a usage error listing the valid ones."""
    spec = find(name)
    if spec is None:
        raise _unknown(name)
    return spec.factory(ctx)


def canonical(name: str) -> str:
    """The registered name of ``name`` (an alias resolved); a usage error when unknown."""
    spec = find(name)
    if spec is None:
        raise _unknown(name)
    return spec.name


def choose(
    option: Optional[str],
    configured: Optional[str],
    where: str,
    env: Optional[Mapping[str, str]] = None,
) -> tuple[str, str]:
    """(backend name, why): ``--backend``; else a backend this process already belongs to;
    else gridman.yaml's ``backend:`` (``where`` names the file); else the first backend that
    says it can run here."""
    if option:
        return option, "--backend"
    env = dict(os.environ if env is None else env)
    found = [(spec, spec.detect(env)) for spec in specs() if spec.detect is not None]
    for spec, choice in found:
        if choice is not None and choice.over_config:
            return spec.name, choice.reason
    if configured:
        return str(configured), f"backend: in {where}"
    for spec, choice in found:
        if choice is not None:
            return spec.name, choice.reason
    raise UsageError("no backend can run here", "name one with --backend")


# -- gridman.yaml sections ---------------------------------------------------------------------
def section_names() -> tuple[str, ...]:
    """The top-level gridman.yaml keys that backends own (one section each)."""
    return tuple(names())


def check_sections(settings: Mapping[str, Any], file: Optional[Path]) -> None:
    """Each backend checks its own gridman.yaml section; a bad one is a ConfigError naming
    the file, the section and what the backend says."""
    for spec in specs():
        if spec.name not in settings:
            continue
        section = settings.get(spec.name) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"{file}: `{spec.name}` must be a mapping")
        try:
            spec.check_section(section)
        except (UsageError, ConfigError) as exc:
            raise ConfigError(f"{file}: `{spec.name}:` {exc.message}", exc.hint) from None


def resource_defaults(settings: Mapping[str, Any], file: Optional[Path]) -> dict[str, Any]:
    """The resources every launcher starts from, from the sections of backends that hold
    them (checked by their backend first)."""
    out: dict[str, Any] = {}
    for spec in specs():
        section = settings.get(spec.name)
        if spec.resource_defaults and section:
            check_sections({spec.name: section}, file)
            out.update(spec.resources(section))
    return out


# -- job records -------------------------------------------------------------------------------
def job_label(backend: str, job_id: str) -> Optional[str]:
    """How a job id recorded by ``backend`` is shown (None: not worth showing)."""
    spec = find(backend)
    return job_id if spec is None else spec.job_label(job_id)


def run_entry(main: Callable[[], Any]) -> Optional[int]:
    """Let a backend run the command line's entry point when this process is one of its own
    (every rank of an MPI job); None when none did, and ``main`` is to be run as usual."""
    # Every command starts here: nothing but the gates is imported unless one opens.
    for module, gate in ENTRY_GATES.items():
        gate_module, _, gate_name = gate.partition(":")
        if not getattr(importlib.import_module(gate_module), gate_name)():
            continue
        spec = _declared(module)
        if spec.entry is not None:
            code = spec.entry(main)
            if code is not None:
                return code
    return None
