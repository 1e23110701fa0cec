"""The local backend with REAL processes: the detached pool daemon, cancels, vanished XPs, GPU
slots, races. ``gridman grid --no-monitor`` returns at once; tests then poll ``job.json``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from typer.testing import Result

from gridman.backends import local
from gridman.backends.pool import Pool
from gridman.core.fsutil import file_lock
from gridman.core.jobs import JobRecord, State, this_host, write_job
from gridman.core.link import load_history
from gridman.core.liveness import mark_vanished
from gridman.testing import read_json_file, run_cli, xp_folders, xps_dir
from gridman.testing.grids import (
    PROBE_VAR,
    attempt_interval,
    attempts_of,
    daemon_pids,
    job_state,
    kill_daemons,
    kill_group,
    latest_pid,
    lock_waiters,
    make_grid_project,
    max_overlap,
    parse_json_rows,
    process_alive,
    stop_pool,
    wait_for,
    wait_started,
    wait_states,
    write_grid,
)

GRIDMAN = Path(sys.executable).parent / "gridman"
DONE = {"COMPLETED", "FAILED", "CANCELLED", "VANISHED"}


def grid(root: Path, *args: str, **kwargs: Any) -> Result:
    return run_cli(["grid", *args, "--no-monitor"], root, **kwargs)


def schedule(
    root: Path, *args: str, code: Optional[int] = 0, **kwargs: Any
) -> list[dict[str, Any]]:
    """``gridman grid ... --no-monitor --json``; returns the rows (asserting the exit code
    unless ``code`` is None)."""
    result = grid(root, *args, "--json", **kwargs)
    assert code is None or result.exit_code == code, result.output
    return parse_json_rows(result.stdout)


def folders_of(rows: list[dict[str, Any]]) -> list[Path]:
    return [Path(r["folder"]) for r in rows]


def probe(folder: Path) -> dict[str, Any]:
    probe: dict[str, Any] = load_history(folder)[-1]["probe"]
    return probe


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}


def recover(root: Path, name: str, folder: Path) -> None:
    """Once ``folder``'s attempt is VANISHED: the next ``gridman grid`` resubmits it when it
    never started; otherwise ``--retry`` does. Waits for it to complete."""
    if job_state(folder) not in ("PENDING", "RUNNING", "COMPLETED"):
        grid(root, name, "-r")
    wait_states([folder], {"COMPLETED"})


# -- running --------------------------------------------------------------------------------
def test_grid_completes_with_at_most_workers_at_once(root: Path) -> None:
    write_grid(root, "four", "for seed in range(4):\n    launcher(seed=seed, sleep=0.4)")
    started = time.monotonic()
    rows = schedule(root, "four", "--workers", "2")
    assert time.monotonic() - started < 5  # the command does not wait for the XPs
    assert {r["state"] for r in rows} <= {"PENDING", "RUNNING"}
    folders = folders_of(rows)
    wait_states(folders, {"COMPLETED"}, timeout=60)
    assert max_overlap(attempt_interval(f) for f in folders) <= 2
    for folder in folders:
        (attempt,) = attempts_of(folder)
        assert attempt["backend"] == "local" and attempt["exit_code"] == 0
        assert attempt["submitted"] <= attempt["started"] <= attempt["ended"]
        assert "done" in (folder / "log" / "1.log").read_text(encoding="utf8")
    config = read_json_file(root / "outputs" / ".pool" / "config.json")
    assert config["workers"] == 2
    # a later command re-attaches: every XP is kept, and the exit code says all went well
    again = grid(root, "four")
    assert again.exit_code == 0 and "4 keep" in again.stdout
    # the idle daemon goes away by itself
    wait_for(lambda: not daemon_pids(root / "outputs"), "the idle daemon to exit", timeout=15)


def test_failed_xp_is_recorded_with_its_exit_code(root: Path) -> None:
    write_grid(root, "fails", "launcher(fail=True)\nlauncher(seed=1)")
    folders = folders_of(schedule(root, "fails"))
    states = wait_states(folders, DONE, timeout=60)
    assert list(states.values()) == ["FAILED", "COMPLETED"]
    assert attempts_of(folders[0])[-1]["exit_code"] == 1
    assert "RuntimeError: planned failure" in (folders[0] / "log" / "1.log").read_text()
    assert grid(root, "fails").exit_code == 1


def test_monitor_waits_for_the_grid(root: Path) -> None:
    write_grid(root, "mon", "for seed in range(2):\n    launcher(seed=seed, sleep=0.3)")
    result = run_cli(["grid", "mon", "-i", "0.1"], root)  # monitors by default
    assert result.exit_code == 0, result.output
    assert "gridman: 0/2 done" in result.stdout  # progress lines (not a terminal)
    assert "2/2 done" in result.stdout.splitlines()[-1]
    assert [job_state(f) for f in xp_folders(root)] == ["COMPLETED", "COMPLETED"]


def test_tail_follows_the_log_until_the_xp_ends(root: Path) -> None:
    write_grid(root, "tail", "launcher(seed=1, sleep=0.5)")
    (folder,) = folders_of(schedule(root, "tail"))
    result = run_cli(["grid", "tail", "-t", "0"], root)
    assert result.exit_code == 0, result.output
    assert f"xp {folder.name} starts" in result.stdout
    assert result.stdout.rstrip().endswith("done")
    assert job_state(folder) == "COMPLETED"


# -- cancelling -----------------------------------------------------------------------------
def test_cancel_stops_running_xps(root: Path) -> None:
    write_grid(root, "slow", "for seed in range(2):\n    launcher(seed=seed, sleep=30)")
    folders = folders_of(schedule(root, "slow", "--workers", "2"))
    pids = wait_started(folders)
    start = time.monotonic()
    result = grid(root, "slow", "-C")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start < 8  # SIGTERM reached the XPs: no 10 s escalation
    assert "2 cancel" in result.stdout
    # when the command returns, the XPs are recorded CANCELLED and their processes are gone
    assert [job_state(f) for f in folders] == ["CANCELLED", "CANCELLED"]
    for pid in pids.values():
        assert not process_alive(pid)
    assert grid(root, "slow", "-C").stdout.count("cancel ") == 0  # nothing left to cancel


def test_cancel_pending_and_running_xps(root: Path, hold: Path) -> None:
    write_grid(root, "queue", f"for seed in range(3):\n    launcher(seed=seed, hold={str(hold)!r})")
    folders = folders_of(schedule(root, "queue", "--workers", "1"))
    wait_started(folders[:1])
    assert [job_state(f) for f in folders[1:]] == ["PENDING", "PENDING"]
    result = grid(root, "queue", "-C")  # no time bound: see test_cancel_never_starts_pending_xps
    assert result.exit_code == 0, result.output
    assert [job_state(f) for f in folders] == ["CANCELLED"] * 3
    for folder in folders:
        pid = latest_pid(folder)
        assert pid is None or not process_alive(pid), (folder.name, attempts_of(folder))
    assert not list((root / "outputs" / ".pool" / "queue").iterdir())


def test_cancel_never_starts_pending_xps(
    root: Path, hold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_grid(root, "queue", f"for seed in range(2):\n    launcher(seed=seed, hold={str(hold)!r})")
    running, pending = folders_of(schedule(root, "queue", "--workers", "1"))
    wait_started([running])
    real_signal = local._signal

    def slow_signal(folder: Path, sig: int) -> None:
        # as on a loaded machine: the pool reacts before the cancel loop goes on
        real_signal(folder, sig)
        if folder == running:
            with contextlib.suppress(AssertionError):
                wait_for(lambda: latest_pid(pending), "the pending XP to start", timeout=3)

    monkeypatch.setattr(local, "_signal", slow_signal)
    result = grid(root, "queue", "-C")
    assert result.exit_code == 0, result.output
    assert [job_state(f) for f in (running, pending)] == ["CANCELLED", "CANCELLED"]
    (attempt,) = attempts_of(pending)
    assert attempt["pid"] is None and attempt["started"] is None


def test_replace_restarts_a_running_xp(root: Path, hold: Path) -> None:
    write_grid(root, "rep", f"launcher(seed=1, hold={str(hold)!r})")
    (folder,) = folders_of(schedule(root, "rep"))
    old = wait_started([folder])[folder]
    result = grid(root, "rep", "-R")
    assert result.exit_code == 0, result.output
    assert "1 resubmit" in result.stdout
    assert not process_alive(old)
    hold.unlink()
    wait_states([folder], {"COMPLETED"})
    assert [a["state"] for a in attempts_of(folder)] == ["CANCELLED", "COMPLETED"]
    assert len(load_history(folder)) == 2  # the second attempt resumed


def test_removed_xp_is_cancelled(root: Path, hold: Path) -> None:
    path = write_grid(
        root, "shrink", f"for seed in (1, 2):\n    launcher(seed=seed, hold={str(hold)!r})"
    )
    folders = folders_of(schedule(root, "shrink"))
    pids = wait_started(folders)
    kept, removed = folders
    path.write_text(path.read_text().replace("(1, 2)", "(1,)"), encoding="utf8")
    result = grid(root, "shrink")
    assert result.exit_code == 0, result.output
    assert "1 cancel" in result.stdout
    line = next(line for line in result.stdout.splitlines() if removed.name in line)
    assert line.split()[0] == "cancel" and "removed from the grid" in line
    assert job_state(removed) == "CANCELLED"
    assert not process_alive(pids[removed])
    assert job_state(kept) == "RUNNING" and process_alive(pids[kept])
    # the table shows the grid as it is now
    assert removed.name not in result.stdout.split("plan for grid")[1].split("\n", 2)[2]


def test_xp_held_by_another_grid_is_not_cancelled(root: Path, hold: Path) -> None:
    shared = f"launcher(seed=2, hold={str(hold)!r})"
    path = write_grid(root, "a", f"launcher(seed=1)\n{shared}")
    write_grid(root, "b", shared)
    folders = folders_of(schedule(root, "a"))
    pids = wait_started(folders[1:])
    in_b = grid(root, "b")
    assert "1 keep" in in_b.stdout and attempts_of(folders[1])[-1]["n"] == 1
    path.write_text(
        "import gridman\n\n@gridman.Explorer\ndef explorer(launcher):\n    launcher(seed=1)\n",
        encoding="utf8",
    )
    result = grid(root, "a", "--dry-run")
    assert "still held by grid b" in result.stdout
    result = grid(root, "a")
    assert result.exit_code == 0, result.output
    assert "cancel" not in result.stdout.split("plan for grid")[1].splitlines()[0]
    assert job_state(folders[1]) == "RUNNING" and process_alive(pids[folders[1]])
    hold.unlink()
    wait_states(folders, {"COMPLETED"})


# -- vanished XPs ---------------------------------------------------------------------------
def test_vanished_xps_are_detected_and_retried(root: Path, hold: Path) -> None:
    write_grid(root, "v", f"for seed in (1, 2):\n    launcher(seed=seed, hold={str(hold)!r})")
    folders = folders_of(schedule(root, "v"))
    pids = wait_started(folders)
    assert kill_daemons(root / "outputs")  # the pool daemon dies first: nobody records an end
    for pid in pids.values():
        kill_group(pid)
    for pid in pids.values():
        wait_for(lambda pid=pid: not process_alive(pid), f"XP {pid} to die", timeout=10)
    assert [job_state(f) for f in folders] == ["RUNNING", "RUNNING"]  # as the pool left them
    # `gridman info` sees it...
    info = run_cli(["info", "--sig", folders[1].name], root)
    assert info.exit_code == 1 and "VANISHED (attempt 1)" in info.stdout  # shows a failed XP
    # ...and so does `gridman grid`, through the backend's poll
    rows = schedule(root, "v", code=1)
    assert [r["state"] for r in rows] == ["VANISHED", "VANISHED"]
    assert [job_state(f) for f in folders] == ["VANISHED", "VANISHED"]
    assert len(load_history(folders[0])) == 2  # the metrics pushed before are kept
    hold.unlink()
    retry = grid(root, "v", "-r")
    assert "2 submit" in retry.stdout and "vanished; --retry" in retry.stdout
    wait_states(folders, {"COMPLETED"}, timeout=60)
    for folder in folders:
        assert [a["state"] for a in attempts_of(folder)] == ["VANISHED", "COMPLETED"]


def test_xp_outliving_its_daemon_completes(root: Path, hold: Path) -> None:
    write_grid(root, "d", f"launcher(seed=1, hold={str(hold)!r})")
    (folder,) = folders_of(schedule(root, "d"))
    pid = wait_started([folder])[folder]
    assert kill_daemons(root / "outputs")
    assert process_alive(pid)  # the XP runs on without its daemon
    assert [r["state"] for r in schedule(root, "d")] == ["RUNNING"]
    hold.unlink()
    status = folder / "log" / "1.status.json"
    wait_for(lambda: status.exists() and "exit_code" in read_json_file(status), "its status")
    wait_for(lambda: not process_alive(pid), "the XP to end", timeout=10)
    assert job_state(folder) == "RUNNING"  # nobody recorded the end...
    rows = schedule(root, "d")
    assert [r["state"] for r in rows] == ["COMPLETED"]  # ...but the XP said how it ended
    (attempt,) = attempts_of(folder)
    assert attempt["state"] == "COMPLETED" and attempt["exit_code"] == 0


def test_zombie_xp_process_counts_as_gone(tmp_path: Path) -> None:
    # An XP whose runner died is re-parented; until someone reaps it, it is a zombie.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        wait_for(lambda: stat.read_bytes().split(b")")[-1].split()[0] == b"Z", "a zombie")
        folder = tmp_path / "xps" / "0123abcd"
        folder.mkdir(parents=True)
        record = JobRecord(sig=folder.name).with_new_attempt(
            "local", State.RUNNING, pid=child.pid, host=this_host(), started=time.time()
        )
        write_job(folder, record)
        new = mark_vanished(folder)
        assert new is not None and new.state is State.VANISHED
    finally:
        child.wait()


def test_lost_queue_entry_vanishes_and_queued_entries_restart_the_daemon(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_grid(root, "q", "launcher(seed=1)\nlauncher(seed=2)")
    real_ensure = local.ensure_daemon
    monkeypatch.setattr(local, "ensure_daemon", lambda pool, python: None)
    lost, queued = folders_of(schedule(root, "q"))
    assert not daemon_pids(root / "outputs")
    queue = root / "outputs" / ".pool" / "queue"
    entries = list(queue.iterdir())
    assert len(entries) == 2
    for entry in entries:  # they hold the scheduling environment
        assert entry.stat().st_mode & 0o777 == 0o600
    (queue / attempts_of(lost)[-1]["job_id"]).unlink()  # e.g. a crash between the two writes
    monkeypatch.setattr(local, "ensure_daemon", real_ensure)
    monkeypatch.setattr(local, "_PENDING_GRACE", 0.0)
    rows = schedule(root, "q", code=None)
    assert attempts_of(lost)[0]["state"] == "VANISHED"
    assert rows[1]["state"] in ("PENDING", "RUNNING", "COMPLETED")
    wait_states([queued], {"COMPLETED"})  # its entry was still queued: the poll restarted a daemon
    recover(root, "q", lost)
    assert [a["state"] for a in attempts_of(lost)] == ["VANISHED", "COMPLETED"]
    assert len(attempts_of(queued)) == 1


def test_claimed_entry_of_a_dead_daemon_vanishes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_grid(root, "q", "launcher(seed=1)")
    real_ensure = local.ensure_daemon
    monkeypatch.setattr(local, "ensure_daemon", lambda pool, python: None)
    (folder,) = folders_of(schedule(root, "q"))
    pool = root / "outputs" / ".pool"
    name = attempts_of(folder)[-1]["job_id"]
    (pool / "queue" / name).rename(pool / "claimed" / name)  # claimed, then the daemon died
    assert not daemon_pids(root / "outputs")
    monkeypatch.setattr(local, "ensure_daemon", real_ensure)
    monkeypatch.setattr(local, "_PENDING_GRACE", 0.0)
    schedule(root, "q", code=None)
    assert attempts_of(folder)[0]["state"] == "VANISHED"  # not PENDING forever
    recover(root, "q", folder)
    assert [a["state"] for a in attempts_of(folder)] == ["VANISHED", "COMPLETED"]


def test_stubborn_xp_is_killed_after_the_grace_period(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local, "_CANCEL_WAIT", 0.5)
    write_grid(root, "stub", "launcher(seed=1, stubborn=True, sleep=30)")
    (folder,) = folders_of(schedule(root, "stub"))
    pid = wait_started([folder])[folder]
    start = time.monotonic()
    result = grid(root, "stub", "-C")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start < 8
    assert job_state(folder) == "CANCELLED"
    assert not process_alive(pid)


def test_killed_xp_is_failed_with_its_signal(root: Path, hold: Path) -> None:
    write_grid(root, "k", f"launcher(seed=1, hold={str(hold)!r})")
    (folder,) = folders_of(schedule(root, "k"))
    pid = wait_started([folder])[folder]
    kill_group(pid)  # the daemon is alive: its runner records the end
    wait_states([folder], DONE)
    (attempt,) = attempts_of(folder)
    assert attempt["state"] == "FAILED" and attempt["exit_code"] == -9
    assert grid(root, "k").exit_code == 1


# -- races ----------------------------------------------------------------------------------
def test_racing_commands_submit_each_xp_once(root: Path) -> None:
    if not GRIDMAN.exists():
        pytest.skip(f"{GRIDMAN} is not installed")
    write_grid(root, "race", "for seed in range(3):\n    launcher(seed=seed)")
    lock = root / "outputs" / ".gridman.lock"
    lock.parent.mkdir(parents=True)
    with file_lock(lock):  # both commands queue up on the project lock, then race for it
        procs = [
            subprocess.Popen(
                [str(GRIDMAN), "grid", "race", "--no-monitor"],
                cwd=root,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        pids = {p.pid for p in procs}
        with contextlib.suppress(AssertionError):  # without /proc/locks: a plain race
            wait_for(lambda: lock_waiters(pids) == pids, "both commands to wait", timeout=20)
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    plans = [out.split("plan for grid race: ")[1].splitlines()[0] for out, _ in outputs]
    counts = [dict(reversed(p.split()) for p in plan.split(", ")) for plan in plans]
    # one command submitted what the other saw PENDING (and kept): 3 submissions in all
    assert sum(int(c.get("submit", 0)) for c in counts) == 3, plans
    assert sum(int(c.get("keep", 0)) for c in counts) == 3, plans
    folders = xp_folders(root)
    assert len(folders) == 3
    wait_states(folders, {"COMPLETED"}, timeout=60)
    for folder in folders:
        assert len(attempts_of(folder)) == 1


# -- GPUs -----------------------------------------------------------------------------------
def test_gpu_slots(tmp_path: Path) -> None:
    root = make_grid_project(
        tmp_path / "gpu", settings={"local": {"gpus": [0, 1], "xps_per_gpu": 2}}
    )
    write_grid(
        root,
        "g",
        "launcher.slurm_(gpus=1)\nfor seed in range(6):\n"
        "    launcher(seed=seed, probe=True, sleep=0.6)",
    )
    try:
        folders = folders_of(schedule(root, "g"))
        wait_states(folders, {"COMPLETED"}, timeout=60)
    finally:
        stop_pool(root / "outputs")
    by_gpu: dict[str, list[tuple[float, float]]] = {}
    for folder in folders:
        cuda = probe(folder)["cuda"]
        assert cuda in ("0", "1"), cuda  # exactly one GPU id
        by_gpu.setdefault(cuda, []).append(attempt_interval(folder))
    for gpu, intervals in by_gpu.items():
        assert max_overlap(intervals) <= 2, f"more than 2 XPs shared GPU {gpu}"
    assert max_overlap(attempt_interval(f) for f in folders) <= 4
    config = read_json_file(root / "outputs" / ".pool" / "config.json")
    assert config["gpus"] == ["0", "1"] and config["xps_per_gpu"] == 2
    assert config["workers"] == 4  # GPUs x xps_per_gpu when XPs ask for GPUs


def test_xp_with_two_gpus_gets_both(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "gpu", settings={"local": {"gpus": [0, 1]}})
    write_grid(
        root,
        "g2",
        "launcher.slurm_(gpus=2)\nlauncher(probe=True)\nlauncher.slurm(gpus=0)(seed=1, probe=True)",
    )
    try:
        folders = folders_of(schedule(root, "g2"))
        wait_states(folders, {"COMPLETED"}, timeout=60)
    finally:
        stop_pool(root / "outputs")
    assert probe(folders[0])["cuda"] == "0,1"
    assert probe(folders[1])["cuda"] == ""  # an XP that asked for none sees none


def test_gpus_from_the_scheduling_environment(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "gpu")
    write_grid(root, "g", "launcher.slurm(gpus=1)(probe=True)\nlauncher(seed=1, probe=True)")
    try:
        result = run_cli(
            ["grid", "g", "--no-monitor", "--json"], root, env={"CUDA_VISIBLE_DEVICES": "3,5"}
        )
        assert result.exit_code == 0, result.output
        folders = folders_of(parse_json_rows(result.stdout))
        wait_states(folders, {"COMPLETED"}, timeout=60)
    finally:
        stop_pool(root / "outputs")
    assert probe(folders[0])["cuda"] in ("3", "5")
    assert probe(folders[1])["cuda"] == ""  # asked for none: sees none, whatever the parent saw


def test_described_workers_match_the_pool(tmp_path: Path) -> None:
    count = (os.cpu_count() or 1) + 1  # so that the CPU count is never the right answer
    gpus = list(range(count))
    root = make_grid_project(tmp_path / "gpu", settings={"local": {"gpus": gpus}})
    write_grid(root, "g", "launcher.slurm_(gpus=1)\nlauncher(seed=1)")
    result = grid(root, "g", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"({count} workers, GPUs {','.join(map(str, gpus))} x1)" in result.stderr


def test_gpus_asked_but_none_available(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "nogpu", settings={"local": {"gpus": []}})
    write_grid(root, "g", "launcher.slurm_(gpus=1)\nlauncher(probe=True)\nlauncher(seed=1)")
    result = grid(root, "g")
    assert result.exit_code == 2
    assert "--gpus 0" in result.stderr and "GPU" in result.stderr
    assert not xps_dir(root).exists()
    try:
        folders = folders_of(schedule(root, "g", "--gpus", "0"))
        wait_states(folders, {"COMPLETED"}, timeout=60)
    finally:
        stop_pool(root / "outputs")
    assert probe(folders[0])["cuda"] == ""


def test_pool_assigns_least_loaded_gpus(tmp_path: Path) -> None:
    pool = Pool(tmp_path)
    gpus = ["0", "1"]
    assert pool.assign(0, gpus, 2) == []
    assert pool.assign(1, gpus, 2) == ["0"]
    assert pool.assign(1, gpus, 2) == ["1"]
    assert pool.assign(1, gpus, 2) == ["0"]
    assert pool.assign(2, gpus, 2) is None  # GPU 0 is full
    assert pool.assign(1, gpus, 2) == ["1"]
    assert pool.assign(1, gpus, 2) is None
    pool.release(["0"])
    assert pool.assign(1, gpus, 2) == ["0"]
    pool.release(["0", "1"])
    assert sorted(pool.assign(2, gpus, 2) or []) == ["0", "1"]


# -- environment ----------------------------------------------------------------------------
def test_xps_run_in_the_project_root_with_the_scheduling_environment(root: Path) -> None:
    write_grid(root, "env", "launcher(probe=True)")
    sub = root / "deep" / "sub"
    sub.mkdir(parents=True)
    assert PROBE_VAR not in os.environ
    result = run_cli(
        ["grid", "env", "--no-monitor", "--json"], sub, env={PROBE_VAR: "from-the-scheduler"}
    )
    assert result.exit_code == 0, result.output
    (folder,) = folders_of(parse_json_rows(result.stdout))
    assert folder.parent == xps_dir(root)  # the project's dir, not one under deep/sub
    wait_states([folder], {"COMPLETED"}, timeout=60)
    seen = probe(folder)
    assert seen["env"] == "from-the-scheduler"
    assert seen["cwd"] == str(root)
    assert seen["python"] == sys.executable
    assert seen["pid"] != os.getpid()  # a real process of its own
    entries = root / "outputs" / ".pool" / "claimed"
    # the pool drops its claim just after recording the end
    wait_for(lambda: not list(entries.iterdir()), "the pool to clean its claim", timeout=10)


def test_max_overlap_helper() -> None:
    # the concurrency checks above are only as good as this count
    assert max_overlap([]) == 0
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1  # touching is not overlapping
    assert max_overlap([(0, 2), (1, 3), (2.5, 4)]) == 2
    assert max_overlap([(0, 10), (1, 2), (1.5, 3), (2.5, 4)]) == 3
