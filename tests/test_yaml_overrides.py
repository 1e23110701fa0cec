"""Issue 14 case 13: a YAML main checks each override against the config's value before any XP
exists (``model.depth=four``, ``model=3`` used to fail later, inside the XP), and ``--lr 0.5``
gets the hint ``lr=0.5``, not "use +key=value"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridman.core.config import apply_overrides
from gridman.errors import UsageError
from gridman.testing import make_yaml_project, run_cli, xps_dir

GRIDMAN = Path(sys.executable).parent / "gridman"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_yaml_project(tmp_path / "proj")


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["model.depth=four"], "expected an integer, as model.depth: 2", "model.depth=2"),
        (["model.depth=2.5"], "expected an integer", "give an integer"),
        (["model=3"], "model is a section of", "model.depth, model.layers"),
        (["fail=yes"], "expected a boolean (true or false), as fail: false", "fail=false"),
        (["model.layers=8"], "expected a list, as model.layers: [8, 8]", "model.layers=[8,8]"),
        (["lr=fast"], "expected a number, as lr: 0.1", "lr=0.1"),
        (["--lr", "0.5"], "a YAML main takes key=value overrides, not --flags", "write lr=0.5"),
        (["--lr=0.5"], "not --flags", "write lr=0.5"),
        (["--model.depth", "4"], "not --flags", "write model.depth=4"),
    ],
)
def test_bad_override_is_refused_before_the_xp(
    project: Path, args: list[str], message: str, hint: str
) -> None:
    for command in (["info", "--"], ["run", "--"]):
        result = run_cli([*command, *args], project)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "hint:" in result.stderr
        assert hint in result.stderr.partition("hint:")[2]
        assert "use +key=value to add" not in result.stderr
    assert not xps_dir(project).exists()  # refused before any folder was made


def test_bad_override_in_a_real_process(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    done = subprocess.run([str(GRIDMAN), "run", "model.depth=four"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "bad override model.depth=four: expected an integer" in done.stderr
    assert "Traceback" not in done.stderr and not xps_dir(project).exists()


FITTING = [["lr=1"], ["model.depth=4"], ["extra=5"], ["name=7"], ["model.layers=null"],
           ["+model.width=3"], ["model.layers=[4,4,4]"], ["fail=true"]]  # fmt: skip


@pytest.mark.parametrize("args", FITTING)
def test_fitting_overrides_still_work(project: Path, args: list[str]) -> None:
    result = run_cli(["info", "--", *args], project)
    assert result.exit_code == 0, result.output


def test_values_keep_their_parsed_type() -> None:
    # lr=1 stays the integer 1 (signatures of existing XPs never change)
    cfg = apply_overrides({"lr": 0.1, "m": {"d": 2}}, ["lr=1", "m.d=3"], "c.yaml")
    assert cfg == {"lr": 1, "m": {"d": 3}} and type(cfg["lr"]) is int
    with pytest.raises(UsageError, match="expected an integer"):
        apply_overrides({"m": {"d": 2}}, ["m.d=true"], "c.yaml")
