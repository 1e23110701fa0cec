"""Distributed XPs on the real local Slurm cluster (issue 16).

An XP asking ``gpus=2`` is one job of 2 tasks (one per GPU); every task runs the XP as one
rank with torch's variables from Slurm; only rank 0 takes the run lock, records the attempt
and writes the history; rank 1 logs to ``log/<n>.rank1.log``. Killing one rank fails the XP
with that rank and exit code and ends the other (``--kill-on-bad-exit``), and a timeout
warning requeues the 2-task job, which resumes. The main is ``examples/train_ddp.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_distrib_local import EXAMPLE, needs_torch, ranks_seen

from gridman.core.link import load_history
from gridman.testing import run_cli
from gridman.testing.grids import (
    attempts_of,
    make_grid_project,
    parse_json_rows,
    process_alive,
    read_job_json,
    wait_states,
    write_grid,
)
from gridman.testing.slurm import (
    cancel_all,
    needs_slurm,
    release,
    submission_scripts,
    wait_until,
)

pytestmark = needs_slurm()


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = make_grid_project(tmp_path / "proj", main_source=EXAMPLE.read_text(),
                             settings={"backend": "slurm"})  # fmt: skip
    yield path
    cancel_all(path / "outputs")


def grid(root: Path, body: str) -> list[Path]:
    write_grid(root, "g", body)
    result = run_cli(["grid", "g", "--no-monitor", "--json"], root)
    assert result.exit_code == 0, result.output
    return [Path(r["folder"]) for r in parse_json_rows(result.stdout)]


def attempt(folder: Path) -> dict[str, Any]:
    return attempts_of(folder)[-1]


@needs_torch
def test_two_gpu_xp_runs_as_two_ranks_with_a_real_all_reduce(root: Path) -> None:
    (folder,) = grid(root, "launcher.slurm(gpus=2, time=5)(steps=3)")
    wait_states([folder], {"COMPLETED"}, timeout=60)
    seen = ranks_seen(folder)
    assert sorted(seen) == [0, 1]
    for rank, info in seen.items():
        assert (info["rank"], info["world"], info["local_rank"], info["local_world"]) == (
            rank, 2, rank, 2)  # fmt: skip
        assert info["allreduce"] == 3.0 and info["master"] == seen[0]["master"]
    assert [h["step"] for h in load_history(folder)] == [0, 1, 2]  # each push once
    (script,) = submission_scripts(root / "outputs")
    assert "--kill-on-bad-exit=1" in script
    done = attempt(folder)
    assert done["extra"]["ranks"] == 2 and len(attempts_of(folder)) == 1
    assert "rank 1 done" in (folder / "log" / "1.rank1.log").read_text()


def test_killing_one_rank_fails_the_xp_and_ends_the_other(root: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    (folder,) = grid(root, f"launcher.slurm(gpus=2, time=5)(no_torch=True, hold={str(hold)!r})")
    wait_until(lambda: len(ranks_seen(folder)) == 2, "both ranks", timeout=60)
    seen = ranks_seen(folder)
    assert [seen[r]["rank"] for r in (0, 1)] == [0, 1] and seen[1]["world"] == 2
    os.kill(seen[1]["pid"], signal.SIGKILL)
    wait_states([folder], {"FAILED"}, timeout=30)
    failed = attempt(folder)
    assert failed["exit_code"] == -signal.SIGKILL and failed["extra"]["failed_rank"] == 1
    wait_until(lambda: not process_alive(seen[0]["pid"]), "rank 0 to end", timeout=30)


def test_timeout_requeue_of_a_two_task_xp_resumes_it(root: Path) -> None:
    # time=1: any warning comes within signal_delay_s of the limit, so it is a timeout.
    (folder,) = grid(root, "launcher.slurm(gpus=2, time=1)(no_torch=True, sleep_once=600)")
    wait_until(lambda: all((folder / f"slept-once.{r}").exists() for r in (0, 1)), "sleeping")
    job = str(read_job_json(folder)["job_id"])
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    wait_until(lambda: len(attempts_of(folder)) == 2, "the requeue", timeout=60)
    first, second = attempts_of(folder)
    assert first["state"] == "TIMEOUT" and second["job_id"] == job
    release(job)
    wait_states([folder], {"COMPLETED"}, timeout=60)
    assert [a["state"] for a in attempts_of(folder)] == ["TIMEOUT", "COMPLETED"]
    assert [h["step"] for h in load_history(folder)] == [0, 1, 2]
    assert json.loads((folder / "ranks" / "1.json").read_text())["world"] == 2
