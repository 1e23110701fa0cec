"""The Slurm request of an XP is the one Dora made for the same resources (issue 16).

GOLDEN holds what Dora 0.1.13's own ``Shepherd._get_submitit_executor`` passed to submitit,
measured once in the Dora venv (``bench/dora_env.sh``) with:

    /tmp/dora-venv/bin/python - <<'EOF'
    import json, tempfile
    from pathlib import Path
    from dora.conf import SlurmConfig
    from dora.shep import Shepherd
    cases = [dict(gpus=0), dict(gpus=1), dict(gpus=2), dict(gpus=8), dict(gpus=16),
             dict(gpus=64), dict(gpus=4, one_task_per_node=True),
             dict(gpus=16, one_task_per_node=True), dict(gpus=0, one_task_per_node=True),
             dict(gpus=16, cpus_per_gpu=4, mem_per_gpu=12.5), dict(gpus=2, cpus_per_task=3),
             dict(gpus=3), dict(gpus=12)]
    for case in cases:
        try:
            ex = Shepherd._get_submitit_executor(None, "n", Path(tempfile.mkdtemp()),
                                                 SlurmConfig(**case))
            p = ex.parameters
            print(json.dumps({"in": case, "out": {k: p.get(k) for k in
                  ("nodes", "ntasks_per_node", "gres", "cpus_per_task", "mem")}}))
        except Exception as e:
            print(json.dumps({"in": case, "error": f"{type(e).__name__}: {e}"}))
    EOF

Dora's SlurmConfig defaults ``cpus_per_gpu=10`` and ``mem_per_gpu=40`` (GB); gridman has no
site defaults, so the same values are passed explicitly here. Dora asks ``--gres=gpu:N``
where gridman asks ``--gpus-per-node=N`` (the same GPUs), and writes memory as ``"80GB"``
(``"100.0GB"`` for a fractional size, which sbatch rejects); sizes are compared in MB.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import pytest

from gridman.backends import LaunchContext, Submission, slurm
from gridman.backends.slurm import SlurmBackend, _check_values, sbatch_parameters
from gridman.core.resources import Resources, SlurmRequest, slurm_request, slurm_size_gb
from gridman.errors import UsageError

DORA_DEFAULTS = {"cpus_per_gpu": 10, "mem_per_gpu": 40}

# (Dora's SlurmConfig arguments, what Dora passed: nodes, ntasks_per_node, gres, cpus, mem)
GOLDEN: list[tuple[dict[str, Any], tuple[int, int, Optional[str], int, str]]] = [
    ({"gpus": 0}, (1, 1, None, 10, "40GB")),
    ({"gpus": 1}, (1, 1, "gpu:1", 10, "40GB")),
    ({"gpus": 2}, (1, 2, "gpu:2", 10, "80GB")),
    ({"gpus": 3}, (1, 3, "gpu:3", 10, "120GB")),
    ({"gpus": 8}, (1, 8, "gpu:8", 10, "320GB")),
    ({"gpus": 16}, (2, 8, "gpu:8", 10, "320GB")),
    ({"gpus": 64}, (8, 8, "gpu:8", 10, "320GB")),
    ({"gpus": 4, "one_task_per_node": True}, (1, 1, "gpu:4", 40, "160GB")),
    ({"gpus": 16, "one_task_per_node": True}, (2, 1, "gpu:8", 80, "320GB")),
    ({"gpus": 0, "one_task_per_node": True}, (1, 1, None, 10, "40GB")),
    ({"gpus": 16, "cpus_per_gpu": 4, "mem_per_gpu": 12.5}, (2, 8, "gpu:8", 4, "100.0GB")),
    ({"gpus": 2, "cpus_per_task": 3}, (1, 2, "gpu:2", 3, "80GB")),
]
# Dora: {"in": {"gpus": 12}, "error": "ValueError: Can only take <= 8 gpus, or multiple of 8 gpus"}


def megabytes(size: str) -> float:
    """A Slurm size (``80G``, ``80GB``, ``7680M``, ``100.0GB``) in MB (G = 1024 M)."""
    match = re.fullmatch(r"([0-9.]+)([MG])B?", size)
    assert match, size
    return float(match[1]) * (1024 if match[2] == "G" else 1)


@pytest.mark.parametrize(("dora_in", "dora_out"), GOLDEN, ids=[str(g[0]) for g in GOLDEN])
def test_request_matches_dora(
    dora_in: dict[str, Any], dora_out: tuple[int, int, Optional[str], int, str]
) -> None:
    nodes, tasks, gres, cpus, mem = dora_out
    request = slurm_request(Resources().with_changes({**DORA_DEFAULTS, **dora_in}))
    assert (request.nodes, request.ntasks_per_node, request.cpus_per_task) == (nodes, tasks, cpus)
    assert request.gpus_per_node == (int(gres.split(":")[1]) if gres else 0)
    assert request.mem is not None and megabytes(request.mem) == megabytes(mem)
    assert re.fullmatch(r"[0-9]+[MG]", request.mem)  # a size sbatch takes ("100.0GB" is not)


def test_dora_sizes_become_slurm_sizes() -> None:
    assert [slurm_size_gb(g) for g in (40, 320, 100.0, 7.5, 0.25)] == [
        "40G", "320G", "100G", "7680M", "256M",
    ]  # fmt: skip


def test_a_gpu_count_that_fills_no_whole_nodes_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match=r"gpus=12 cannot be spread") as error:
        slurm_request(Resources(gpus=12))
    assert "8 or 16" in str(error.value.hint) and "max_gpus_per_node" in str(error.value.hint)
    # nodes of 4 GPUs: 12 fills three of them
    assert slurm_request(Resources(gpus=12), max_gpus_per_node=4) == SlurmRequest(3, 4, 4)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(UsageError, match="max_gpus_per_node must be a positive integer"):
            slurm_request(Resources(gpus=1), bad)  # type: ignore[arg-type]


def test_no_site_defaults_and_raw_mem_wins() -> None:
    assert slurm_request(Resources()) == SlurmRequest(1, 1, 0, None, None)
    assert slurm_request(Resources()).tasks == 1
    request = slurm_request(Resources(gpus=16, mem="500G", mem_per_gpu=40))
    assert request.mem == "500G" and request.tasks == 16
    assert request.to_json() == {"nodes": 2, "ntasks_per_node": 8, "gpus_per_node": 8,
                                 "cpus_per_task": None, "mem": "500G"}  # fmt: skip


def test_backend_passes_the_request_to_submitit_with_its_node_size() -> None:
    res = Resources(gpus=16, cpus_per_gpu=10, mem_per_gpu=40)
    params = sbatch_parameters(res, "n", 90)
    assert {k: params[k] for k in ("nodes", "ntasks_per_node", "gpus_per_node",
                                   "cpus_per_task", "mem")} == {
        "nodes": 2, "ntasks_per_node": 8, "gpus_per_node": 8, "cpus_per_task": 10, "mem": "320G",
    }  # fmt: skip
    four = sbatch_parameters(res, "n", 90, max_gpus_per_node=4)
    assert (four["nodes"], four["ntasks_per_node"], four["mem"]) == (4, 4, "160G")
    single = sbatch_parameters(Resources(gpus=1), "n", 90)
    assert (single["nodes"], single["ntasks_per_node"], single["gpus_per_node"]) == (1, 1, 1)
    raw = sbatch_parameters(Resources(mem_per_gpu=8, sbatch_args=(("mem", "1G"),)), "n", 90)
    assert "mem" not in raw and raw["additional_parameters"] == {"mem": "1G"}


def test_max_gpus_per_node_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _check_values({"max_gpus_per_node": 4})
    for bad in (0, "8", True, 1.5):
        with pytest.raises(UsageError, match="max_gpus_per_node must be a positive integer"):
            _check_values({"max_gpus_per_node": bad})
    monkeypatch.setattr(slurm.shutil, "which", lambda tool: f"/usr/bin/{tool}")  # any machine
    ctx = LaunchContext(root=tmp_path, dir=tmp_path / "outputs", main_spec="train.py", env={},
                        settings={"max_gpus_per_node": 4}, python="python3")  # fmt: skip
    backend = SlurmBackend(ctx)
    backend.check([Submission(f"0000000{g}", tmp_path / str(g), (), Resources(gpus=g))
                   for g in (4, 8)])  # fmt: skip
    with pytest.raises(UsageError, match=r"gpus=6 cannot be spread over whole nodes of 4"):
        backend.check([Submission("0000000b", tmp_path / "b", (), Resources(gpus=6))])
