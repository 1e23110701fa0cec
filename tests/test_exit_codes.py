"""The exit-status contract of every command (issue 14, item 7), as the README states it.

0 when everything a command shows is fine, 1 when it shows a failed XP, 2 for bad usage or
input, 3 for gridman's own bugs. Before, ``info --sig`` of a FAILED XP, ``info --tail``,
``grid -t`` of a failed XP, ``export`` and ``plot`` exited 0. The XPs fail for real (their
main raises) on the inline backend; each command runs in-process and as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridman.testing import run_cli
from gridman.testing.grids import make_grid_project, parse_json_rows

#: XP 0 completes, XP 1 fails (its main raises after its epochs).
MIXED = "launcher(lr=0.2)\nlauncher(lr=0.3, fail=True)"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(root, sig of the completed XP, sig of the failed one)."""
    root = make_grid_project(tmp_path_factory.mktemp("codes") / "proj", {"mixed": MIXED})
    result = run_cli(["grid", "mixed", "--backend", "inline"], root)
    assert result.exit_code == 1, result.output
    rows = parse_json_rows(run_cli(["grid", "mixed", "--json"], root).stdout)
    assert [r["state"] for r in rows] == ["COMPLETED", "FAILED"]
    return root, rows[0]["sig"], rows[1]["sig"]


def cases(ok: str, bad: str) -> list[tuple[list[str], int]]:
    """(arguments, expected status) for every command that shows XPs."""
    return [
        (["grid", "mixed"], 1),
        (["grid", "mixed", "0"], 0),
        (["grid", "mixed", "--json"], 1),
        (["grid", "mixed", "-t", "1"], 1),
        (["grid", "mixed", "-t", "0"], 0),
        (["grid", "mixed", "-l", "1"], 1),
        (["grid", "mixed", "-l", "0"], 0),
        (["grid", "mixed", "-f", "1"], 0),  # a path, whatever the XP's state
        (["grid", "mixed", "--aggregate", "fail"], 1),
        (["info", "--sig", bad], 1),
        (["info", "--sig", ok], 0),
        (["info", "--sig", bad, "--json"], 1),
        (["info", "--sig", bad, "--log"], 1),
        (["info", "--sig", bad, "--tail"], 1),
        (["info", "--sig", ok, "--tail"], 0),
        (["info", "--sig", bad, "--metrics"], 1),
        (["info", "--sig", ok, "--diff", bad], 1),
        (["info", "--sig", ok, "--diff", ok], 0),
        (["info", "--", "--lr", "0.3", "--fail"], 1),
        (["export", "mixed"], 1),
        (["export", "mixed", "0"], 0),
        (["export", "--sig", bad], 1),
        (["export", "mixed", "--aggregate", "fail", "-F", "json"], 1),
        (["plot", "mixed", "-m", "train.loss", "-o", "{tmp}/all.svg"], 1),
        (["plot", "mixed", "0", "-m", "train.loss", "-o", "{tmp}/ok.svg"], 0),
        (["run", "--sig", bad], 1),
        (["run", "--sig", ok], 0),
        # bad usage or input: 2
        (["grid", "mixed", "nosuch"], 2),
        (["grid", "mixed", "-t", "7"], 2),
        (["info", "--sig", "ffffffff"], 2),
        (["export", "mixed", "--best", "nosuch:max"], 2),
        (["plot", "mixed", "-m", "nosuch", "-o", "{tmp}/x.svg"], 2),
        (["grid", "mixed", "--no-such-flag"], 2),
    ]


def test_every_command_in_process(project: tuple[Path, str, str], tmp_path: Path) -> None:
    root, ok, bad = project
    wrong = []
    for args, code in cases(ok, bad):
        args = [a.replace("{tmp}", str(tmp_path)) for a in args]
        result = run_cli(args, root)
        if result.exit_code != code:
            wrong.append(f"gridman {' '.join(args)}: {result.exit_code}, not {code}\n"
                         f"{result.output[-400:]}")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_every_command_as_a_real_process(project: tuple[Path, str, str], tmp_path: Path) -> None:
    root, ok, bad = project
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    wrong = []
    for args, code in cases(ok, bad):
        if args[0] == "run":
            continue  # the runner's own tests cover it; it reruns the XP
        args = [a.replace("{tmp}", str(tmp_path)) for a in args]
        done = subprocess.run([sys.executable, "-m", "gridman", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != code:
            wrong.append(f"gridman {' '.join(args)}: {done.returncode}, not {code}\n"
                         f"{done.stderr[-400:]}")  # fmt: skip
        assert "internal error" not in done.stderr, done.stderr
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("command", ["run", "info", "grid", "export", "plot"])
def test_each_help_states_the_contract(command: str, project: tuple[Path, str, str]) -> None:
    result = run_cli([command, "--help"], project[0])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Exit status:" in text and "1 when" in text, result.stdout
    root_help = " ".join(run_cli(["--help"], project[0]).stdout.split())
    assert "1 when it shows a failed XP" in root_help
