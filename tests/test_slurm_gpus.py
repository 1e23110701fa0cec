"""GPU requests on the real local cluster, without a GPU (issue 16).

``scripts/local-slurm.sh up`` declares ``LOCAL_SLURM_GPUS`` (4) GPUs on its node as generic
resources backed by stand-in character devices, so Slurm allocates them and sets
``CUDA_VISIBLE_DEVICES`` as on a GPU node. These tests ask for 2 of them: with sbatch itself,
and through gridman's Slurm backend with an XP asking ``gpus=2``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridman.core.link import load_history
from gridman.testing import run_cli
from gridman.testing.grids import make_grid_project, parse_json_rows, wait_states, write_grid
from gridman.testing.slurm import cancel_all, needs_slurm, script_cluster, submission_scripts

pytestmark = needs_slurm()


def node_gpus() -> int:
    """GPUs the cluster's nodes declare (``sinfo %G``: ``gpu:4``)."""
    done = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=20)
    match = re.search(r"gpu(?::[^:,(\s]+)?:(\d+)", done.stdout)
    return int(match[1]) if match else 0


@pytest.fixture(autouse=True)
def two_gpus() -> None:
    if node_gpus() >= 2:
        return
    if script_cluster():  # our own cluster must have them: a missing gres.conf is a bug
        pytest.fail("the local cluster declares no GPUs: re-run scripts/local-slurm.sh up")
    pytest.skip("this Slurm cluster has no node with 2 GPUs")


def sbatch_wait(script: str, out: Path, timeout: float = 120.0) -> str:
    """Run ``script`` as a batch job, wait for its end, return its output."""
    path = out.with_suffix(".sh")
    path.write_text("#!/bin/bash\n" + script)
    done = subprocess.run(["sbatch", "--parsable", "--wait", f"--output={out}", str(path)],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stderr + out.read_text() if out.exists() else done.stderr
    return out.read_text()


def test_a_job_asking_two_gpus_per_node_sees_two_of_them(tmp_path: Path) -> None:
    output = sbatch_wait(
        "#SBATCH --gpus-per-node=2 --ntasks=2 --time=2\n"
        "srun bash -c 'echo task=$SLURM_PROCID cuda=$CUDA_VISIBLE_DEVICES'\n",
        tmp_path / "job.out",
    )
    seen = dict(re.findall(r"^task=(\d) cuda=(\S*)$", output, re.M))
    assert sorted(seen) == ["0", "1"], output
    for devices in seen.values():
        ids = devices.split(",")
        assert len(ids) == 2 and len(set(ids)) == 2 and all(i.isdigit() for i in ids), output


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = make_grid_project(tmp_path / "proj", settings={"backend": "slurm"})
    yield path
    cancel_all(path / "outputs")


def test_an_xp_asking_two_gpus_gets_them_through_the_backend(root: Path) -> None:
    # one_task_per_node: one process seeing the node's GPUs (one rank per GPU is the part of
    # issue 16 that makes every rank run the XP; this asks the same GPUs).
    write_grid(root, "g", "launcher.slurm(gpus=2, one_task_per_node=True, time=5)(probe=True)")
    result = run_cli(["grid", "g", "--no-monitor", "--json"], root)
    assert result.exit_code == 0, result.output
    rows = parse_json_rows(result.stdout)
    (script,) = submission_scripts(root / "outputs")
    assert "#SBATCH --gpus-per-node=2" in script and "#SBATCH --ntasks-per-node=1" in script
    folder = Path(rows[0]["folder"])
    wait_states([folder], {"COMPLETED"}, timeout=90)
    probe: dict[str, Any] = load_history(folder)[-1]["probe"]
    ids = str(probe["cuda"]).split(",")
    assert len(ids) == 2 and all(i.isdigit() for i in ids), probe


def test_a_gpu_count_no_node_can_hold_fails_before_any_sbatch(root: Path) -> None:
    write_grid(root, "g", "launcher.slurm(gpus=12)(seed=1)")
    result = run_cli(["grid", "g", "--no-monitor"], root)
    assert result.exit_code == 2, result.output
    assert "gpus=12 cannot be spread over whole nodes of 8 GPUs" in result.output
    assert submission_scripts(root / "outputs") == []
