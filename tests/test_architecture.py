"""The package's shape holds: layers import one way, no import circle, a small top level.

Every import statement counts, wherever it stands (inside a function, under ``TYPE_CHECKING``):
a lazy import still ties two modules together. docs/architecture.md draws the layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import gridman

PACKAGE = Path(gridman.__file__).parent

#: What each layer may import (besides itself); "" is gridman's own __init__ (its __version__).
ALLOWED = {
    "core": {"", "errors"},
    "results": {"", "errors", "core"},
    "backends": {"", "errors", "core"},
    "api": {"", "errors", "core", "results", "backends"},
    "evaluator": {"", "errors", "core", "results", "backends", "api"},
    "serve": {"", "errors", "core", "results", "api"},
    "cli": {"", "errors", "core", "results", "api", "serve"},
}
#: Top-level modules that stay as aliases of moved ones (paths written on users' disks).
ALIASES = {"worker": "backends", "stagerun": "backends"}
#: Modules that are a backend's own: only backends/ (and the evaluator's methods) import them.
BACKEND_OWN = {"local", "pool", "inline", "mpi", "slurm", "slurm_query", "slurm_job", "mpienv"}


def module_name(path: Path) -> str:
    parts = ["gridman", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every gridman module that ``name`` imports, by any import statement."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the submodule when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(name, path, known)) for name, path in known.items()}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_circle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_layers_import_one_way() -> None:
    wrong = []
    for name, targets in graph().items():
        own = ALIASES.get(layer(name), layer(name))
        allowed = ALLOWED.get(own)
        if allowed is None:
            continue
        for target in targets:
            if layer(target) not in allowed | {own}:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_backends_are_named_only_in_backends() -> None:
    wrong = []
    for name, targets in graph().items():
        if layer(name) in {"backends", "evaluator", "testing"} or name in {
            f"gridman.{a}" for a in ALIASES
        }:
            continue
        for target in targets:
            if layer(target) == "backends" and target.rpartition(".")[2] in BACKEND_OWN:
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_top_level_is_small() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top
    assert not [t for t in top if t.startswith("testing")], top
    for sub in ["core", "backends", "results", "api", "cli", "testing", "evaluator", "serve"]:
        assert (PACKAGE / sub / "__init__.py").is_file(), sub


@pytest.mark.parametrize("old", ["gridman.worker", "gridman.stagerun", "gridman.backends.pool"])
def test_paths_on_users_disks_still_import(old: str) -> None:
    import importlib

    assert importlib.import_module(old) is not None
