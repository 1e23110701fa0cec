"""Finding and loading grid files and building their herd.

Two layouts. Dora's: with ``main: mypkg.train``, grids live in the package (``mypkg/grids/``)
and are imported as real modules of it (``mypkg.grids.NAME``), so that their relative
(``from ._explorers import MyExplorer``, ``from ..train import main``) and absolute
(``from mypkg import train``) imports work. Otherwise (no such folder, a top-level main, a
``--grids-dir``), ``grids/NAME.py`` is loaded as a module of a private package
(``_gridman_grids``), so that a grid named ``test`` never collides with Python's own ``test``
package; relative imports between its files work there too. In both, a grid in a sub-folder is
named with dots (``paper.table1`` is ``paper/table1.py``), files and folders starting with ``_``
are helpers, and the project root is on ``sys.path`` before any grid file runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
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
    """A loaded grid file; ``package``: the project package it belongs to (Dora's layout)."""

    name: str
    path: Path
    explorer: Explorer
    package: Optional[str] = None


@dataclass(frozen=True)
class GridsFolder:
    """Where a project's grids are, and the package they are modules of (None: private)."""

    path: Path
    package: Optional[str] = None


def find_grids(
    project: Project, override: Optional[str] = None, main: Optional[str] = None
) -> GridsFolder:
    """``--grids-dir``, else gridman.yaml's ``grids_dir``, else the main's package's ``grids/``
    (Dora's layout, when that folder exists), else ``grids/`` of the project. ``main``: the
    ``--main`` given, if any. A folder that is the package's grids folder, however named, is
    imported as that package."""
    package = _main_package(project, main)
    own = _package_grids(project, package) if package else None
    chosen = override or project.settings.get("grids_dir")
    if chosen:
        path = project.resolve(str(chosen))
    elif own is not None and own.is_dir():
        path = own
    else:
        path = project.resolve("grids")
    if own is not None and package and _same(path, own):
        return GridsFolder(path, f"{package}.grids")
    return GridsFolder(path)


def grids_dir(project: Project, override: Optional[str] = None, main: Optional[str] = None) -> Path:
    """The folder of the project's grid files (see :func:`find_grids`)."""
    return find_grids(project, override, main).path


def _main_package(project: Project, override: Optional[str]) -> Optional[str]:
    """``mypkg`` for a main ``mypkg.train`` (or ``mypkg.train:main``); None for a top-level
    module or a path."""
    spec = override or os.environ.get("GRIDMAN_MAIN") or project.main_spec
    if not spec:
        return None
    target = spec.partition(":")[0]
    if target.endswith(".py") or os.sep in target or "/" in target:
        return None
    package, dot, _ = target.rpartition(".")
    return package if dot and all(p.isidentifier() for p in package.split(".")) else None


def _package_grids(project: Project, package: str) -> Optional[Path]:
    """``<package>/grids`` under the project root, else where Python finds the package (an
    ``src/`` layout installed in development mode); None when it is nowhere."""
    local = project.root.joinpath(*package.split("."))
    if local.is_dir():
        return local / "grids"
    _on_path(project.root)
    try:
        spec = importlib.util.find_spec(package)
    except Exception:  # a broken parent package: no package grids, say nothing
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) / "grids" if locations else None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a.absolute() == b.absolute()


def _on_path(root: Path) -> None:
    """Make the project root importable (Dora runs grids with it on ``sys.path``)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def list_grids(folder: Path) -> list[str]:
    """Dotted names of the grid files under ``folder``, sub-folders included (files and
    folders starting with ``_`` or ``.`` are helpers or caches)."""
    if not folder.is_dir():
        return []
    names = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        prefix = Path(here).relative_to(folder).parts
        for file in files:
            if file.endswith(".py") and not file.startswith(("_", ".")):
                names.append(".".join((*prefix, file[: -len(".py")])))
    return sorted(names)


def unknown_grid(folder: Path, name: Optional[str]) -> UnknownGridError:
    names = list_grids(folder)
    listing = ", ".join(names) if names else f"none: {folder} has no grid files"
    what = f"no grid named {name!r} in {folder}" if name else "name a grid"
    return UnknownGridError(f"{what}; grids: {listing}", "gridman grid NAME [PATTERNS...]")


def grid_path(folder: Path, name: str) -> Optional[Path]:
    """The file of grid ``name`` (``a.b`` is ``a/b.py``; a file named ``a.b.py`` still
    answers to ``a.b``); None when the name is not a grid's."""
    parts = name.split(".")
    if not name or any(not p or p.startswith("_") or "/" in p or "\\" in p for p in parts):
        return None
    for path in (folder.joinpath(*parts[:-1], parts[-1] + ".py"), folder / f"{name}.py"):
        if path.is_file():
            return path
    return None


def open_grid_file(
    project: Project, name: Optional[str], override: Optional[str] = None,
    main: Optional[str] = None,
) -> Grid:  # fmt: skip
    """Find and load grid ``name`` of the project (an UnknownGridError listing the grids when
    no name is given or none has it)."""
    found = find_grids(project, override, main)
    if not name:
        raise unknown_grid(found.path, None)
    return load_grid(found.path, name, found.package, project.root)


def load_grid(
    folder: Path, name: str, package: Optional[str] = None, root: Optional[Path] = None
) -> Grid:
    """Import grid ``name`` of ``folder`` and find its one Explorer instance; ``package``: the
    real package ``folder`` is (Dora's layout), else a private one; ``root``: put on
    ``sys.path`` first."""
    path = grid_path(folder, name)
    if path is None:
        raise unknown_grid(folder, name)
    if root is not None:
        _on_path(root)
    module = _import(folder, name, path, package)
    found = {k: v for k, v in vars(module).items() if isinstance(v, Explorer)}
    if "explorer" in found:
        return Grid(name, path, found["explorer"], package)
    if len(found) == 1:
        return Grid(name, path, next(iter(found.values())), package)
    if not found:
        raise UsageError(
            f"{path} defines no Explorer",
            "decorate the explore function: @gridman.Explorer then def explorer(launcher): ...",
        )
    raise UsageError(
        f"{path} defines several Explorers ({', '.join(sorted(found))})",
        "keep one, or name the one to use `explorer`",
    )


def _import(folder: Path, name: str, path: Path, package: Optional[str]) -> types.ModuleType:
    parts = [re.sub(r"\W", "_", p) for p in path.relative_to(folder).with_suffix("").parts]
    base = package or _private_package(folder)
    full = ".".join([base, *parts])  # my-grid.py loads as my_grid
    try:
        with user_output():  # a print in the grid file must not reach stdout (--json)
            if len(parts) > 1 or package:  # its parent packages, as Python would import them
                importlib.import_module(full.rpartition(".")[0])
            spec = importlib.util.spec_from_file_location(full, path)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            # Compiled from source every time: a grid file edited within the same second
            # (same size) would otherwise run from a stale bytecode cache.
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


def _private_package(folder: Path) -> str:
    """The private package whose path is ``folder``; re-made (with its helper modules
    forgotten) when another folder's grids were loaded before in this process."""
    package = sys.modules.get(PACKAGE)
    if package is None or list(getattr(package, "__path__", [])) != [str(folder)]:
        for key in [k for k in sys.modules if k.startswith(PACKAGE + ".")]:
            del sys.modules[key]  # another folder's _explorers.py must not answer for this one
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
    return PACKAGE


def in_grids_folder(project: Project, grid: Grid) -> bool:
    """Whether ``grid`` is a file of the project's own grids folder (its package's, in Dora's
    layout), where a grid's name alone identifies it."""
    if grid.package is not None:
        return True
    folder = grids_dir(project)
    return grid_path(folder, grid.name) == grid.path


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
