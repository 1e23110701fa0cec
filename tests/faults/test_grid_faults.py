"""Hostile grid files, run for real: same-named grids in two grid folders (real pool, real
XPs), prints and ``sys.exit()`` in grid files and mains, an ``exclude`` that merges distinct
XPs, and arguments too big for a command line (checked against a real ``execve``)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gridman.testing import line_of, run_cli, xps_dir
from gridman.testing.grids import (
    job_state,
    latest_pid,
    make_grid_project,
    parse_json_rows,
    process_alive,
    wait_started,
    wait_states,
    write_grid,
)


def gridman(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process (stdout and stderr apart, real exit code)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    return subprocess.run([sys.executable, "-m", "gridman", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


# -- 7: same-named grids in two grid folders ---------------------------------------------------
def write_grid_in(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(f"import gridman\n\n\n@gridman.Explorer\ndef explorer(launcher):\n{body}\n",
                    encoding="utf8")  # fmt: skip
    return path


def schedule(root: Path, *args: str) -> list[dict[str, Any]]:
    result = run_cli(["grid", *args, "--no-monitor", "--json", "--workers", "4"], root)
    assert result.exit_code == 0, result.output
    return parse_json_rows(result.stdout)


def test_same_named_grids_in_two_folders_keep_each_others_running_xps(
    root: Path, hold: Path
) -> None:
    calls = "\n".join(f"    launcher(lr={lr}, hold={str(hold)!r})" for lr in (0.2, 0.3))
    write_grid_in(root / "grids", "exp", calls)
    write_grid_in(root / "other", "exp", f"    launcher(lr=0.4, hold={str(hold)!r})")
    first = [xps_dir(root) / r["sig"] for r in schedule(root, "exp")]
    pids = wait_started(first)
    dry = run_cli(["grid", "exp", "--grids-dir", "other", "--dry-run"], root)
    assert dry.exit_code == 0, dry.output
    assert "cancel" not in dry.output and "1 submit" in dry.output
    (second,) = [xps_dir(root) / r["sig"] for r in schedule(root, "exp", "--grids-dir", "other")]
    wait_started([second])
    # Running the first grid again neither cancels the other folder's XP ...
    again = run_cli(["grid", "exp", "--no-monitor", "--dry-run"], root)
    assert "cancel" not in again.output, again.output
    schedule(root, "exp")
    time.sleep(0.5)  # a cancel would have signalled them by now
    for folder in [*first, second]:
        assert job_state(folder) == "RUNNING", folder
    assert all(process_alive(pid) and latest_pid(f) == pid for f, pid in pids.items())
    # ... while an XP removed from a grid file, held by no grid, is still cancelled.
    write_grid_in(root / "grids", "exp", f"    launcher(lr=0.2, hold={str(hold)!r})")
    removed = run_cli(["grid", "exp", "--dry-run"], root)
    assert removed.output.count("cancel ") == 1 and first[1].name in removed.output
    schedule(root, "exp")
    wait_states([first[1]], {"CANCELLED"})
    hold.unlink()
    assert set(wait_states([first[0], second], {"COMPLETED"}).values()) == {"COMPLETED"}


def test_a_grid_file_of_another_folder_holds_a_removed_xp(root: Path, hold: Path) -> None:
    """An XP that two folders' grids ask for stays running when one of them drops it."""
    both = f"    launcher(lr=0.5, hold={str(hold)!r})"
    write_grid_in(root / "grids", "exp", both)
    write_grid_in(root / "other", "exp", both)
    (folder,) = [xps_dir(root) / r["sig"] for r in schedule(root, "exp")]
    schedule(root, "exp", "--grids-dir", "other")
    wait_started([folder])
    write_grid_in(root / "grids", "exp", "    launcher(lr=0.6)")
    result = run_cli(["grid", "exp", "--dry-run"], root)
    assert "still held by grid other/exp.py" in result.output, result.output
    schedule(root, "exp")
    time.sleep(0.5)
    assert job_state(folder) == "RUNNING"
    hold.unlink()
    wait_states([folder], {"COMPLETED"})


# -- 13: prints in grid files and mains ----------------------------------------------------------
PRINTING_GRID = """\
import gridman

print("grid file says hello")


@gridman.Explorer
def explorer(launcher):
    print("explore says hello")
    launcher(lr=0.2)
"""


@pytest.fixture
def chatty(tmp_path: Path) -> Path:
    """A project whose main and grid file print at import, and whose explore prints."""
    root = make_grid_project(tmp_path / "proj")
    main = root / "train.py"
    main.write_text('print("main says hello")\n' + main.read_text(encoding="utf8"), "utf8")
    write_grid(root, "chat", PRINTING_GRID, raw=True)
    return root


def assert_json_only(stdout: str, stderr: str) -> list[dict[str, Any]]:
    rows = parse_json_rows(stdout)  # nothing else on stdout
    for text in ("grid file says hello", "explore says hello", "main says hello"):
        assert text in stderr
    return rows


@pytest.mark.parametrize("dry", [True, False])
def test_prints_of_user_code_never_reach_json_stdout(chatty: Path, dry: bool) -> None:
    args = ["grid", "chat", "--json", "--backend", "inline", *(["--dry-run"] if dry else [])]
    done = gridman(args, chatty)
    assert done.returncode == 0, done.stderr
    rows = assert_json_only(done.stdout, done.stderr)
    assert [r["state"] for r in rows] == ["NEW" if dry else "COMPLETED"]
    inproc = run_cli(args, chatty)
    assert inproc.exit_code == 0, inproc.output
    assert_json_only(inproc.stdout, inproc.stderr)


def test_prints_of_the_main_never_reach_info_json(chatty: Path) -> None:
    done = gridman(["info", "--json", "--", "--lr", "0.2"], chatty)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delta"] == [["lr", 0.2]]
    assert "main says hello" in done.stderr


# -- 17: sys.exit() in a grid file ---------------------------------------------------------------
EXIT_IN_EXPLORE = """\
import sys

import gridman


@gridman.Explorer
def explorer(launcher):
    launcher(lr=0.2)
    sys.exit({code})
"""
EXIT_AT_IMPORT = """\
import gridman

exit({code})


@gridman.Explorer
def explorer(launcher):
    launcher(lr=0.2)
"""


@pytest.mark.parametrize("code", ["", "0", "1", "'bye'"])
@pytest.mark.parametrize("source", [EXIT_IN_EXPLORE, EXIT_AT_IMPORT], ids=["explore", "import"])
def test_sys_exit_in_a_grid_file_is_an_error_with_its_line(
    tmp_path: Path, source: str, code: str
) -> None:
    root = make_grid_project(tmp_path / "proj")
    path = write_grid(root, "quit", source.format(code=code), raw=True)
    line = line_of(source, "exit(")
    for result in (gridman(["grid", "quit", "--dry-run"], root),):
        assert result.returncode == 2, result.stderr
        assert f"{path}:{line}: sys.exit(" in result.stderr
        assert "hint:" in result.stderr and "internal error" not in result.stderr
    inproc = run_cli(["grid", "quit", "--dry-run"], root)
    assert inproc.exit_code == 2 and f"{path}:{line}" in inproc.stderr, inproc.output
    assert not xps_dir(root).exists()  # nothing was planned, nothing written


def test_sys_exit_at_import_of_the_main_is_an_error(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj")
    main = root / "train.py"
    main.write_text("import sys\nsys.exit(0)\n" + main.read_text(encoding="utf8"), "utf8")
    write_grid(root, "g", "launcher(lr=0.2)")
    result = gridman(["grid", "g", "--dry-run"], root)
    assert result.returncode == 2, result.stderr
    assert f"{main}:2: sys.exit(0) at import of the main" in result.stderr


# -- 16: an exclude that merges distinct XPs -----------------------------------------------------
MERGING_GRID = """\
launcher(lr=0.2, num_workers=1)
launcher(lr=0.2, num_workers=1)
launcher(lr=0.2, num_workers=3)
launcher(lr=0.2, num_workers=4)
launcher(lr=0.3)
"""


def test_an_exclude_merging_distinct_xps_is_warned_and_the_grid_runs(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj")
    path = write_grid(root, "merge", MERGING_GRID)
    first = line_of(path.read_text(encoding="utf8"), "num_workers=1")
    third = line_of(path.read_text(encoding="utf8"), "num_workers=3")
    real = gridman(["grid", "merge", "--backend", "inline", "--json"], root)
    inproc = run_cli(["grid", "merge", "--backend", "inline", "--json"], root)
    for code, stdout, stderr in ((real.returncode, real.stdout, real.stderr),
                                 (inproc.exit_code, inproc.stdout, inproc.stderr)):  # fmt: skip
        assert code == 0, stderr
        assert [r["state"] for r in parse_json_rows(stdout)] == ["COMPLETED"] * 2
        (warning,) = [line for line in stderr.splitlines() if "warning" in line]
        assert "asks for 4 XPs but holds 2" in warning and "2 launcher call(s)" in warning
        assert f"{path}:{first} (num_workers=1)" in warning
        assert f"{path}:{third} (num_workers=3)" in warning
        assert "['num_*']" in warning


def test_the_same_call_twice_is_not_warned(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj")
    write_grid(
        root,
        "twice",
        "for _ in range(2):\n    launcher(lr=0.2, num_workers=1)\n"
        "launcher(lr=0.20, num_workers=1)\nlauncher('--lr=0.2', '--num_workers', '1')",
    )
    for result in (gridman(["grid", "twice", "--dry-run"], root),):
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr and "1 submit" in result.stdout
    inproc = run_cli(["grid", "twice", "--dry-run"], root)
    assert inproc.exit_code == 0 and "warning" not in inproc.stderr, inproc.output


# -- 12: arguments too big for a command line ----------------------------------------------------
def execve_refuses(argv: Sequence[str]) -> bool:
    """Whether the kernel refuses to start a process with these arguments (E2BIG)."""
    try:
        subprocess.run([sys.executable, "-c", "pass", *argv], check=True)
    except OSError as exc:
        return exc.errno == errno.E2BIG
    return False


def test_an_argument_over_max_arg_strlen_is_refused_at_plan_time(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj")
    value = "x" * 131072  # with its NUL: one byte over MAX_ARG_STRLEN
    assert execve_refuses([value]) and not execve_refuses([value[:-1]])  # the fault is real
    path = write_grid(root, "big", "launcher(lr=0.2)\nlauncher(tags=['x' * 131072])")
    line = line_of(path.read_text(encoding="utf8"), "131072")
    for dry in ([], ["--dry-run"]):
        result = gridman(["grid", "big", "--backend", "inline", *dry], root)
        assert result.returncode == 2, result.stderr
        assert f"{path}:{line}: argument 1 of the XP (--tags: 'xxx" in result.stderr
        assert "131,073 bytes" in result.stderr and "MAX_ARG_STRLEN" in result.stderr
    assert not xps_dir(root).exists()  # refused before anything ran
    write_grid(root, "fits", "launcher(tags=['x' * 131071])")
    fits = gridman(["grid", "fits", "--backend", "inline", "--json"], root)
    assert fits.returncode == 0, fits.stderr
    assert [r["state"] for r in parse_json_rows(fits.stdout)] == ["COMPLETED"]


def test_a_command_line_over_arg_max_is_refused_at_plan_time(tmp_path: Path) -> None:
    root = make_grid_project(tmp_path / "proj")
    count = os.sysconf("SC_ARG_MAX") // 100_000 + 1
    assert execve_refuses(["y" * 100_000] * count)  # the fault is real
    path = write_grid(root, "long", f"launcher(tags=['y' * 100_000] * {count})")
    line = line_of(path.read_text(encoding="utf8"), "100_000")
    result = gridman(["grid", "long", "--dry-run"], root)
    assert result.returncode == 2, result.stderr
    assert f"{path}:{line}: the XP's {count + 1} arguments take" in result.stderr
    assert "ARG_MAX" in result.stderr and "internal error" not in result.stderr
