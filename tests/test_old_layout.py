"""What gridman 0.1.0 (the flat layout) left on disk is read and finished by this version.

``tests/data/gridman-0.1.0/proj`` was written by gridman at dc46742 (the last commit of the flat
layout), with its interpreter at ``/tmp/gridman-compat-fixture/bin/python3`` and the project at
``/tmp/gridman-compat-fixture/proj`` (paths recorded in queue entries and submitit's pickle):

    gridman grid old --backend local                  # 3b45fed1: COMPLETED, journal only
    gridman grid oldqueue --backend local --no-monitor   # 0c760b5b queued, pool daemon not started
    gridman grid oldslurm --backend slurm --sbatch hold --no-monitor   # 44425b6f: job 50, held

The tests lay the project out at the same path, with the same interpreter path (a script that
execs this test's Python), then let the new code finish what the old one started: a queue entry
naming ``python -m gridman.worker``, and a Slurm job whose pickle names
``gridman.backends.slurm_job.XPTask``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridman.core.link import load_history
from gridman.testing import run_cli
from gridman.testing.grids import parse_json_rows, read_job_json
from gridman.testing.slurm import cancel_all, needs_slurm, wait_until

FIXTURE = Path(__file__).parent / "data" / "gridman-0.1.0" / "proj"
BASE = Path("/tmp/gridman-compat-fixture")
ROOT = BASE / "proj"
OLD_JOB = "50"


@pytest.fixture
def old_project() -> Iterator[Path]:
    """The old project at the path its files name, its interpreter path running this Python."""
    if BASE.exists():
        cancel_all(ROOT / "outputs")
        shutil.rmtree(BASE)
    (BASE / "bin").mkdir(parents=True)
    python = BASE / "bin" / "python3"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    shutil.copytree(FIXTURE, ROOT, symlinks=True)
    os.chmod(ROOT / "outputs" / ".pool" / "queue", 0o700)
    yield ROOT
    cancel_all(ROOT / "outputs")
    shutil.rmtree(BASE, ignore_errors=True)


def rows(root: Path, grid: str, *flags: str) -> dict[str, dict]:
    result = run_cli(["grid", grid, "--json", *flags], root)
    assert result.exit_code == 0, result.output
    return {row["sig"]: row for row in parse_json_rows(result.stdout)}


def test_old_xp_folder_is_read(old_project: Path) -> None:
    found = rows(old_project, "old", "--no-monitor")
    assert list(found) == ["3b45fed1"]
    row = found["3b45fed1"]
    assert row["state"] == "COMPLETED"
    folder = Path(row["folder"])
    assert [h["valid"]["acc"] for h in load_history(folder)] == [0.0, 0.5, 1.0]
    info = run_cli(["info", "--sig", "3b45fed1", "--json"], old_project)
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["delta"] == [["lr", 0.5]]


def test_old_queue_entry_runs_once(old_project: Path) -> None:
    """The entry names ``python -m gridman.worker``: the new daemon runs it, nothing twice."""

    def done() -> dict[str, dict]:
        found = rows(old_project, "oldqueue", "--no-monitor")
        return found if found["0c760b5b"]["state"] not in {"PENDING", "RUNNING"} else {}

    found = wait_until(done, "the old queue entry to run", timeout=60)
    assert {sig: r["state"] for sig, r in found.items()} == {
        "0c760b5b": "COMPLETED",
        "3b45fed1": "COMPLETED",
    }
    folder = Path(found["0c760b5b"]["folder"])
    assert len(load_history(folder)) == 3
    attempts = read_job_json(folder)["attempts"]
    assert [a["state"] for a in attempts] == ["COMPLETED"]
    assert not list((old_project / "outputs" / ".pool" / "queue").iterdir())


@needs_slurm()
def test_old_slurm_job_finishes(old_project: Path) -> None:
    """A job submitted (held) by 0.1.0 starts after the upgrade and is recorded as before."""
    dir = old_project / "outputs"
    (jobs,) = (dir / ".slurm" / "jobs").iterdir()
    script = jobs / f"{OLD_JOB}_submission.sh"
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip().split(";")[0]
    # The cluster gave the job another id than it had when the fixture was made: rename what
    # names it, as submitit and the old backend did after their sbatch.
    (jobs / f"{OLD_JOB}_submitted.pkl").rename(jobs / f"{job_id}_submitted.pkl")
    named = [dir / "xps" / "44425b6f" / "job.json", *(dir / ".slurm" / "submissions").iterdir()]
    for path in named:
        path.write_text(path.read_text().replace(f'"{OLD_JOB}"', f'"{job_id}"'))
    (dir / ".slurm" / "state.json").unlink()
    subprocess.run(["scontrol", "release", job_id], check=True)
    folder = dir / "xps" / "44425b6f"

    def ended() -> bool:
        rows(old_project, "oldslurm", "--no-monitor")
        return read_job_json(folder)["state"] in {"COMPLETED", "FAILED", "VANISHED"}

    wait_until(ended, "the old job to end", timeout=120)
    record = read_job_json(folder)
    assert record["state"] == "COMPLETED", record
    assert [a["job_id"] for a in record["attempts"]] == [job_id]
    assert len(load_history(folder)) == 2
