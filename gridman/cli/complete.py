"""Shell completion (bash, zsh, fish) of gridman's values: grid names, patterns, signatures.

typer's own completion machinery does the shell side (``gridman --show-completion SHELL``,
``--install-completion``; the shell then runs ``_GRIDMAN_COMPLETE=complete_bash gridman ...``).
This module gives the parameters their value completers. They are attached by the command
group only while a shell asks for completions (:func:`completing`), so that an ordinary
``gridman info`` neither imports this module nor does any of its work.

Completers never import the user's main (that may import torch) and never fail: a project they
cannot read completes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Optional

#: The variable a shell sets to ask ``gridman`` for completions (typer: ``_{PROG}_COMPLETE``).
COMPLETE_VAR = "_GRIDMAN_COMPLETE"
#: How many XPs of a grid are read for the keys and values of its patterns.
_MAX_XPS = 500

Completer = Callable[[Any, Any, str], list[Any]]


def completing() -> bool:
    """True while a shell asks for completions."""
    return COMPLETE_VAR in os.environ


def attach(params: Iterable[Any]) -> None:
    """Give each known parameter of a command its completer (typer's ``autocompletion`` slot,
    ``_custom_shell_complete``, which its parameters consult first)."""
    for param in params:
        completer = _COMPLETERS.get(getattr(param, "name", None) or "")
        if completer is not None and hasattr(param, "_custom_shell_complete"):
            param._custom_shell_complete = completer


def _items(pairs: Iterable[tuple[str, str]], incomplete: str) -> list[Any]:
    from typer._click.shell_completion import CompletionItem

    return [CompletionItem(value, help=help or None) for value, help in pairs
            if value.startswith(incomplete)]  # fmt: skip


def _project() -> Any:
    from ..core.project import load_project

    return load_project()


def _root(ctx: Any) -> Optional[Path]:
    """The XP root, from GRIDMAN_DIR or gridman.yaml only (no import of the main)."""
    project = _project()
    main = (ctx.params or {}).get("main")
    if main and project.main_spec and main != project.main_spec:
        return None  # another main's root needs the main itself: not worth it here
    return project.dir or project.resolve("outputs")


def _argv_of(folder: Path) -> tuple[str, list[Any]]:
    """(argv as text, delta) of an XP folder (empty when unreadable)."""
    from ..core.xp import read_argv_file

    try:
        data = read_argv_file(folder)
    except (OSError, ValueError):
        return "", []
    delta = data.get("delta")
    return " ".join(str(a) for a in data["argv"]), delta if isinstance(delta, list) else []


def complete_sig(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    """Signatures of the XP root (help: each XP's argv)."""
    try:
        from ..core.xp import known_sigs, xp_folder

        root = _root(ctx)
        if root is None:
            return []
        sigs = [s for s in known_sigs(root) if s.startswith(incomplete)]
        return _items(((s, _argv_of(xp_folder(root, s))[0]) for s in sigs), incomplete)
    except Exception:  # a shell's completion must never print a traceback
        return []


def complete_grid(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    """Grid names as ``gridman grid`` lists them: the dotted names of the grid files of the
    grids folder, sub-folders included (``--grids-dir``, gridman.yaml's, or the package's)."""
    try:
        from ..core.grids import grids_dir, list_grids

        params = ctx.params or {}
        names = list_grids(grids_dir(_project(), params.get("grids_dir"), params.get("main")))
        return _items(((n, "") for n in names), incomplete)
    except Exception:
        return []


def complete_pattern(ctx: Any, param: Any, incomplete: str) -> list[Any]:
    """Patterns of grid NAME: ``key=value`` for each value its XPs take (from the grid's
    record of its signatures and their argv.json), and the signatures themselves."""
    try:
        name = (ctx.params or {}).get("name")
        root = _root(ctx)
        if not name or root is None:
            return []
        sigs = _grid_sigs(root, str(name))
        pairs: dict[str, str] = {}
        from ..core.names import part
        from ..core.xp import xp_folder

        for sig in sigs[:_MAX_XPS]:
            for entry in _argv_of(xp_folder(root, sig))[1]:
                if isinstance(entry, list) and len(entry) == 2:
                    pairs.setdefault(part(str(entry[0]), entry[1], full=True), "")
        if "=" not in incomplete:
            keys = {p.partition("=")[0]: "a key" for p in pairs}
            found = _items(((f"{k}=", h) for k, h in sorted(keys.items())), incomplete)
            return found + _items(((s, "an XP") for s in sigs), incomplete)
        return _items(sorted(pairs.items()), incomplete)
    except Exception:
        return []


def _grid_sigs(root: Path, name: str) -> list[str]:
    """The signatures grid ``name`` asked for last (its record under ``<root>/grids``)."""
    path = root / "grids" / name / "sigs.json"
    try:
        data = json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return []
    sigs = data.get("sigs") if isinstance(data, dict) else None
    return [str(s) for s in sigs] if isinstance(sigs, list) else []


_COMPLETERS: dict[str, Completer] = {
    "sig": complete_sig,
    "diff": complete_sig,
    "sigs": complete_sig,
    "name": complete_grid,
    "patterns": complete_pattern,
}
