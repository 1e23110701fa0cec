"""The MPI backend under real ranks (``mpiexec`` from the mpich wheel) and its pure parts.

These tests need mpi4py and an ``mpiexec`` next to the interpreter (``pip install
gridman[mpi]``). On a machine without them they skip with the reason; CI installs the extra and
sets GRIDMAN_REQUIRE_MPI=1, which turns a missing runtime into a failure instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gridman import testing
from gridman.backends import mpi
from gridman.errors import UsageError
from gridman.testing.grids import make_grid_project, process_alive, wait_for

BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"
GRIDMAN = BIN / "gridman"


needs_mpi = testing.needs_mpi()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    return env


def _mpirun(
    root: Path, n: int, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    command = [str(MPIEXEC), "-n", str(n), str(GRIDMAN), "grid", *args]
    return subprocess.run(
        command, cwd=root, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _rows(stdout: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(stdout)}


def _attempts(row: dict[str, Any]) -> list[dict[str, Any]]:
    data = json.loads((Path(row["folder"]) / "job.json").read_text())
    return list(data["attempts"])


MIXED = """
for seed in range(5):
    launcher(seed=seed)
launcher(seed=100, fail=True)
launcher(seed=101, crash=True)
"""


@needs_mpi
@pytest.mark.parametrize("ranks", [3, 4])  # 4 ranks on 2 cores: oversubscribed
def test_grid_with_failing_and_crashing_xps(tmp_path: Path, ranks: int) -> None:
    root = make_grid_project(tmp_path / "p", {"mixed": MIXED})
    result = _mpirun(root, ranks, "mixed", "--json")
    assert result.returncode == 1, result.stderr  # some XPs failed
    assert "backend mpi" in result.stderr and "MPI job" in result.stderr
    rows = _rows(result.stdout)
    assert len(rows) == 7
    by_seed = {int(n.split()[0].split("=")[1]): row for n, row in rows.items()}
    failed = {seed for seed, row in by_seed.items() if row["state"] != "COMPLETED"}
    assert failed == {100, 101}
    assert by_seed[100]["state"] == by_seed[101]["state"] == "FAILED"
    assert _attempts(by_seed[100])[-1]["exit_code"] == 1  # the user's exception
    assert _attempts(by_seed[101])[-1]["exit_code"] == -signal.SIGKILL  # the hard crash
    for seed in range(5):
        (attempt,) = _attempts(by_seed[seed])
        assert attempt["state"] == "COMPLETED" and attempt["backend"] == "mpi"
        assert by_seed[seed]["metrics"]["epoch"] == 1
    # XP output goes to the XP's log, not to mpiexec's console
    assert "planned failure" not in result.stdout + result.stderr
    log = Path(by_seed[100]["folder"]) / "log" / "1.log"
    assert "planned failure" in log.read_text()


@needs_mpi
def test_killed_allocation_then_rerun_finishes_without_redoing(tmp_path: Path) -> None:
    body = "for seed in range(6):\n    launcher(seed=seed, sleep=1.0)"
    root = make_grid_project(tmp_path / "p", {"slow": body})
    xps = root / "outputs" / "xps"
    command = [str(MPIEXEC), "-n", "3", str(GRIDMAN), "grid", "slow", "--no-monitor"]
    proc = subprocess.Popen(
        command, cwd=root, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip

    def completed() -> int:
        states = [_state(f) for f in xps.glob("*")] if xps.exists() else []
        return sum(s == "COMPLETED" for s in states)

    wait_for(lambda: completed() >= 2, "two XPs to complete", timeout=60)
    # The allocation dies: mpiexec, its ranks and the XPs they run (as Slurm's cgroup would).
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # An XP whose process had started but not yet recorded RUNNING when its rank died records
    # it a moment later: look again until one scan finds nothing left to kill.
    for _ in range(10):
        pids = [_latest(f).get("pid") for f in xps.glob("*") if _state(f) == "RUNNING"]
        live = [pid for pid in pids if pid and process_alive(pid)]
        for pid in live:
            _kill(pid)
        time.sleep(0.5)
        if not live:
            break
    done_before = {f.name for f in xps.glob("*") if _state(f) == "COMPLETED"}
    assert 2 <= len(done_before) < 6

    # A plain command shows what finished and what was lost.
    shown = subprocess.run([str(GRIDMAN), "grid", "slow", "--json", "--dry-run"], cwd=root,
                           env=_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    states = {row["sig"]: row["state"] for row in json.loads(shown.stdout)}
    assert {states[s] for s in done_before} == {"COMPLETED"}
    lost = {s for s, st in states.items() if s not in done_before}
    assert lost and {states[s] for s in lost} <= {"VANISHED", "COMPLETED"}, states

    rerun = _mpirun(root, 3, "slow", "--retry", "--json")
    assert rerun.returncode == 0, rerun.stderr
    rows = json.loads(rerun.stdout)
    assert {row["state"] for row in rows} == {"COMPLETED"}
    for row in rows:
        attempts = _attempts(row)
        if row["sig"] in done_before:
            assert len(attempts) == 1  # finished XPs were not redone


def _latest(folder: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((folder / "job.json").read_text())["attempts"][-1])
    except (OSError, ValueError, IndexError, KeyError):
        return {}


def _state(folder: Path) -> str:
    return str(_latest(folder).get("state"))


def _kill(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
            break
        except (ProcessLookupError, PermissionError):
            continue
    time.sleep(0.1)


@needs_mpi
def test_mpi_backend_outside_mpiexec_says_how_to_launch(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "p", {"g": "launcher(seed=1)"})
    result = subprocess.run([str(GRIDMAN), "grid", "g", "--backend", "mpi"], cwd=root,
                            env=_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "mpiexec -n" in result.stderr
    assert not (root / "outputs" / "xps").exists() or not any((root / "outputs" / "xps").iterdir())


def test_missing_mpi4py_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails as if not installed
    with pytest.raises(UsageError) as info:
        mpi.comm_world()
    assert "gridman[mpi]" in str(info.value)


def test_cancel_of_an_allocations_xps_says_why(tmp_path: Path) -> None:
    from gridman.backends.base import LaunchContext
    from gridman.core.jobs import JobRecord, State

    ctx = LaunchContext(root=tmp_path, dir=tmp_path, main_spec="train.py", env={})
    record = JobRecord("abcd1234").with_new_attempt("mpi", State.RUNNING)
    with pytest.raises(UsageError) as info:
        mpi.MPIBackend(ctx).cancel([(tmp_path / "abcd1234", record)])
    assert "allocation" in str(info.value) and "mpiexec" in str(info.value)


@pytest.mark.parametrize(
    ("local", "want", "settings", "expected"),
    [
        ("0", 1, {"gpus": [0, 1]}, ["0"]),
        ("1", 1, {"gpus": [0, 1]}, ["1"]),
        ("3", 1, {"gpus": [0, 1]}, ["1"]),  # ranks on a node share its GPUs round robin
        ("1", 2, {"gpus": [0, 1, 2, 3]}, ["2", "3"]),
        ("1", 0, {"gpus": [0, 1]}, []),  # an XP that asks for none sees none
        ("1", 1, {"gpus": [0, 1], "bind_gpus": False}, []),
        ("1", 1, {"gpus": []}, []),
    ],
)
def test_gpu_binding_by_local_rank(
    monkeypatch: pytest.MonkeyPatch, local: str, want: int, settings: Any, expected: list[str]
) -> None:
    monkeypatch.setenv("MPI_LOCALRANKID", local)
    task = {"gpus": want, "settings": settings, "env": {}}
    assert mpi.rank_gpus(task) == expected


def test_xp_environment_drops_the_launchers_variables() -> None:
    env = {"PMI_RANK": "0", "PMI_SIZE": "3", "MPI_LOCALRANKID": "0", "HOME": "/root", "X": "1"}
    assert mpi.xp_environment(env) == {"HOME": "/root", "X": "1"}


def test_mpiexec_chooses_the_mpi_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gridman.api.grid import choose_backend
    from gridman.core.project import Project

    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "4")
    name, reason = choose_backend(Project(root=tmp_path), None)
    assert name == "mpi" and "4 ranks" in reason
    assert choose_backend(Project(root=tmp_path), "local")[0] == "local"  # --backend wins
