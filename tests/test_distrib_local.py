"""Distributed XPs on this machine (issue 16): ``gridman run -d/--ws`` and the local pool.

An XP asking ``gpus=k`` runs as k ranks, one per GPU, each seeing the XP's k GPUs with its own
LOCAL_RANK; ``gridman run --ws N`` starts N ranks on CPUs. One attempt, recorded by rank 0;
rank r writes ``log/<n>.rank<r>.log``; a dying rank stops the others and fails the XP with its
rank and exit code. The main is ``examples/train_ddp.py`` (a real gloo all_reduce and DDP when
torch is installed), and the MPI backend refuses XPs that need several ranks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gridman.backends.base import Submission
from gridman.backends.mpi import refuse_distributed
from gridman.core.link import load_history
from gridman.core.resources import Resources
from gridman.errors import UsageError
from gridman.testing import run_cli
from gridman.testing.grids import (
    make_grid_project,
    parse_json_rows,
    process_alive,
    stop_pool,
    wait_for,
    wait_states,
    write_grid,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_ddp.py"
GRIDMAN = Path(sys.executable).parent / "gridman"


def has_torch() -> bool:
    done = subprocess.run([sys.executable, "-c", "import torch.distributed"],
                          capture_output=True, timeout=120)  # fmt: skip
    return done.returncode == 0


needs_torch = pytest.mark.skipif(
    not has_torch() and not os.environ.get("GRIDMAN_REQUIRE_TORCH"),
    reason="torch is not installed (CI installs it: GRIDMAN_REQUIRE_TORCH=1)",
)


def project(tmp_path: Path, **settings: Any) -> Path:
    return make_grid_project(tmp_path / "proj", main_source=EXAMPLE.read_text(), settings=settings)


def gridman_run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    return subprocess.run([str(GRIDMAN), "run", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def only_xp(root: Path) -> Path:
    (folder,) = (root / "outputs" / "xps").iterdir()
    return folder


def ranks_seen(folder: Path) -> dict[int, dict[str, Any]]:
    return {int(p.stem): json.loads(p.read_text()) for p in (folder / "ranks").glob("*.json")}


def latest_attempt(folder: Path) -> dict[str, Any]:
    attempts: list[dict[str, Any]] = json.loads((folder / "job.json").read_text())["attempts"]
    return attempts[-1]


def grid(root: Path, body: str) -> list[Path]:
    write_grid(root, "g", body)
    result = run_cli(["grid", "g", "--no-monitor", "--json"], root)
    assert result.exit_code == 0, result.output
    return [Path(r["folder"]) for r in parse_json_rows(result.stdout)]


@needs_torch
def test_run_ws_2_does_a_real_all_reduce_in_two_ranks(tmp_path: Path) -> None:
    root = project(tmp_path)
    done = gridman_run(root, "--ws", "2", "--", "--steps", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    folder = only_xp(root)
    seen = ranks_seen(folder)
    assert sorted(seen) == [0, 1]
    for rank, info in seen.items():
        assert (info["rank"], info["world"], info["local_rank"], info["local_world"]) == (
            rank, 2, rank, 2)  # fmt: skip
        assert info["allreduce"] == 3.0 and info["cuda"] == ""  # 1 + 2, on CPUs
    assert seen[0]["weight_sum"] == pytest.approx(seen[1]["weight_sum"])  # DDP kept them equal
    assert seen[0]["master"] == seen[1]["master"]
    assert [h["step"] for h in load_history(folder)] == [0, 1, 2]  # each push once
    attempt = latest_attempt(folder)
    assert attempt["state"] == "COMPLETED" and attempt["extra"]["ranks"] == 2
    assert "rank 1 done" in (folder / "log" / "1.rank1.log").read_text()
    assert "rank 0 done" in (folder / "log" / "1.log").read_text()


def test_a_failing_rank_stops_the_others_and_fails_the_xp(tmp_path: Path) -> None:
    root = project(tmp_path)
    hold = tmp_path / "hold"
    hold.touch()  # rank 0 would wait 60 s: it must be stopped when rank 1 fails
    done = gridman_run(root, "--ws", "2", "--", "--no-torch", "--fail-rank", "1",
                       "--hold", str(hold))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED (exit 3 in rank 1)" in done.stderr
    attempt = latest_attempt(only_xp(root))
    assert attempt["state"] == "FAILED" and attempt["exit_code"] == 3
    assert attempt["extra"]["failed_rank"] == 1
    assert attempt["ended"] - attempt["started"] < 30
    shown = subprocess.run([str(GRIDMAN), "info", "--sig", only_xp(root).name], cwd=root,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 1, shown.stderr  # it shows a failed XP
    assert "(2 ranks, rank r logs to log/1.rank<r>.log) (failed in rank 1)" in shown.stdout


def test_run_d_without_a_gpu_says_to_use_ws(tmp_path: Path) -> None:
    root = project(tmp_path)
    done = subprocess.run([str(GRIDMAN), "run", "-d", "--", "--no-torch"], cwd=root,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--ws" in done.stderr, done.stderr


@needs_torch
def test_pool_runs_a_two_gpu_xp_as_two_ranks(tmp_path: Path) -> None:
    root = project(tmp_path, local={"gpus": [0, 1, 2]})
    try:
        (folder,) = grid(root, "launcher.slurm(gpus=2)(steps=3)")
        wait_states([folder], {"COMPLETED"}, timeout=60)
    finally:
        stop_pool(root / "outputs")
    seen = ranks_seen(folder)
    assert sorted(seen) == [0, 1]
    for rank, info in seen.items():
        assert (info["rank"], info["world"], info["local_rank"]) == (rank, 2, rank)
        assert info["cuda"] == seen[0]["cuda"] and len(info["cuda"].split(",")) == 2
        assert info["allreduce"] == 3.0
    assert [h["step"] for h in load_history(folder)] == [0, 1, 2]
    attempt = latest_attempt(folder)
    assert attempt["extra"]["ranks"] == 2 and attempt["extra"]["gpus"] == seen[0]["cuda"].split(",")


def test_pool_killing_one_rank_fails_the_xp_and_ends_the_other(tmp_path: Path) -> None:
    root = project(tmp_path, local={"gpus": [0, 1]})
    hold = tmp_path / "hold"
    hold.touch()
    try:
        (folder,) = grid(root, f"launcher.slurm(gpus=2)(no_torch=True, hold={str(hold)!r})")
        wait_for(lambda: len(ranks_seen(folder)) == 2, "both ranks", timeout=30)
        seen = ranks_seen(folder)
        os.kill(seen[1]["pid"], signal.SIGKILL)
        wait_states([folder], {"FAILED"}, timeout=30)
    finally:
        stop_pool(root / "outputs")
    attempt = latest_attempt(folder)
    assert attempt["exit_code"] == -signal.SIGKILL and attempt["extra"]["failed_rank"] == 1
    assert not process_alive(seen[0]["pid"])  # rank 0 was stopped, not left holding


def test_mpi_backend_refuses_an_xp_of_several_ranks(tmp_path: Path) -> None:
    def sub(**res: Any) -> Submission:
        return Submission("0000000a", tmp_path / "a", (), Resources().with_changes(res))

    refuse_distributed([sub(gpus=1), sub(gpus=4, one_task_per_node=True)])  # one process each
    with pytest.raises(UsageError, match="gpus=2, one rank per GPU") as err:
        refuse_distributed([sub(gpus=2)])
    assert "one_task_per_node" in (err.value.hint or "")
