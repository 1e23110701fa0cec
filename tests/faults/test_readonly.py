"""An XP root that cannot be written, for real: a tmpfs remounted read-only, a folder owned by
root looked at by a second uid (nobody, through setpriv), a full tmpfs. Commands that only look
(``grid --dry-run``, ``grid --json`` of a grid with nothing to do, ``info``, ``export``) work;
commands that would write exit 2 with the path, the reason and what to do — never "internal
error ... report it" (exit 3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

import pytest

from gridman.testing.faults import fill_disk, needs_root, reachable_by_others, small_tmpfs
from gridman.testing.grids import make_grid_project, parse_json_rows, stop_pool, write_grid

pytestmark = needs_root()
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def gridman(
    args: Sequence[str], cwd: Path, as_nobody: bool = False
) -> subprocess.CompletedProcess[str]:
    """The real command line (as uid 65534 when ``as_nobody``), stdout and stderr apart."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    env["HOME"] = str(cwd)
    command = [*(NOBODY if as_nobody else []), sys.executable, "-m", "gridman", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def done_project(root: Path, dir: Optional[Path] = None) -> tuple[Path, list[str]]:
    """A project whose grid ``g`` ran to completion (inline); returns it and the XPs' sigs."""
    settings = {"dir": str(dir)} if dir is not None else None
    make_grid_project(root, {"g": "launcher(lr=0.2)\nlauncher(lr=0.3)"}, settings=settings)
    result = gridman(["grid", "g", "--backend", "inline", "--json"], root)
    assert result.returncode == 0, result.stderr
    rows = parse_json_rows(result.stdout)
    assert [r["state"] for r in rows] == ["COMPLETED"] * 2
    return root, [r["sig"] for r in rows]


def assert_looking_works(root: Path, sigs: list[str], as_nobody: bool = False) -> None:
    dry = gridman(["grid", "g", "--dry-run"], root, as_nobody)
    assert dry.returncode == 0, dry.stderr
    assert "2 keep" in dry.stdout and "COMPLETED" in dry.stdout
    table = gridman(["grid", "g", "--json"], root, as_nobody)  # nothing to do: only looks
    assert table.returncode == 0, table.stderr
    assert [r["state"] for r in parse_json_rows(table.stdout)] == ["COMPLETED"] * 2
    info = gridman(["info", "--sig", sigs[0], "--json"], root, as_nobody)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["state"] == "COMPLETED"
    export = gridman(["export", "g", "-F", "json"], root, as_nobody)
    assert export.returncode == 0, export.stderr
    assert [r["sig"] for r in json.loads(export.stdout)] == sigs


def assert_refused(result: subprocess.CompletedProcess[str], path: Path, reason: str) -> None:
    assert result.returncode == 2, result.stderr
    assert f"cannot write {path}" in result.stderr and reason in result.stderr
    assert "hint:" in result.stderr and "--dry-run" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def add_xp(root: Path) -> None:
    write_grid(root, "g", "launcher(lr=0.2)\nlauncher(lr=0.3)\nlauncher(lr=0.4)")


# -- a read-only mount ---------------------------------------------------------------------------
@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


def test_a_read_only_xp_root_can_be_looked_at_not_written(tmp_path: Path, disk: Path) -> None:
    root, sigs = done_project(tmp_path / "proj", disk / "outputs")
    remount(disk, "ro")
    try:
        assert_looking_works(root, sigs)
        add_xp(root)  # now the grid has something to submit
        lock = disk / "outputs" / ".gridman.lock"
        assert_refused(gridman(["grid", "g", "--no-monitor"], root), lock, "Read-only file system")
        assert_refused(gridman(["grid", "g", "--init", "--dry-run"], root), lock, "Read-only")
        dry = gridman(["grid", "g", "--dry-run"], root)
        assert dry.returncode == 0 and "1 submit, 2 keep" in dry.stdout, dry.stderr
    finally:
        remount(disk, "rw")
        stop_pool(disk / "outputs")


def test_a_read_only_xp_root_without_lock_file_is_looked_at(tmp_path: Path, disk: Path) -> None:
    root, sigs = done_project(tmp_path / "proj", disk / "outputs")
    (disk / "outputs" / ".gridman.lock").unlink()  # e.g. a copy of the results only
    remount(disk, "ro")
    try:
        assert_looking_works(root, sigs)
    finally:
        remount(disk, "rw")


# -- a second uid without write permission ---------------------------------------------------
@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every uid may enter and read, written by root only (pytest's tmp_path is
    private to root)."""
    path = Path(tempfile.mkdtemp(prefix="gridman-ro-"))
    path.chmod(0o755)
    import gridman

    with reachable_by_others(Path(sys.prefix), Path(gridman.__file__).parent):
        yield path
    stop_pool(path / "proj" / "outputs")
    shutil.rmtree(path)


def test_a_second_uid_looks_at_an_xp_root_it_may_not_write(shared: Path) -> None:
    root, sigs = done_project(shared / "proj")
    assert_looking_works(root, sigs, as_nobody=True)
    add_xp(root)
    lock = root / "outputs" / ".gridman.lock"
    refused = gridman(["grid", "g", "--no-monitor"], root, as_nobody=True)
    assert_refused(refused, lock, "Permission denied")
    assert "for user nobody" in refused.stderr
    assert len(list((root / "outputs" / "xps").iterdir())) == 2  # nothing new was written
    cancel = gridman(["grid", "g", "-C", "--no-monitor"], root, as_nobody=True)
    assert cancel.returncode == 0, cancel.stderr  # nothing running: nothing to write


# -- a full disk -----------------------------------------------------------------------------------
def test_a_full_disk_is_reported_with_its_path(tmp_path: Path, disk: Path) -> None:
    root, sigs = done_project(tmp_path / "proj", disk / "outputs")
    add_xp(root)
    filler = fill_disk(disk)
    try:
        assert gridman(["grid", "g", "--dry-run"], root).returncode == 0
        result = gridman(["grid", "g", "--no-monitor"], root)
        assert result.returncode == 2, result.stderr
        assert f"cannot write {disk / 'outputs'}" in result.stderr
        assert "No space left on device" in result.stderr and "df -h" in result.stderr
        assert "internal error" not in result.stderr
        info = gridman(["info", "--sig", sigs[0], "--json"], root)
        assert info.returncode == 0 and json.loads(info.stdout)["state"] == "COMPLETED"
        export = gridman(["export", "g", "-F", "json"], root)
        assert export.returncode == 0 and len(json.loads(export.stdout)) == 3, export.stderr
    finally:
        filler.unlink()
        stop_pool(disk / "outputs")
    again = gridman(["grid", "g", "--backend", "inline", "--json"], root)  # space again: runs
    assert again.returncode == 0, again.stderr
    assert [r["state"] for r in parse_json_rows(again.stdout)] == ["COMPLETED"] * 3
