"""``gridman run --sig`` and ``gridman grid`` (local pool) on the same XP at the same instant:
it starts once, and nothing is recorded VANISHED. Real processes, 30 rounds of a real race;
the main appends a line to a file at each start, so a double start cannot hide."""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridman.testing import make_project, run_cli, xp_folders
from gridman.testing.faults import start_gridman
from gridman.testing.grids import attempts_of, stop_pool, wait_states, write_grid

ROUNDS = 30

#: A main that says each start in ``starts.txt`` beside it (O_APPEND: whole lines).
STARTS_SOURCE = '''\
"""Training script written by tests/faults/test_races.py: one line per start."""

import argparse
import os
import time

import gridman

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)


@gridman.argparse_main(parser=parser, dir="outputs")
def main():
    xp = gridman.get_xp()
    starts = os.path.join(os.path.dirname(os.path.abspath(__file__)), "starts.txt")
    with open(starts, "a", encoding="utf8") as out:
        out.write(xp.sig + "\\n")
    time.sleep(0.1)


if __name__ == "__main__":
    main()
'''


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    root = make_project(tmp_path / "proj", main_source=STARTS_SOURCE)
    body = f"for seed in range(1, {ROUNDS + 1}):\n    launcher(seed=seed)"
    write_grid(root, "all", body)
    for seed in range(1, ROUNDS + 1):
        write_grid(root, f"r{seed}", f"launcher(seed={seed})")
    yield root
    stop_pool(root / "outputs")


def sigs_by_seed(project: Path) -> dict[int, str]:
    """Create every round's XP folder (``--init``: --sig needs its argv.json), by seed."""
    result = run_cli(["grid", "all", "--init", "--dry-run"], project)
    assert result.exit_code == 0, result.output
    found = {}
    for folder in xp_folders(project):
        delta = json.loads((folder / "argv.json").read_text(encoding="utf8"))["delta"]
        found[int(dict(delta)["seed"])] = folder.name
    assert len(found) == ROUNDS
    return found


def race(project: Path, logs: Path, seed: int, sig: str) -> tuple[int, int]:
    """Start both commands at (nearly) the same instant, in a random order; their codes."""
    commands = {
        "run": ["run", "--sig", sig],
        "grid": ["grid", f"r{seed}", "--no-monitor"],
    }
    order = random.sample(sorted(commands), 2)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in order:
        procs[name] = start_gridman(commands[name], project, logs / f"{seed}-{name}.log")
    return procs["run"].wait(timeout=60), procs["grid"].wait(timeout=60)


def test_run_and_grid_racing_start_an_xp_once(project: Path, tmp_path: Path) -> None:
    sigs = sigs_by_seed(project)
    logs = tmp_path / "logs"
    logs.mkdir()
    folders = {seed: project / "outputs" / "xps" / sig for seed, sig in sigs.items()}
    for seed, sig in sigs.items():
        run_code, grid_code = race(project, logs, seed, sig)
        said = (logs / f"{seed}-run.log").read_text(encoding="utf8")
        # run either ran it (0) or found it queued or started by the grid's pool: refused (2)
        assert run_code in (0, 2), said
        refused = ("is queued on the local backend" in said, "is already running" in said)
        assert run_code == 0 or any(refused), said
        assert grid_code == 0, (logs / f"{seed}-grid.log").read_text(encoding="utf8")
        wait_states([folders[seed]], {"COMPLETED", "FAILED", "CANCELLED", "VANISHED"})
    starts = (project / "starts.txt").read_text(encoding="utf8").split()
    for seed, sig in sigs.items():
        attempts = attempts_of(folders[seed])
        states = [a["state"] for a in attempts]
        assert starts.count(sig) == 1, f"round {seed}: {starts.count(sig)} starts, {states}"
        assert states == ["COMPLETED"], f"round {seed}: {states}"
