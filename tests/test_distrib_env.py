"""gridman.distrib: the torch environment of every rank, from a launcher or from Slurm (issue 16).

The derivation is pure and tested on environments as Slurm writes them (seen on the local
cluster: ``SLURM_STEP_TASKS_PER_NODE=2``, ``SLURM_JOB_NODELIST=localhost``...); then for real:
a 2-task job on the local cluster prints every rank's values, and, where a Python with torch
is at hand, 2 ranks do a gloo ``all_reduce`` through ``gridman.distrib.init()``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

import gridman
from gridman import distrib
from gridman.distrib import derive_env, expand_nodelist, master_port
from gridman.errors import UsageError
from gridman.testing.slurm import needs_slurm

REPO = Path(__file__).resolve().parents[1]


def slurm_task(procid: int, localid: int, nodeid: int, **more: str) -> dict[str, str]:
    """A task of job 1234: 2 nodes of 4 tasks (sbatch --nodes=2 --ntasks-per-node=4; srun)."""
    env = {"SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(nodeid),
           "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_TASKS_PER_NODE": "4(x2)",
           "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_JOB_NODELIST": "gpu[07-08]",
           "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "1234"}  # fmt: skip
    return {**env, **more}


def test_one_process_outside_any_launch() -> None:
    assert derive_env({}) == {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                              "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                              "MASTER_PORT": "29500"}  # fmt: skip


def test_a_launch_that_set_the_variables_keeps_them() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "4242"}  # fmt: skip
    assert derive_env(env) == env
    # local rank missing: one node, as Dora assumes; the master's defaults as torchrun's
    assert derive_env({"RANK": "2", "WORLD_SIZE": "3"}) == {
        "RANK": "2", "WORLD_SIZE": "3", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "3",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}  # fmt: skip
    # a launcher's variables win over Slurm's (torchrun or the local pool inside an allocation)
    assert derive_env({**slurm_task(5, 1, 1), "RANK": "0", "WORLD_SIZE": "1"})["WORLD_SIZE"] == "1"


def test_slurm_ranks_agree_on_the_master_without_talking() -> None:
    ranks = [derive_env(slurm_task(p, p % 4, p // 4)) for p in range(8)]
    assert [r["RANK"] for r in ranks] == [str(p) for p in range(8)]
    assert [r["LOCAL_RANK"] for r in ranks] == ["0", "1", "2", "3"] * 2
    assert {r["WORLD_SIZE"] for r in ranks} == {"8"} and {r["LOCAL_WORLD_SIZE"] for r in ranks} == {
        "4"
    }
    assert {(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in ranks} == {("gpu07", "21234")}
    # the job's variables alone (no step ones), and a user's MASTER_PORT wins
    job_only = {k: v for k, v in slurm_task(6, 2, 1).items() if "STEP" not in k}
    assert derive_env({**job_only, "SLURM_NTASKS_PER_NODE": "4", "MASTER_PORT": "7"}) == {
        "RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4",
        "MASTER_ADDR": "gpu07", "MASTER_PORT": "7"}  # fmt: skip


def test_uneven_tasks_per_node() -> None:
    env = slurm_task(6, 0, 3, SLURM_STEP_TASKS_PER_NODE="2(x3),1", SLURM_STEP_NUM_TASKS="7")
    assert derive_env(env)["LOCAL_WORLD_SIZE"] == "1" and derive_env(env)["WORLD_SIZE"] == "7"
    env = slurm_task(2, 0, 1, SLURM_STEP_TASKS_PER_NODE="2(x3),1", SLURM_STEP_NUM_TASKS="7")
    assert derive_env(env)["LOCAL_WORLD_SIZE"] == "2"


@pytest.mark.parametrize(("nodelist", "hosts"), [
    ("localhost", ["localhost"]),
    ("node[01-04,7]", ["node01", "node02", "node03", "node04", "node7"]),
    ("a1,b[9-11],c", ["a1", "b9", "b10", "b11", "c"]),
    ("r[1-2]-n[08-09]", ["r1-n08", "r1-n09", "r2-n08", "r2-n09"]),
    ("gpu-a100-[003]", ["gpu-a100-003"]),
])  # fmt: skip
def test_node_lists_expand_as_slurm_writes_them(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts


def test_ports_are_deterministic_and_spread() -> None:
    ports = [master_port(str(i)) for i in range(1000, 1100)]
    assert len(set(ports)) == 100 and all(20000 <= p < 32768 for p in ports)
    assert master_port("1234") == master_port("1234") == 21234
    assert 20000 <= master_port("not-a-number") < 32768


@pytest.mark.parametrize(("env", "message"), [
    ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "rank 2 is outside a world of 2"),
    ({**slurm_task(0, 0, 0), "SLURM_STEP_NODELIST": "n[1-"}, "cannot read the Slurm node list"),
    ({**slurm_task(0, 0, 0), "SLURM_STEP_TASKS_PER_NODE": "4(y2)"}, "SLURM_TASKS_PER_NODE"),
])  # fmt: skip
def test_malformed_variables_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        derive_env(env)


def test_this_process_and_init_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (*distrib.TORCH_KEYS, "SLURM_PROCID", "DORA_FORCE_DISTRIB"):
        monkeypatch.delenv(key, raising=False)
    assert (distrib.rank(), distrib.world_size(), distrib.is_master()) == (0, 1, True)
    assert distrib.init() is False  # one process: nothing to start, torch not needed
    assert "LOCAL_RANK" not in os.environ  # and nothing set
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (distrib.rank(), distrib.local_rank(), distrib.local_world_size()) == (1, 1, 2)
    assert not distrib.is_master() and gridman.distrib is distrib
    if importlib.util.find_spec("torch") is not None:
        return  # this venv has torch: the error cannot happen
    with pytest.raises(UsageError, match="needs torch for a world of 2 processes"):
        distrib.init()


def test_importing_gridman_and_distrib_never_imports_torch() -> None:
    code = ("import sys, gridman; gridman.distrib.rank(); gridman.distrib.init(); "
            "print('torch' in sys.modules)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in distrib.TORCH_KEYS}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr


# -- for real, on the local Slurm cluster ---------------------------------------------------
def torch_python() -> Optional[str]:
    """A Python with torch: $GRIDMAN_TORCH_PYTHON, this one, or bench/dora_env.sh's venv."""
    for python in (os.environ.get("GRIDMAN_TORCH_PYTHON"), sys.executable,
                   "/tmp/dora-venv/bin/python"):  # fmt: skip
        if python and Path(python).exists():
            done = subprocess.run([python, "-c", "import torch.distributed"], capture_output=True,
                                  timeout=120)  # fmt: skip
            if done.returncode == 0:
                return python
    return None


PRINT_RANK = (
    "import json, os; from gridman import distrib; "
    "print(json.dumps({'rank': distrib.rank(), 'world': distrib.world_size(), "
    "'local': distrib.local_rank(), 'local_world': distrib.local_world_size(), "
    "'master': distrib.is_master(), 'env': distrib.set_env(), 'job': os.environ['SLURM_JOB_ID'], "
    "'nodes': os.environ['SLURM_JOB_NODELIST']}))"
)

ALL_REDUCE = (
    "import json, torch, torch.distributed as dist; from gridman import distrib; "
    "started = distrib.init(); t = torch.tensor([distrib.rank() + 1.0]); dist.all_reduce(t); "
    "print(json.dumps({'started': started, 'rank': dist.get_rank(), 'sum': t.item(), "
    "'world': distrib.world_size()})); dist.destroy_process_group()"
)


def run_ranks(tmp_path: Path, python: str, code: str, ntasks: int = 2) -> list[dict[str, object]]:
    """``srun`` ``ntasks`` copies of ``code`` in one batch job; each rank's JSON line."""
    (tmp_path / "rank.py").write_text(code + "\n")
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --ntasks={ntasks} --time=3\n"
                      f"srun {python} {tmp_path / 'rank.py'}\n")  # fmt: skip
    out = tmp_path / "job.out"
    env = {k: v for k, v in os.environ.items() if k not in distrib.TORCH_KEYS}
    env["PYTHONPATH"] = str(REPO)  # gridman importable by any Python (the torch one too)
    done = subprocess.run(["sbatch", "--parsable", "--wait", f"--output={out}", str(script)],
                          capture_output=True, text=True, timeout=180, env=env,
                          cwd=tmp_path)  # fmt: skip
    text = out.read_text() if out.exists() else ""
    assert done.returncode == 0, done.stderr + text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) == ntasks, text
    return sorted(lines, key=lambda r: int(str(r["rank"])))


@needs_slurm()
def test_a_two_task_slurm_job_sees_two_ranks_that_agree(tmp_path: Path) -> None:
    ranks = run_ranks(tmp_path, sys.executable, PRINT_RANK)
    assert [r["rank"] for r in ranks] == [0, 1] and [r["local"] for r in ranks] == [0, 1]
    assert [r["world"] for r in ranks] == [2, 2] and [r["local_world"] for r in ranks] == [2, 2]
    assert [r["master"] for r in ranks] == [True, False]
    envs = [r["env"] for r in ranks]
    assert isinstance(envs[0], dict) and isinstance(envs[1], dict)
    first_host = expand_nodelist(str(ranks[0]["nodes"]))[0]  # "localhost" on the local cluster
    assert envs[0]["MASTER_ADDR"] == envs[1]["MASTER_ADDR"] == first_host
    assert (
        envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] == str(master_port(str(ranks[0]["job"])))
    )


@needs_slurm()
def test_two_slurm_ranks_all_reduce_through_distrib_init(tmp_path: Path) -> None:
    python = torch_python()
    if python is None:
        pytest.skip("no Python with torch here (set GRIDMAN_TORCH_PYTHON, or bench/dora_env.sh)")
    ranks = run_ranks(tmp_path, python, ALL_REDUCE)
    assert [(r["started"], r["rank"], r["sum"], r["world"]) for r in ranks] == [
        (True, 0, 3.0, 2), (True, 1, 3.0, 2)]  # fmt: skip
