"""The README's walkthrough, top to bottom, in a fresh clone of this repository.

A new user clones, runs the example grid, looks at one XP by a prefix of its signature, reruns
it, runs an XP of the project's second main (the YAML one) and finds it apart from the first
main's XPs, then exports the grid. Every command is the README's, run as a real process with
the venv's ``gridman`` (as after ``. .venv/bin/activate``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of gridman")  # a user's sdist: nothing to clone
    clone = tmp_path / "gridman"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # the working tree's README and examples, in case they are not committed yet
    for name in ("README.md", "gridman.yaml"):
        shutil.copy(REPO / name, clone / name)
    for folder in ("examples", "grids"):
        shutil.rmtree(clone / folder)
        shutil.copytree(REPO / folder, clone / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return clone


def _gridman(clone: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # what activating the venv does
    done = subprocess.run(["gridman", *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return done


def test_the_readme_walkthrough_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    readme = (clone / "README.md").read_text()
    for said in ("gridman grid demo", ". .venv/bin/activate", "gridman info --sig 3f9",
                 "gridman run --main examples/train_yaml.py lr=0.05"):  # fmt: skip
        assert said in readme, said  # the steps below are the ones the README gives

    # make demo: the example grid on the local pool, then the table
    _gridman(clone, "grid", "demo", "--backend", "local", "--interval", "0.5")
    rows = json.loads(_gridman(clone, "grid", "demo", "--json", "--no-monitor").stdout)
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETED"}
    sig = rows[0]["sig"]

    # one XP, by a prefix of its signature; again from its signature (nothing new)
    shown = _gridman(clone, "info", "--sig", sig[:4])
    assert f"sig      {sig}" in shown.stdout and "COMPLETED" in shown.stdout
    _gridman(clone, "run", "--sig", sig)
    xps = clone / "outputs" / "xps"
    assert len(list(xps.iterdir())) == 6

    # the second main: an XP root of its own, never merged with the first main's
    _gridman(clone, "run", "--main", "examples/train_yaml.py", "lr=0.05", "epochs=2")
    assert len(list(xps.iterdir())) == 6
    (yaml_xp,) = (clone / "outputs" / "mains" / "examples.train_yaml" / "xps").iterdir()
    info = json.loads(_gridman(clone, "info", "--main", "examples/train_yaml.py",
                               "--json", "lr=0.05", "epochs=2").stdout)  # fmt: skip
    assert info["folder"] == str(yaml_xp) and info["main"] == "examples/train_yaml.py:main"

    # results
    csv = _gridman(clone, "export", "demo", "--format", "csv").stdout
    assert len(csv.strip().splitlines()) == 7
