"""Issue 14 case 9: shell completion for bash, zsh and fish: the scripts, and the values (grid
names, patterns' keys and values, signatures), driven as the shells drive it (typer's
``_GRIDMAN_COMPLETE`` protocol) in real ``gridman`` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from gridman.testing import make_project, run_cli

GRIDMAN = Path(sys.executable).parent / "gridman"
GRID = """\
import gridman


@gridman.Explorer
def explorer(launcher):
    for lr in [0.5, 0.7]:
        for seed in range(2):
            launcher(lr=lr, seed=seed, epochs=1)
"""

pytestmark = pytest.mark.skipif(not GRIDMAN.exists(), reason=f"{GRIDMAN} is not installed")


def gridman(cwd: Path, args: list[str], env: Optional[dict[str, str]] = None) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDMAN_", "_GRIDMAN"))}
    full.update(env or {})
    done = subprocess.run([str(GRIDMAN), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("complete") / "proj")
    (root / "grids").mkdir()
    (root / "grids" / "sweep.py").write_text(GRID, encoding="utf8")
    (root / "grids" / "other.py").write_text(GRID, encoding="utf8")
    (root / "grids" / "lm").mkdir()  # a sub-folder of grids, as Dora projects have
    (root / "grids" / "lm" / "small.py").write_text(GRID, encoding="utf8")
    (root / "grids" / "_helpers.py").write_text("", encoding="utf8")  # not a grid
    result = run_cli(["grid", "sweep", "--backend", "inline", "--no-monitor"], root)
    assert result.exit_code == 0, result.output
    return root


def sigs(project: Path) -> list[str]:
    return sorted(p.name for p in (project / "outputs" / "xps").iterdir())


def bash(project: Path, line: str) -> list[str]:
    """What bash gets for the command ``line`` (completing its last word, maybe empty)."""
    words = line.split(" ")
    env = {"_GRIDMAN_COMPLETE": "complete_bash", "COMP_WORDS": line,
           "COMP_CWORD": str(len(words) - 1)}  # fmt: skip
    return gridman(project, [], env).split()


def zsh(project: Path, line: str) -> str:
    return gridman(project, [], {"_GRIDMAN_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line})


def fish(project: Path, line: str) -> list[str]:
    env = {"_GRIDMAN_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": line,
           "_TYPER_COMPLETE_FISH_ACTION": "get-args"}  # fmt: skip
    return [w.split("\t")[0] for w in gridman(project, [], env).splitlines()]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_for_each_shell(project: Path, shell: str) -> None:
    env = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = gridman(project, ["--show-completion", shell], env)
    assert f"_GRIDMAN_COMPLETE=complete_{shell}" in script
    assert script.strip() == gridman(project, [], {"_GRIDMAN_COMPLETE": f"source_{shell}"}).strip()


def test_help_lists_completion_options(project: Path) -> None:
    result = run_cli(["--help"], project)
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_grid_names(project: Path) -> None:
    assert bash(project, "gridman grid ") == ["lm.small", "other", "sweep"]
    assert bash(project, "gridman grid lm") == ["lm.small"]
    assert bash(project, "gridman grid sw") == ["sweep"]
    assert fish(project, "gridman grid s") == ["sweep"]
    assert "sweep" in zsh(project, "gridman export sw")


def test_signatures(project: Path) -> None:
    all_sigs = sigs(project)
    assert len(all_sigs) == 4
    assert bash(project, "gridman info --sig ") == all_sigs
    one = all_sigs[0]
    assert bash(project, f"gridman info --sig {one[:3]}") == [
        s for s in all_sigs if s.startswith(one[:3])
    ]
    assert one in zsh(project, f"gridman run --sig {one[:2]}")
    assert "--lr=0.5 --seed=0" in zsh(project, "gridman info --sig ")  # argv as help


def test_pattern_keys_and_values(project: Path) -> None:
    words = bash(project, "gridman grid sweep ")
    assert {"lr=", "seed="} <= set(words) and set(sigs(project)) <= set(words)
    assert bash(project, "gridman grid sweep lr=") == ["lr=0.5", "lr=0.7"]
    assert fish(project, "gridman grid sweep se") == ["seed="]
