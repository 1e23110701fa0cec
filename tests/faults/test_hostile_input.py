"""Hostile input: diverged metrics in ``--json`` outputs, an XP folder that is a symbolic
link under ``--clear``, a malformed ``argv.json`` under ``info --sig``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from gridman.core.link import Link, load_history
from gridman.testing import make_project, run_cli, xp_folders, xps_dir
from gridman.testing.faults import DIVERGE_TRAIN_SOURCE
from gridman.testing.grids import write_grid


def strict_json(text: str) -> Any:
    """Parse as ``JSON.parse`` would: ``NaN`` and ``Infinity`` are errors."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- NaN and infinities ---------------------------------------------------------------------
@pytest.fixture
def diverged(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "proj", main_source=DIVERGE_TRAIN_SOURCE)
    write_grid(root, "div", "launcher(lr=0.2)\nlauncher(lr=0.3)")
    return root


def test_info_json_is_strict_json(diverged: Path) -> None:
    assert run_cli(["run", "--", "--lr", "0.2"], diverged).exit_code == 0
    (folder,) = xp_folders(diverged)
    result = run_cli(["info", "--sig", folder.name, "--json", "--metrics"], diverged)
    assert result.exit_code == 0, result.output
    data = strict_json(result.stdout)
    last = {"loss": None, "best": None, "low": None, "curve": [1.0, None], "epoch": 1}
    assert data["last_metrics"] == last
    assert data["history"][-1] == last and data["history"][0]["loss"] == 1.0


def test_grid_json_and_export_are_strict_json(diverged: Path) -> None:
    result = run_cli(["grid", "div", "--backend", "inline", "--json"], diverged)
    assert result.exit_code == 0, result.output
    rows = strict_json(result.stdout)
    assert len(rows) == 2 and "NaN" not in result.stdout and "Infinity" not in result.stdout
    exported = run_cli(["export", "div", "-F", "json"], diverged)
    assert exported.exit_code == 0, exported.output
    assert len(strict_json(exported.stdout)) == 2


# -- --clear through a symbolic link --------------------------------------------------------
SIG_LR05 = "3b45fed1"  # `--lr 0.5` of make_project's main


def linked_xp(project: Path, target: Path) -> Path:
    """Run XP --lr 0.5 once with its folder a symbolic link to ``target``; mark it old."""
    target.mkdir(parents=True)
    xps_dir(project).mkdir(parents=True)
    link = xps_dir(project) / SIG_LR05
    link.symlink_to(target, target_is_directory=True)
    assert run_cli(["run", "--", "--lr", "0.5"], project).exit_code == 0
    (target / "checkpoint.th").write_bytes(b"old")
    old = Link(link)
    old.update_history([{"old": True, "epoch": i} for i in range(5)])
    old.close()
    return link


def test_run_clear_empties_a_linked_folder_inside_the_root(project: Path) -> None:
    store = project / "outputs" / "store" / "big"
    link = linked_xp(project, store)
    result = run_cli(["run", "--clear", "--yes", "--", "--lr", "0.5"], project)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == store.resolve()  # the layout stays
    assert not (store / "checkpoint.th").exists()
    assert load_history(link) == [
        {"train": ANY, "epoch": 0},
        {"train": ANY, "epoch": 1},
    ]  # a new history, not the old


def test_grid_clear_empties_a_linked_folder_inside_the_root(project: Path) -> None:
    write_grid(project, "one", "launcher(lr=0.5)")
    store = project / "outputs" / "store" / "big"
    link = linked_xp(project, store)
    result = run_cli(["grid", "one", "--clear", "--yes", "--backend", "inline"], project)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and not (store / "checkpoint.th").exists()
    assert load_history(link) == [{"train": ANY, "epoch": 0}, {"train": ANY, "epoch": 1}]


@pytest.mark.parametrize("command", ["run", "grid"])
def test_clear_refuses_a_link_out_of_the_root(project: Path, tmp_path: Path, command: str) -> None:
    write_grid(project, "one", "launcher(lr=0.5)")
    elsewhere = tmp_path / "elsewhere"
    link = linked_xp(project, elsewhere)
    args = ["run", "--clear", "--yes", "--", "--lr", "0.5"]
    if command == "grid":
        args = ["grid", "one", "--clear", "--yes", "--backend", "inline"]
    result = run_cli(args, project)
    assert result.exit_code == 2, result.output
    assert str(elsewhere) in result.stderr and "hint:" in result.stderr
    assert (elsewhere / "checkpoint.th").read_bytes() == b"old"  # nothing deleted there
    assert len(load_history(link)) == 5


# -- a malformed argv.json -------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    ['{"argv": ["--lr", "0.5"], "delta": [1, 2]}', '{"argv": "--lr"}', "{not json"],
)
def test_info_reports_a_damaged_argv_file(project: Path, content: str) -> None:
    assert run_cli(["run", "--", "--lr", "0.5"], project).exit_code == 0
    path = xps_dir(project) / SIG_LR05 / "argv.json"
    path.write_text(content, encoding="utf8")
    result = run_cli(["info", "--sig", SIG_LR05], project)
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and "damaged" in result.stderr
    assert "gridman grid NAME --init" in result.stderr
