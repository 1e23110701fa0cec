"""Issue 14 case 1: two mains of one project never share an XP folder or a history.

The fixture project has an argparse main (``train.py``, the project's main) and a YAML main
(``train_yaml.py``) whose ``lr=0.5`` has the very signature of ``train.py --lr 0.5`` (a signature
hashes the delta only, as Dora's does). Real ``gridman run --main`` subprocesses run both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from gridman.core.signature import compute_sig
from gridman.testing import (
    YAML_CONFIG,
    YAML_TRAIN_SOURCE,
    make_project,
    read_json_file,
    run_cli,
    write_project_file,
)

GRIDMAN = Path(sys.executable).parent / "gridman"
SIG = "3b45fed1"  # --lr 0.5 (argparse) and lr=0.5 (YAML): the same delta [["lr", 0.5]]

pytestmark = pytest.mark.skipif(not GRIDMAN.exists(), reason=f"{GRIDMAN} is not installed")


def gridman(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    return subprocess.run([str(GRIDMAN), *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture
def two_mains(tmp_path: Path) -> Path:
    root = make_project(tmp_path / "proj")
    (root / "train_yaml.py").write_text(YAML_TRAIN_SOURCE, encoding="utf8")
    (root / "config.yaml").write_text(YAML_CONFIG, encoding="utf8")
    return root


def argv_file(folder: Path) -> dict[str, Any]:
    data = read_json_file(folder / "argv.json")
    assert isinstance(data, dict)
    return data


def history(folder: Path) -> list[Any]:
    data = read_json_file(folder / "history.json")
    assert isinstance(data, list)
    return data


def test_same_signature_two_mains_two_folders(two_mains: Path) -> None:
    assert compute_sig([("lr", 0.5)]) == SIG
    first = gridman(two_mains, "run", "--", "--lr", "0.5")
    assert first.returncode == 0, first.stderr
    second = gridman(two_mains, "run", "--main", "train_yaml.py", "lr=0.5")
    assert second.returncode == 0, second.stderr
    own = two_mains / "outputs" / "xps" / SIG
    other = two_mains / "outputs" / "mains" / "train_yaml" / "xps" / SIG
    assert f"XP {SIG} in {other}" in second.stderr
    assert argv_file(own)["main"] == "train.py:main" and argv_file(own)["sig"] == SIG
    assert argv_file(other)["main"] == "train_yaml.py:main" and argv_file(other)["sig"] == SIG
    # each history holds its own main's two epochs: nothing appended to the other's
    assert len(history(own)) == 2 and len(history(other)) == 2
    assert history(own)[1]["train"]["loss"] != history(other)[1]["train"]["loss"]
    assert len(json.loads((own / "job.json").read_text())["attempts"]) == 1


def test_info_main_shows_its_own_xp(two_mains: Path) -> None:
    assert gridman(two_mains, "run", "--", "--lr", "0.5").returncode == 0
    shown = gridman(two_mains, "info", "--main", "train_yaml.py", "--", "lr=0.5")
    assert shown.returncode == 0, shown.stderr
    assert "never run" in shown.stdout or "not initialised" in shown.stdout
    assert "COMPLETED" not in shown.stdout  # not train.py's XP of the same signature
    assert "mains/train_yaml/xps" in shown.stdout
    by_sig = run_cli(["info", "--sig", SIG, "--json"], two_mains)
    assert by_sig.exit_code == 0, by_sig.output
    data = json.loads(by_sig.stdout)
    assert data["main"] == "train.py:main" and data["state"] == "COMPLETED"
    other = run_cli(["info", "--main", "train_yaml.py", "--sig", SIG], two_mains)
    assert other.exit_code == 2 and "no XP with signature" in other.stderr


def test_without_declared_main_a_merge_is_refused(two_mains: Path) -> None:
    write_project_file(two_mains, {"dir": "outputs", "backend": "local"})  # no `main:`
    assert gridman(two_mains, "run", "--main", "train.py", "--", "--lr", "0.5").returncode == 0
    folder = two_mains / "outputs" / "xps" / SIG
    before = (folder / "history.json").read_bytes()
    refused = gridman(two_mains, "run", "--main", "train_yaml.py", "lr=0.5")
    assert refused.returncode == 2, refused.stderr
    assert "belongs to the main train.py:main, not to train_yaml.py:main" in refused.stderr
    assert "hint:" in refused.stderr and "main:" in refused.stderr
    assert (folder / "history.json").read_bytes() == before  # nothing ran in it
    shown = run_cli(["info", "--main", "train_yaml.py", "--", "lr=0.5"], two_mains)
    assert shown.exit_code == 2 and "belongs to the main train.py:main" in shown.stderr


def test_python_main_directly_uses_its_own_root(two_mains: Path) -> None:
    # `python train_yaml.py lr=0.5` (no gridman command) lands where `--main` puts it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    done = subprocess.run([sys.executable, "train_yaml.py", "lr=0.5"], cwd=two_mains, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = two_mains / "outputs" / "mains" / "train_yaml" / "xps" / SIG
    assert argv_file(folder)["main"] == "train_yaml.py:main"
    assert not (two_mains / "outputs" / "xps" / SIG).exists()


def _old_argv(folder: Path, main: Optional[str]) -> None:
    data: dict[str, Any] = {"version": 1, "sig": SIG, "argv": ["--lr", "0.5"],
                            "delta": [["lr", 0.5]], "gridman": "0.1.0"}  # fmt: skip
    if main is not None:
        data["main"] = main
    folder.mkdir(parents=True)
    (folder / "argv.json").write_text(json.dumps(data), encoding="utf8")


def test_folder_of_before_mains_were_recorded_is_kept(two_mains: Path) -> None:
    folder = two_mains / "outputs" / "xps" / SIG
    _old_argv(folder, None)  # written by an older gridman: no main recorded
    result = run_cli(["run", "--", "--lr", "0.5"], two_mains)
    assert result.exit_code == 0, result.output
    assert len(history(folder)) == 2
