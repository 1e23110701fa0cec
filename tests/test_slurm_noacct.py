"""The Slurm backend on a cluster without accounting (no slurmdbd: ``sacct`` fails).

The module switches the local cluster (scripts/local-slurm.sh) to ``--no-accounting`` and back.
It only does so on the cluster that script manages; elsewhere it skips with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gridman.testing import run_cli
from gridman.testing.grids import (
    attempts_of,
    job_state,
    make_grid_project,
    parse_json_rows,
    wait_states,
    write_grid,
)
from gridman.testing.slurm import (
    accounting_works,
    cancel_all,
    local_slurm,
    needs_slurm,
    queue_states,
    script_cluster,
    wait_until,
)

pytestmark = [
    needs_slurm(),
    pytest.mark.skipif(not script_cluster(), reason="the cluster is not scripts/local-slurm.sh's"),
]


@pytest.fixture(scope="module", autouse=True)
def no_accounting() -> Iterator[None]:
    local_slurm("up", "--no-accounting")
    try:
        yield
    finally:
        local_slurm("up")  # back to the accounting cluster the other tests use


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    path = make_grid_project(tmp_path / "proj", settings={"backend": "slurm"})
    yield path
    cancel_all(path / "outputs")


def test_completed_failed_and_cancelled_states_without_sacct(root: Path, tmp_path: Path) -> None:
    assert not accounting_works()  # the mode under test
    hold = tmp_path / "hold"
    hold.touch()
    write_grid(root, "g", f"""
        launcher(seed=1)
        launcher(seed=2, fail=True)
        launcher(seed=3, hold={str(hold)!r})
        launcher.slurm(sbatch_args={{"hold": ""}})(seed=4)
    """)  # fmt: skip
    result = run_cli(["grid", "g", "--no-monitor", "--json"], root)
    folders = [Path(r["folder"]) for r in parse_json_rows(result.stdout)]
    wait_states(folders[:2], {"COMPLETED", "FAILED"}, timeout=90)
    wait_states(folders[2:3], {"RUNNING"}, timeout=60)
    result = run_cli(["grid", "g", "-C", "--no-monitor"], root)
    assert result.exit_code == 1, result.output  # cancelled XPs are not fine
    rows = parse_json_rows(run_cli(["grid", "g", "--no-monitor", "--json"], root).stdout)
    assert [r["state"] for r in rows] == ["COMPLETED", "FAILED", "CANCELLED", "CANCELLED"]
    assert attempts_of(folders[1])[-1]["exit_code"] == 1
    jobs = [str(attempts_of(f)[-1]["job_id"]) for f in folders[2:]]
    wait_until(lambda: all(queue_states().get(j) in (None, "CANCELLED") for j in jobs),
               "the cancelled jobs to leave the queue")  # fmt: skip
    assert [job_state(f) for f in folders] == ["COMPLETED", "FAILED", "CANCELLED", "CANCELLED"]


def test_retry_without_accounting(root: Path) -> None:
    write_grid(root, "g", "launcher(seed=5, fail=True)\nlauncher(seed=6)")
    rows = parse_json_rows(run_cli(["grid", "g", "--no-monitor", "--json"], root).stdout)
    folders = [Path(r["folder"]) for r in rows]
    wait_states(folders, {"COMPLETED", "FAILED"}, timeout=90)
    result = run_cli(["grid", "g", "-r", "--no-monitor"], root)
    assert "1 resubmit" in result.stdout or "1 submit" in result.stdout, result.output
    wait_until(lambda: len(attempts_of(folders[0])) == 2, "the retry")
    wait_states(folders[:1], {"FAILED"}, timeout=90)
    assert len(attempts_of(folders[1])) == 1
