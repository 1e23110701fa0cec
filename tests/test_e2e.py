"""End to end: the installed ``gridman`` console script, in real processes."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gridman.cli.common import exit_for
from gridman.core.jobs import pid_alive
from gridman.core.link import load_history
from gridman.core.signature import compute_sig
from gridman.testing import make_project, read_json_file, xps_dir

GRIDMAN = Path(sys.executable).parent / "gridman"
HEAVY = ("submitit", "mpi4py", "numpy", "torch")
SIG_LR05 = "3b45fed1"

pytestmark = pytest.mark.skipif(not GRIDMAN.exists(), reason=f"{GRIDMAN} is not installed")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}


def gridman(
    args: Sequence[str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRIDMAN), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def info_json(project: Path, sig: str) -> dict[str, Any]:
    result = gridman(["info", "--sig", sig, "--json"], project)
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    # 1 when it shows a failed XP (every command's contract), else 0
    assert result.returncode == exit_for([data["state"]]), result.stderr
    return data


def test_run_then_info(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    run = gridman(["run", "--", "--lr", "0.5", "--epochs", "3"], project)
    assert run.returncode == 0, run.stderr
    assert "epoch 2: loss" in run.stdout
    sig = compute_sig([("epochs", 3), ("lr", 0.5)])
    assert f"XP {sig} COMPLETED" in run.stderr
    data = info_json(project, sig)
    assert data["state"] == "COMPLETED"
    assert data["delta"] == [["epochs", 3], ["lr", 0.5]]
    assert data["history_len"] == 3 and data["last_metrics"]["epoch"] == 2
    assert data["folder"] == str(xps_dir(project) / sig)
    failed = gridman(["run", "--", "--fail"], project)
    assert failed.returncode == 1
    assert "RuntimeError: planned failure" in failed.stderr
    bad = gridman(["run", "--", "--lr", "abc"], project)
    assert bad.returncode == 2
    assert "invalid float value: 'abc'" in bad.stderr
    assert bad.stderr.startswith("usage: gridman")


@contextlib.contextmanager
def child_subreaper() -> Iterator[bool]:
    """Adopt orphaned descendants (Linux), so that a killed grandchild can be reaped here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        ok = False
    try:
        yield ok
    finally:
        if ok:
            libc.prctl(36, 0, 0, 0, 0)


def wait_for(predicate: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_killed_runner_is_reported_vanished(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    folder = xps_dir(project) / SIG_LR05
    log = folder / "log" / "1.log"
    child = 0
    with child_subreaper() as adopted:
        runner = subprocess.Popen(
            [str(GRIDMAN), "run", "--", "--lr", "0.5", "--sleep", "60"],
            cwd=project,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: log.exists() and "sleeping" in log.read_text(), "the XP to sleep")
            record = read_json_file(folder / "job.json")
            assert record["state"] == "RUNNING"
            child = record["attempts"][-1]["pid"]
            assert child and child != runner.pid and pid_alive(child)

            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=10)
            # the runner is gone but its XP still runs: RUNNING, not VANISHED
            assert info_json(project, SIG_LR05)["state"] == "RUNNING"

            os.kill(child, signal.SIGKILL)
            if adopted:
                os.waitpid(child, 0)
            wait_for(lambda: not pid_alive(child), "the XP process to disappear", timeout=10)
            child = 0
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()
            if child and pid_alive(child):
                os.kill(child, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child, 0)
    data = info_json(project, SIG_LR05)
    assert data["state"] == "VANISHED"
    assert data["history_len"] == 2  # the metrics pushed before the kill survive
    assert read_json_file(folder / "job.json")["state"] == "VANISHED"
    assert len(load_history(folder)) == 2
    text = gridman(["info", "--sig", SIG_LR05], project)
    assert "VANISHED (attempt 1)" in text.stdout
    again = gridman(["run", "--sig", SIG_LR05, "--", "--sleep", "0"], project)  # runs again
    assert again.returncode == 0, again.stderr
    assert info_json(project, SIG_LR05)["state"] == "COMPLETED"


IMPORT_CHECK = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import gridman
    import gridman.cli
    import typer.main
    names = sorted(typer.main.get_command(gridman.cli.app).commands)
    for args in [["--help"]] + [[name, "--help"] for name in names]:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                gridman.cli.app(args, prog_name="gridman")
            except SystemExit as exc:
                assert not exc.code, (args, exc.code)
    heavy = sys.argv[1].split(",")
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
    """
)


def test_cli_and_help_import_nothing_heavy(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, ",".join(HEAVY)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_console_script_help_imports_nothing_heavy(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(GRIDMAN), "--help"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: gridman" in result.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line
    }
    assert "gridman.cli" in imported  # the check below really saw gridman's imports
    assert sorted(m for m in imported if m.split(".")[0] in HEAVY) == []
