"""Shared fixtures: a clean environment and a fresh import state for every test."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridman.testing import forget_modules, make_project, make_yaml_project
from gridman.testing.grids import make_grid_project, stop_pool


@pytest.fixture(autouse=True)
def _isolated(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No GRIDMAN_* variable leaks in; user modules and sys.path entries a test adds go away."""
    for name in ("GRIDMAN_DIR", "GRIDMAN_MAIN", "GRIDMAN_XP_SIG"):
        monkeypatch.delenv(name, raising=False)
    path = list(sys.path)
    yield
    sys.path[:] = path
    forget_modules(tmp_path_factory.getbasetemp())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh argparse project (gridman.testing.make_project) in tmp_path/proj."""
    return make_project(tmp_path / "proj")


@pytest.fixture
def yaml_project(tmp_path: Path) -> Path:
    """A fresh YAML-main project (gridman.testing.make_yaml_project) in tmp_path/proj."""
    return make_yaml_project(tmp_path / "proj")


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A grid project (gridman.testing.grids.make_grid_project) whose local pool, daemons and
    XPs are stopped after the test. Files with projects of another kind (Slurm, a registry)
    define a ``root`` of their own, which takes precedence."""
    path = make_grid_project(tmp_path / "proj")
    yield path
    stop_pool(path / "outputs")  # never leave XPs or daemons behind


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Path]:
    """A file that keeps XPs started with ``hold=...`` running while it exists."""
    path = tmp_path / "hold"
    path.touch()
    yield path
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
