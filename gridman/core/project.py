"""The project: its root (where ``gridman.yaml`` lives), its settings, and its main.

``gridman.yaml`` is optional; it names the main (``main: train`` — a module, or a path such as
``examples/train.py``, optionally ``:attr``) and project defaults. ``--main`` and the
``GRIDMAN_MAIN`` environment variable override it.

Core knows its own keys only (:data:`CORE_KEYS`); every other top-level key is a section that
another layer owns and checks (each backend its own, through the backend registry: the api
layer passes their names as ``sections``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, MainNotFoundError
from .config import load_mapping

PROJECT_FILE = "gridman.yaml"
#: The keys core reads itself; the others are sections of the layers that own them.
CORE_KEYS = ("main", "dir", "grids_dir", "backend", "git_save")
HOW_TO = (
    "declare it with `main: train` (a module) or `main: path/to/train.py` in gridman.yaml "
    "at the project root, or pass --main, or set GRIDMAN_MAIN"
)


@dataclass(frozen=True)
class GitSave:
    """gridman.yaml's ``git_save``: ``true``/``false``, or ``{allow_dirty: true}`` (on, and
    uncommitted changes do not stop a submission: the last commit runs without them)."""

    enabled: bool = True
    allow_dirty: bool = False


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

    @property
    def git_save(self) -> Optional[GitSave]:
        """gridman.yaml's ``git_save`` (None when absent: the main's setting decides)."""
        return parse_git_save(self.file, self.settings.get("git_save"))

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


def load_project(
    start: Optional[Path] = None, sections: Optional[Collection[str]] = None
) -> Project:
    """The project around ``start`` (default: the current directory).

    With ``sections`` (the section names other layers own), any other top-level key is an
    error; without, a key is only refused when it reads as a misspelt core key (``mian``): the
    layers that own sections check them when they load the project.
    """
    start = Path(start or Path.cwd())
    root = find_root(start)
    if root is None:
        return Project(root=start.absolute())
    file = root / PROJECT_FILE
    settings = load_mapping(file)
    for key in settings:
        check_key(file, str(key), sections)
    return Project(root=root, file=file, settings=settings)


def check_key(file: Path, key: str, sections: Optional[Collection[str]]) -> None:
    """Raise a ConfigError when ``key`` is not a top-level key of gridman.yaml."""
    if key in CORE_KEYS or (sections is not None and key in sections):
        return
    valid = [*CORE_KEYS, *(sections or ())]
    close = difflib.get_close_matches(key, valid, n=1)
    if sections is None and not close:
        return  # another layer's section: checked by its owner
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"{file}: unknown key {key!r}", f"{hint}valid keys: {', '.join(valid)}")


def parse_git_save(file: Optional[Path], value: Any) -> Optional[GitSave]:
    """``git_save: true|false`` or a mapping of ``enabled``/``allow_dirty`` booleans."""
    if value is None or isinstance(value, bool):
        return None if value is None else GitSave(enabled=value)
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in ("enabled", "allow_dirty"))
        flags = {k: v for k, v in value.items() if k in ("enabled", "allow_dirty")}
        if not unknown and all(isinstance(v, bool) for v in flags.values()):
            return GitSave(**flags)
    raise ConfigError(
        f"{file}: `git_save` must be true, false or a mapping of booleans, got {value!r}",
        "write `git_save: true`, or `git_save: {allow_dirty: true}` to allow uncommitted "
        "changes (the last commit runs without them)",
    )


def main_spec(project: Project, override: Optional[str] = None) -> str:
    """The main to use: ``--main`` beats ``GRIDMAN_MAIN`` beats gridman.yaml's ``main``."""
    spec = override or os.environ.get("GRIDMAN_MAIN") or project.main_spec
    if not spec:
        raise MainNotFoundError(f"no main declared for the project in {project.root}", HOW_TO)
    return spec
