"""The plan says what each XP's job will ask for (issue 16): ``--dry-run`` prints nodes, tasks
per node, GPUs per node, CPUs per task and memory once per distinct request, and ``--json``
rows carry them under ``resources`` with Slurm's option names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gridman.testing import run_cli
from gridman.testing.grids import make_grid_project, parse_json_rows

GRID = """\
big = launcher.slurm(gpus=16, cpus_per_gpu=4, mem_per_gpu=10)
big(lr=0.1)
big(lr=0.2)
launcher.slurm(gpus=2, one_task_per_node=True)(lr=0.3)
launcher(lr=0.4)
"""


def test_dry_run_shows_what_each_job_asks(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj", {"big": GRID})
    dry = run_cli(["grid", "big", "--dry-run", "--backend", "local"], root)
    assert dry.exit_code == 0, dry.output
    asks = [line.strip() for line in dry.stderr.splitlines() + dry.stdout.splitlines()
            if line.strip().startswith("asks")]  # fmt: skip
    assert (
        "asks     2 XPs: nodes=2 ntasks_per_node=8 gpus_per_node=8 cpus_per_task=4 mem=80G" in asks
    )
    assert "asks     1 XP: nodes=1 ntasks_per_node=1 gpus_per_node=2" in asks
    assert "asks     1 XP: nodes=1 ntasks_per_node=1 gpus_per_node=0" in asks  # a CPU XP: 1 task
    rows = parse_json_rows(run_cli(["grid", "big", "--dry-run", "--json"], root).stdout)
    by_lr = {r["argv"][-1]: r["resources"] for r in rows}
    assert by_lr["--lr=0.1"] == {"nodes": 2, "ntasks_per_node": 8, "gpus_per_node": 8,
                                 "cpus_per_task": 4, "mem": "80G"}  # fmt: skip
    assert by_lr["--lr=0.3"]["ntasks_per_node"] == 1 and by_lr["--lr=0.3"]["gpus_per_node"] == 2
    assert by_lr["--lr=0.4"]["gpus_per_node"] == 0


def test_max_gpus_per_node_of_the_project_is_used(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj", {"big": GRID},
                             settings={"slurm": {"max_gpus_per_node": 4}})  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "gridman", "grid", "big", "--dry-run", "--json",
                           "--backend", "local"], cwd=root, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)[0]["resources"]
    assert (first["nodes"], first["ntasks_per_node"], first["gpus_per_node"]) == (4, 4, 4)
