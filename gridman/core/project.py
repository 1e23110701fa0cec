"""The project: its root (where ``gridman.yaml`` lives), its settings, and its main.

``gridman.yaml`` is optional; it names the main (``main: train`` — a module, or a path such as
``examples/train.py``, optionally ``:attr``) and project defaults. ``--main`` and the
``GRIDMAN_MAIN`` environment variable override it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from ..errors import ConfigError, MainNotFoundError, UserCodeError
from .config import load_mapping

if TYPE_CHECKING:
    from .main import DecoratedMain

PROJECT_FILE = "gridman.yaml"
KNOWN_KEYS = ("main", "dir", "grids_dir", "backend", "local", "slurm", "mpi")
_HOW_TO = (
    "declare it with `main: train` (a module) or `main: path/to/train.py` in gridman.yaml "
    "at the project root, or pass --main, or set GRIDMAN_MAIN"
)


@dataclass(frozen=True)
class Project:
    """Where the project is and what its ``gridman.yaml`` says."""

    root: Path
    file: Optional[Path] = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def main_spec(self) -> Optional[str]:
        value = self.settings.get("main")
        return str(value) if value is not None else None

    @property
    def dir(self) -> Optional[Path]:
        """The XP root when known without importing the main (env or gridman.yaml)."""
        value = os.environ.get("GRIDMAN_DIR") or self.settings.get("dir")
        return self.resolve(value) if value else None

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """A path relative to the project root made absolute."""
        return (self.root / Path(path).expanduser()).absolute()

    def section(self, name: str) -> dict[str, Any]:
        value = self.settings.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.file}: `{name}` must be a mapping")
        return value


def find_root(start: Path) -> Optional[Path]:
    """The nearest folder at or above ``start`` holding a gridman.yaml."""
    start = start.absolute()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


def load_project(start: Optional[Path] = None) -> Project:
    """The project around ``start`` (default: the current directory)."""
    start = Path(start or Path.cwd())
    root = find_root(start)
    if root is None:
        return Project(root=start.absolute())
    file = root / PROJECT_FILE
    settings = load_mapping(file)
    for key in settings:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{file}: unknown key {key!r}", f"{hint}valid keys: {', '.join(KNOWN_KEYS)}"
            )
    return Project(root=root, file=file, settings=settings)


def main_spec(project: Project, override: Optional[str] = None) -> str:
    """The main to use: ``--main`` beats ``GRIDMAN_MAIN`` beats gridman.yaml's ``main``."""
    spec = override or os.environ.get("GRIDMAN_MAIN") or project.main_spec
    if not spec:
        raise MainNotFoundError(f"no main declared for the project in {project.root}", _HOW_TO)
    return spec


def load_main(project: Project, spec: str) -> DecoratedMain:
    """Import the module that ``spec`` names and return its decorated main."""
    from .main import DecoratedMain

    target, _, attr = spec.partition(":")
    module = _import_target(project, target)
    if attr:
        main = getattr(module, attr, None)
        if not isinstance(main, DecoratedMain):
            raise MainNotFoundError(
                f"{spec}: {attr!r} is not a gridman main in {module.__file__}", _HOW_TO
            )
        return main
    found = {n: v for n, v in vars(module).items() if isinstance(v, DecoratedMain)}
    if isinstance(found.get("main"), DecoratedMain):
        return found["main"]
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise MainNotFoundError(
            f"{module.__file__} defines no gridman main",
            "decorate the training function with @gridman.argparse_main(...) or "
            "@gridman.yaml_main(...)",
        )
    names = ", ".join(sorted(found))
    raise MainNotFoundError(
        f"{module.__file__} defines several gridman mains ({names})",
        f"name one as `main: {target}:NAME` in gridman.yaml or with --main",
    )


def _import_target(project: Project, target: str) -> ModuleType:
    looks_like_path = target.endswith(".py") or os.sep in target
    root = str(project.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        if looks_like_path:
            return _import_path(project.resolve(target))
        return importlib.import_module(target)
    except MainNotFoundError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == target or target.startswith(exc.name + ".")):
            raise MainNotFoundError(
                f"main module {target!r} not found from {project.root}", _HOW_TO
            ) from None
        raise UserCodeError(user_traceback(exc)) from None
    except Exception as exc:  # the user's module raised while importing
        raise UserCodeError(user_traceback(exc)) from None


def _import_path(path: Path) -> ModuleType:
    if not path.is_file():
        raise MainNotFoundError(f"main file {path} does not exist", _HOW_TO)
    name = "_gridman_main_" + path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


_OWN = str(Path(__file__).parent.parent)  # the gridman package


def user_traceback(exc: BaseException) -> str:
    """A traceback of ``exc`` without gridman's and importlib's frames."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(_OWN) and "importlib" not in f.filename
    ]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()
