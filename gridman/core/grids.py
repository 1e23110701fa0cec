"""Finding and loading grid files (``grids/NAME.py``) and building their herd.

Grid files are loaded by path, as modules of a private package (``_gridman_grids``), so that a
grid named ``test`` never collides with Python's own ``test`` package and relative imports
between grid files (``from ._explorers import MyExplorer``) work as in Dora.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import GridmanError, UsageError, UserCodeError
from .explore import Explorer, Herd, Launcher
from .loader import exit_message, user_output, user_traceback
from .main import DecoratedMain
from .project import Project
from .resources import Resources
from .signature import is_excluded

PACKAGE = "_gridman_grids"


class UnknownGridError(UsageError):
    """No grid of that name; the message lists the grids that exist."""


@dataclass(frozen=True)
class Grid:
    """A loaded grid file."""

    name: str
    path: Path
    explorer: Explorer


def grids_dir(project: Project, override: Optional[str] = None) -> Path:
    """``--grids-dir``, else gridman.yaml's ``grids_dir``, else ``grids/`` of the project."""
    return project.resolve(override or project.settings.get("grids_dir") or "grids")


def list_grids(folder: Path) -> list[str]:
    """Names of the grid files in ``folder`` (files starting with ``_`` are helpers)."""
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def unknown_grid(folder: Path, name: Optional[str]) -> UnknownGridError:
    names = list_grids(folder)
    listing = ", ".join(names) if names else f"none: {folder} has no grid files"
    what = f"no grid named {name!r} in {folder}" if name else "name a grid"
    return UnknownGridError(f"{what}; grids: {listing}", "gridman grid NAME [PATTERNS...]")


def load_grid(folder: Path, name: str) -> Grid:
    """Import ``folder/name.py`` and find its one Explorer instance."""
    if not name or "/" in name or "\\" in name or name.startswith((".", "_")):
        raise unknown_grid(folder, name)
    path = folder / f"{name}.py"
    if not path.is_file():
        raise unknown_grid(folder, name)
    module = _import(folder, name, path)
    found = {k: v for k, v in vars(module).items() if isinstance(v, Explorer)}
    if "explorer" in found:
        return Grid(name, path, found["explorer"])
    if len(found) == 1:
        return Grid(name, path, next(iter(found.values())))
    if not found:
        raise UsageError(
            f"{path} defines no Explorer",
            "decorate the explore function: @gridman.Explorer then def explorer(launcher): ...",
        )
    raise UsageError(
        f"{path} defines several Explorers ({', '.join(sorted(found))})",
        "keep one, or name the one to use `explorer`",
    )


def _import(folder: Path, name: str, path: Path) -> types.ModuleType:
    package = sys.modules.get(PACKAGE)
    if package is None or list(getattr(package, "__path__", [])) != [str(folder)]:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
    full = PACKAGE + "." + re.sub(r"\W", "_", name)  # my-grid.py loads as my_grid
    spec = importlib.util.spec_from_file_location(full, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        # Compiled from source every time: a grid file edited within the same second (same
        # size) would otherwise run from a stale bytecode cache.
        with user_output():  # a print in the grid file must not reach stdout (--json)
            exec(compile(path.read_bytes(), str(path), "exec"), module.__dict__)
    except GridmanError:
        raise
    except BaseException as exc:
        sys.modules.pop(full, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, SystemExit):  # would end gridman silently, exit 0 or 1
            raise UserCodeError(
                f"error in grid file {exit_message('at import of the grid file', exc)}",
                "remove the sys.exit() (or exit()) call: a grid file only defines an Explorer",
            ) from None
        raise UserCodeError(f"error in grid file {path}:\n{user_traceback(exc)}") from None
    return module


def build_herd(grid: Grid, main: DecoratedMain, resources: Optional[Resources] = None) -> Herd:
    """Run the explore function; every launcher call is validated before anything runs.

    ``resources``: what every launcher starts from (gridman.yaml and CLI defaults).
    """
    herd = Herd()
    launcher = Launcher(main, herd, resources=resources, grid_file=grid.path)
    try:
        with user_output():  # prints of the explore function go to stderr (--json)
            grid.explorer(launcher)
    except GridmanError:
        raise
    except SystemExit as exc:  # would end gridman silently, exit 0 or 1
        raise UserCodeError(
            f"error in grid {grid.name}: {exit_message('in its explore function', exc)}",
            "an explore function only calls the launcher: remove its sys.exit() (or exit())",
        ) from None
    except Exception as exc:
        raise UserCodeError(f"error in grid {grid.name}:\n{user_traceback(exc)}") from None
    return herd


def merge_warning(grid: Grid, herd: Herd, main: DecoratedMain) -> Optional[str]:
    """What to say when launcher calls with different arguments became one XP because the
    arguments that differ are excluded from the signature (None when none did: the same
    call twice, as Dora grids do on purpose, is not worth a word)."""
    merged = herd.merged
    if merged is None:
        return None
    keys = merged.keys()
    globs = [p for p in main.exclude if any(is_excluded(k, [p]) for k in keys)]
    asked = len(herd.sheeps) + merged.count

    def show(values: dict[str, object]) -> str:
        return " ".join(f"{k}={v!r}" for k, v in values.items())

    return (
        f"grid {grid.name} asks for {asked} XPs but holds {len(herd.sheeps)}: {merged.count} "
        f"launcher call(s) differ from an earlier one only in arguments the signature "
        f"excludes (exclude {globs or main.exclude} of the main), so they share its XP; "
        f"e.g. {merged.first[0] or '?'} ({show(merged.first[1])}) and "
        f"{merged.second[0] or '?'} ({show(merged.second[1])}) are both XP {merged.sig}"
    )
