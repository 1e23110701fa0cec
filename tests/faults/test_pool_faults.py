"""The local pool daemon under real faults: a daemon killed under running XPs, entries planted
by another user, links planted where it logs and locks, malformed entries, lost entries.

Everything is real: the daemon and XPs are processes, the daemon is killed with SIGKILL, the
other user is uid 65534 (``setpriv``), and GPU slots are checked from what each XP saw in
``CUDA_VISIBLE_DEVICES`` (the ids are made up: only the variable matters to an XP).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from typer.testing import Result

from gridman.backends import local
from gridman.core.link import load_history
from gridman.testing import forget_modules, run_cli
from gridman.testing.faults import is_root
from gridman.testing.grids import (
    attempt_interval,
    attempts_of,
    daemon_pids,
    job_state,
    kill_daemons,
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

NOBODY = 65534
SETPRIV = shutil.which("setpriv")
needs_second_user = pytest.mark.skipif(
    not (is_root() and SETPRIV), reason="a second uid needs root and setpriv"
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may traverse (pytest's own temporary folders are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gridman-pool-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    stop_pool(path / "proj" / "outputs")
    forget_modules(path)
    shutil.rmtree(path, ignore_errors=True)


def schedule(root: Path, name: str, *args: str) -> list[Path]:
    result = run_cli(["grid", name, "--no-monitor", "--json", *args], root)
    assert result.exit_code == 0, result.output
    return [Path(r["folder"]) for r in parse_json_rows(result.stdout)]


def pool_of(root: Path) -> Path:
    return root / "outputs" / ".pool"


def cuda_seen(folder: Path) -> str:
    seen: str = load_history(folder)[-1]["probe"]["cuda"]
    return seen


def as_nobody(*command: str, stdin: str = "") -> None:
    """Run ``command`` as the other user (uid and gid 65534, no groups)."""
    assert SETPRIV is not None
    prefix = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    subprocess.run([*prefix, *command], input=stdin, text=True, check=True, capture_output=True)


# -- case 6: a daemon killed under running XPs -----------------------------------------------
def test_restarted_daemon_adopts_the_xps_of_a_killed_one(tmp_path: Path, hold: Path) -> None:
    settings = {"local": {"gpus": ["7", "9"], "xps_per_gpu": 1, "workers": 2}}
    root = make_grid_project(tmp_path / "proj", settings=settings)
    dir = root / "outputs"
    each = "launcher.slurm_(gpus=1)\nfor s in {}:\n    launcher(seed=s, probe=True, {})"
    write_grid(root, "a", each.format((1, 2), f"hold={str(hold)!r}"))
    write_grid(root, "b", each.format((3, 4), "sleep=0.3"))
    try:
        first = schedule(root, "a")
        pids = wait_started(first)

        def gpus() -> Optional[list[str]]:
            noted = [attempts_of(f)[-1]["extra"].get("gpus") for f in first]
            return None if None in noted else sorted(map(str, noted))

        assert wait_for(gpus, "the attempts to record their GPUs") == ["['7']", "['9']"]
        assert kill_daemons(dir)  # SIGKILL: its runners die with it, the XPs run on
        assert all(process_alive(pid) for pid in pids.values())
        second = schedule(root, "b")  # a new daemon starts
        wait_for(lambda: daemon_pids(dir), "a new daemon")
        time.sleep(1.5)
        # both workers and both GPUs are still taken by the adopted XPs: nothing more starts
        assert [job_state(f) for f in second] == ["PENDING", "PENDING"]
        hold.unlink()
        wait_states(first + second, {"COMPLETED"}, timeout=60)
        wait_for(lambda: not daemon_pids(dir), "the idle daemon to exit", timeout=15)
    finally:
        stop_pool(dir)
    folders = first + second
    assert max_overlap(attempt_interval(f) for f in folders) <= 2
    by_gpu: dict[str, list[tuple[float, float]]] = {}
    for folder in folders:
        (attempt,) = attempts_of(folder)
        assert attempt["exit_code"] == 0  # the adopter read how the adopted ones ended
        assert attempt["extra"]["gpus"] == [cuda_seen(folder)]
        by_gpu.setdefault(cuda_seen(folder), []).append(attempt_interval(folder))
    assert sorted(by_gpu) == ["7", "9"]
    for gpu, intervals in by_gpu.items():
        assert max_overlap(intervals) <= 1, f"GPU {gpu} was given twice"
    assert not os.listdir(pool_of(root) / "claimed")


def test_claims_of_a_killed_daemon_go_once_their_xp_is_settled(tmp_path: Path, hold: Path) -> None:
    root = make_grid_project(tmp_path / "proj", settings={"local": {"workers": 1}})
    dir = root / "outputs"
    write_grid(root, "d", f"launcher(seed=1, hold={str(hold)!r})\nlauncher(seed=2)")
    try:
        ran, claimed = schedule(root, "d")
        pid = wait_started([ran])[ran]
        assert kill_daemons(dir)
        claims = pool_of(root) / "claimed"
        # the second XP's entry, as if the killed daemon had just claimed it
        name = attempts_of(claimed)[-1]["job_id"]
        os.rename(pool_of(root) / "queue" / name, claims / name)
        hold.unlink()
        wait_for(lambda: not process_alive(pid), "the XP to end", timeout=20)
        assert len(os.listdir(claims)) == 2  # both claims hold the user's environment
        # a poll settles the first from what the XP said, and drops its claim
        result = run_cli(["grid", "d", "--no-monitor", "--json"], root)
        assert parse_json_rows(result.stdout)[0]["state"] == "COMPLETED"
        assert os.listdir(claims) == [name]
        # a new daemon settles the claim it finds whose XP never started, and drops it
        local.ensure_daemon(pool_of(root), sys.executable)
        wait_for(lambda: not os.listdir(claims), "the new daemon to drop the claim")
        assert job_state(claimed) == "VANISHED"
    finally:
        stop_pool(dir)


def test_cancel_of_a_pending_xp_whose_entry_is_gone_is_immediate(
    tmp_path: Path, hold: Path
) -> None:
    root = make_grid_project(tmp_path / "proj", settings={"local": {"workers": 1}})
    dir = root / "outputs"
    body = f"launcher(seed=1, hold={str(hold)!r})\nlauncher(seed=2)\nlauncher(seed=3)"
    write_grid(root, "c", body)
    try:
        running, claimed, removed = schedule(root, "c")
        pid = wait_started([running])[running]
        assert kill_daemons(dir)  # before it claimed the two others
        pool = pool_of(root)
        name = attempts_of(claimed)[-1]["job_id"]
        os.rename(pool / "queue" / name, pool / "claimed" / name)  # claimed, then killed
        os.unlink(pool / "queue" / attempts_of(removed)[-1]["job_id"])  # the entry is lost
        start = time.monotonic()
        result = run_cli(["grid", "c", "--no-monitor", "-C"], root)
        took = time.monotonic() - start
        assert result.exit_code == 0, result.output
        assert took < 4, f"cancel took {took:.1f} s"
        assert [job_state(f) for f in (running, claimed, removed)] == ["CANCELLED"] * 3
        assert not process_alive(pid)
        assert not os.listdir(pool / "claimed")
    finally:
        stop_pool(dir)


# -- case 11: malformed entries --------------------------------------------------------------
def test_malformed_entries_are_set_aside_and_the_pool_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_grid_project(tmp_path / "proj")
    dir = root / "outputs"
    write_grid(root, "m", "launcher(seed=1)\nlauncher(seed=2)")
    monkeypatch.setattr(local, "ensure_daemon", lambda pool, python: None)
    good, named = schedule(root, "m")
    monkeypatch.undo()
    queue = pool_of(root) / "queue"
    entry = queue / attempts_of(named)[-1]["job_id"]
    item = json.loads(entry.read_text(encoding="utf8"))
    write = local._write_private
    write(entry, {**item, "gpus": "two"})  # names its XP: the reason goes to its record
    for i, bad in enumerate([{}, [], {"gpus": "two"}, {**item, "gpus": 99}]):
        write(queue / f"{i:020d}-bad.json", bad)  # sorted before the good entries
    (queue / f"{9:020d}-bad.json").write_bytes(b"{not json")
    os.chmod(queue / f"{9:020d}-bad.json", 0o600)
    try:
        local.ensure_daemon(pool_of(root), sys.executable)
        assert wait_states([good], {"COMPLETED"}, timeout=60)
        wait_for(lambda: not daemon_pids(dir), "the daemon to exit when idle", timeout=15)
    finally:
        stop_pool(dir)
    assert job_state(named) == "FAILED"
    error = attempts_of(named)[-1]["extra"]["error"]
    assert entry.name in error and "'gpus'" in error and "'two'" in error
    assert not os.listdir(queue) and not os.listdir(pool_of(root) / "claimed")
    assert len(os.listdir(pool_of(root) / "rejected")) == 6
    log = (pool_of(root) / "daemon.log").read_text(encoding="utf8")
    assert "setting aside" in log and "not JSON" in log and "Traceback" not in log


# -- case 9: another user, a loose pool, planted links ---------------------------------------
def planted_entry(folder: Path, proof: Path) -> dict[str, Any]:
    return {"version": 1, "sig": folder.name, "gpus": 0, "folder": str(folder),
            "command": ["/bin/sh", "-c", f"id > {proof}"], "cwd": "/", "env": {},
            "backend": "local", "job_id": None}  # fmt: skip


@needs_second_user
def test_entries_planted_by_another_user_never_run(shared: Path, hold: Path) -> None:
    root = make_grid_project(shared / "proj")
    dir = root / "outputs"
    write_grid(root, "v", f"launcher(seed=1, hold={str(hold)!r})")
    try:
        (folder,) = schedule(root, "v")  # the victim's daemon serves its pool
        wait_started([folder])
        pool = pool_of(root)
        for path in (dir, pool, pool / "queue"):
            path.chmod(0o777)  # a shared, group- or world-writable XP root
        proof, linked = shared / "pwned", shared / "pwned-through-link"
        text = json.dumps(planted_entry(folder, proof))
        as_nobody("sh", "-c", f"cat > {pool}/queue/{0:020d}-evil.json", stdin=text)
        # a link to a file of the victim's that looks like an entry
        bait = shared / "bait.json"
        bait.write_text(json.dumps(planted_entry(folder, linked)), encoding="utf8")
        as_nobody("ln", "-s", str(bait), f"{pool}/queue/{1:020d}-link.json")
        rejected = pool / "rejected"
        wait_for(lambda: len(os.listdir(rejected)) == 2, "the daemon to set both aside")
        hold.unlink()
        wait_states([folder], {"COMPLETED"}, timeout=30)
        wait_for(lambda: not daemon_pids(dir), "the daemon to exit when idle", timeout=15)
    finally:
        stop_pool(dir)
    assert not proof.exists() and not linked.exists()
    assert [a["state"] for a in attempts_of(folder)] == ["COMPLETED"]  # left alone
    log = (pool / "daemon.log").read_text(encoding="utf8")
    assert f"owned by uid {NOBODY}" in log and "symbolic link" in log


@needs_second_user
@pytest.mark.parametrize("name", ["daemon.log", "daemon.lock"])
def test_links_planted_in_the_pool_are_refused(shared: Path, name: str) -> None:
    root = make_grid_project(shared / "proj")
    write_grid(root, "l", "launcher(seed=1)")
    pool = pool_of(root)
    pool.mkdir(parents=True)
    pool.chmod(0o777)  # once loose: another user planted a link...
    target = shared / "profile"
    target.write_text("# the victim's own\n", encoding="utf8")
    aimed = target if name == "daemon.log" else shared / "created-through-link"
    as_nobody("ln", "-s", str(aimed), str(pool / name))
    pool.chmod(0o700)  # ...and the victim tightened the folder, not its content
    result = run_cli(["grid", "l", "--no-monitor"], root)
    assert result.exit_code == 2, result.output
    assert f"{pool / name} is a symbolic link" in result.stderr and "hint:" in result.stderr
    assert target.read_text(encoding="utf8") == "# the victim's own\n"
    assert not (shared / "created-through-link").exists()
    assert "Traceback" not in result.output


@needs_second_user
@pytest.mark.parametrize(
    ("which", "mode", "owner", "why"),
    [
        (".pool", 0o777, None, "writable by other users"),
        (".pool", 0o770, None, "writable by other users"),
        ("queue", 0o703, None, "writable by other users"),
        (".pool", 0o700, NOBODY, f"belongs to uid {NOBODY}"),
    ],
)
def test_a_loose_or_foreign_pool_is_refused(
    shared: Path, which: str, mode: int, owner: Optional[int], why: str
) -> None:
    root = make_grid_project(shared / "proj")
    write_grid(root, "p", "launcher(seed=1)")
    pool = pool_of(root)
    (pool / "queue").mkdir(parents=True)
    path = pool if which == ".pool" else pool / which
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, owner)
    result: Result = run_cli(["grid", "p", "--no-monitor"], root)
    assert result.exit_code == 2, result.output
    assert f"{path} " in result.stderr and why in result.stderr, result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.output
    assert not os.listdir(pool / "queue")  # nothing queued, nothing ran
    assert not daemon_pids(root / "outputs")


def test_a_readable_pool_of_the_user_is_made_private(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj")
    write_grid(root, "r", "launcher(seed=1)")
    pool = pool_of(root)
    (pool / "queue").mkdir(parents=True)
    pool.chmod(0o755)  # as gridman <= 0.3 created it
    try:
        (folder,) = schedule(root, "r")
        wait_states([folder], {"COMPLETED"}, timeout=60)
    finally:
        stop_pool(root / "outputs")
    for path in (pool, pool / "queue", pool / "claimed"):
        assert path.stat().st_mode & 0o777 == 0o700, path
