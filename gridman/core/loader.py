"""Imports the user's code: the project's main (a module or a path), with tracebacks that show
the user's frames only (grid files use them too).

Separate from project.py so that settings (project.py) never import the main's machinery
(main.py), which itself finds its project.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from ..errors import MainNotFoundError, UserCodeError
from .main import DecoratedMain
from .project import HOW_TO, Project


@contextlib.contextmanager
def user_output() -> Iterator[None]:
    """Send what the user's code prints (``print`` at import of a main or a grid file, in an
    explore function) to stderr: stdout carries only gridman's output (``--json`` promises
    nothing but JSON there)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def load_main(project: Project, spec: str) -> DecoratedMain:
    """Import the module that ``spec`` names and return its decorated main."""
    target, _, attr = spec.partition(":")
    with user_output():
        module = _import_target(project, target)
    if attr:
        main = getattr(module, attr, None)
        if not isinstance(main, DecoratedMain):
            raise MainNotFoundError(
                f"{spec}: {attr!r} is not a gridman main in {module.__file__}", HOW_TO
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
                f"main module {target!r} not found from {project.root}", HOW_TO
            ) from None
        raise UserCodeError(user_traceback(exc)) from None
    except SystemExit as exc:  # sys.exit() at import: reported, never a silent exit
        raise UserCodeError(exit_message(f"at import of the main {target}", exc)) from None
    except Exception as exc:  # the user's module raised while importing
        raise UserCodeError(user_traceback(exc)) from None


def _import_path(path: Path) -> ModuleType:
    if not path.is_file():
        raise MainNotFoundError(f"main file {path} does not exist", HOW_TO)
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


def exit_message(what: str, exc: SystemExit) -> str:
    """``sys.exit()`` called by the user's code while gridman ran it (``what``: when, e.g.
    "at import of the grid file"): its file:line, its code and the user's traceback."""
    frames = _user_frames(exc)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    code = "" if exc.code is None else repr(exc.code)
    return f"{where}: sys.exit({code}) {what}\n{user_traceback(exc)}"


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    return [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith((_OWN, "<frozen")) and "importlib" not in f.filename
    ]


def user_traceback(exc: BaseException) -> str:
    """A traceback of ``exc`` without gridman's and importlib's frames."""
    frames = _user_frames(exc)
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()
