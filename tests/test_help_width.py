"""Help text a new user can read (issue 14, item 12): within 80 columns, words for metavars.

Every command's ``--help`` at ``COLUMNS=80`` has no line over 80 columns (the examples were
82-90) and no Python type as a metavar (``<str>``, ``<list[str]>``, ``-T <int>``); the
backend line that ``gridman grid`` writes on stderr fits 80 columns too (it was 88+).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gridman.testing import run_cli
from gridman.testing.grids import make_grid_project

COMMANDS = [[], ["run"], ["info"], ["grid"], ["export"], ["plot"]]
PYTHON_TYPE = re.compile(r"<(str|int|float|bool|list\[[a-z]+\])>")


def too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > 80]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "gridman")
def test_help_fits_80_columns_in_process(command: list[str], tmp_path: Path) -> None:
    result = run_cli([*command, "--help"], tmp_path, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert not too_wide(result.stdout), "\n".join(too_wide(result.stdout))
    assert not PYTHON_TYPE.search(result.stdout), result.stdout


def test_help_as_real_processes(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "80"}
    for command in COMMANDS:
        done = subprocess.run([sys.executable, "-m", "gridman", *command, "--help"], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert not too_wide(done.stdout), (command, too_wide(done.stdout))
        assert not PYTHON_TYPE.search(done.stdout), done.stdout


def test_idx_flags_say_idx(tmp_path: Path) -> None:
    text = run_cli(["grid", "--help"], tmp_path, env={"COLUMNS": "80"}).stdout
    for flag in ("-T, --trim IDX", "-l, --log IDX", "-t, --tail IDX", "-f, --folder IDX"):
        assert flag in text, text


def test_backend_line_fits_80_columns(tmp_path: Path) -> None:
    # a deep project path makes the reason long, as in a real home folder
    root = make_grid_project(tmp_path / ("a-long-folder-name-" * 3) / "proj",
                             {"g": "launcher(lr=0.2)"})  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    done = subprocess.run([sys.executable, "-m", "gridman", "grid", "g", "--dry-run"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "gridman: backend local" in done.stderr
    assert not too_wide(done.stderr), too_wide(done.stderr)
