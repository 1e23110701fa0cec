"""Code snapshots per XP (issue 15, item 7: Dora's ``git_save``), with REAL git repositories,
the REAL local pool daemon and the REAL local Slurm cluster.

The project is a git repository with ``git_save: true``; its main records which version of the
code ran (``VERSION`` in train.py, and in helper.py, a module it imports), from where, and which
commit its environment names. An XP submitted before an edit is committed runs the old code
even when it only starts after the commit; a submission after the commit runs the new code; a
dirty work tree is refused (exit 2) unless ``--allow-dirty``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridman.core.project import GitSave, parse_git_save
from gridman.core.snapshot import Snapshot
from gridman.errors import ConfigError
from gridman.testing import make_project, write_project_file
from gridman.testing.grids import stop_pool, wait_for, wait_states, write_grid
from gridman.testing.slurm import cancel_all, needs_slurm

GRIDMAN = Path(sys.executable).parent / "gridman"

#: The main: waits while its --hold file exists, then writes what code ran into ran.json.
TRAIN = """\
import argparse
import json
import os
import time

import gridman

VERSION = "{version}"

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--hold", default="")


@gridman.argparse_main(parser=parser, dir="outputs", exclude=["hold"])
def main():
    xp = gridman.get_xp()
    while xp.cfg.hold and os.path.exists(xp.cfg.hold):
        time.sleep(0.05)
    import helper  # a module of the project: imported from the snapshot too

    ran = {{"version": VERSION, "helper": helper.VERSION, "cwd": os.getcwd(),
           "file": os.path.abspath(__file__), "helper_file": os.path.abspath(helper.__file__),
           "commit": os.environ.get("GRIDMAN_CODE_COMMIT"),
           "pythonpath": os.environ.get("PYTHONPATH", "")}}
    with open(os.path.join(xp.folder, "ran.json"), "w") as out:
        json.dump(ran, out)
    xp.link.push_metrics({{"epoch": 0}})
"""


def git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    done = subprocess.run(["git", "-C", str(root), *args], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def set_version(root: Path, version: str) -> None:
    (root / "train.py").write_text(TRAIN.format(version=version), encoding="utf8")
    (root / "helper.py").write_text(f'VERSION = "{version}"\n', encoding="utf8")


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A", "--", ".", ":(exclude)outputs")
    git(root, "commit", "--quiet", "-m", message)
    return git(root, "rev-parse", "HEAD")


def gridman(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command line, in its own process (as a user runs it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDMAN_DIR", "GRIDMAN_MAIN")}
    return subprocess.run([str(GRIDMAN), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def folder_of(root: Path, grid: str, index: int) -> Path:
    done = gridman(root, "grid", grid, "-f", str(index), "--no-monitor", "--dry-run")
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def ran(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "ran.json").read_text(encoding="utf8"))
    assert isinstance(data, dict)
    return data


def argv_code(folder: Path) -> Any:
    return json.loads((folder / "argv.json").read_text(encoding="utf8")).get("code")


def make_repo(root: Path, settings: dict[str, Any]) -> tuple[Path, str]:
    """A git repository holding a project with ``settings``; (root, first commit)."""
    make_project(root, main_source=TRAIN.format(version="old"), settings=settings)
    set_version(root, "old")
    git(root, "init", "--quiet")
    return root, commit_all(root, "old")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root, commit = make_repo(tmp_path / "proj", {"git_save": True, "backend": "local"})
    yield root, commit
    stop_pool(root / "outputs")


def test_pending_xp_runs_the_code_of_its_submission(repo: tuple[Path, str], tmp_path: Path) -> None:
    """workers=1: XP 0 holds the only worker, XP 1 waits in the queue while train.py and
    helper.py are edited and committed; when it starts it runs the OLD code, from the copy of
    the first commit. A later submission runs the new commit's copy."""
    root, old = repo
    hold = tmp_path / "hold"
    hold.touch()
    write_grid(root, "g", f"launcher(seed=0, hold={str(hold)!r})\nlauncher(seed=1)")
    commit_all(root, "grid")
    old = git(root, "rev-parse", "HEAD")
    done = gridman(root, "grid", "g", "--no-monitor", "--workers", "1")
    assert done.returncode == 0, done.stderr
    first, pending = folder_of(root, "g", 0), folder_of(root, "g", 1)
    wait_states([first], {"RUNNING"})
    assert wait_states([pending], {"PENDING"})  # queued behind XP 0: not started yet

    set_version(root, "new")
    write_grid(root, "later", "launcher(seed=2)")
    new = commit_all(root, "new")
    hold.unlink()
    wait_states([first, pending], {"COMPLETED"})

    snapshot = root / "outputs" / "code" / old
    for folder in (first, pending):
        info = ran(folder)
        assert (info["version"], info["helper"], info["commit"]) == ("old", "old", old)
        assert Path(info["cwd"]) == snapshot
        assert Path(info["file"]) == snapshot / "train.py"
        assert Path(info["helper_file"]) == snapshot / "helper.py"
        assert info["pythonpath"].split(os.pathsep)[0] == str(snapshot)
        assert argv_code(folder) == {"commit": old, "path": str(snapshot)}
        assert folder.parent == root / "outputs" / "xps"  # XP folders stay in <dir>
    assert not (snapshot / "outputs").exists()  # a clean copy: committed files only

    done = gridman(root, "grid", "later", "--no-monitor")
    assert done.returncode == 0, done.stderr
    later = folder_of(root, "later", 0)
    wait_states([later], {"COMPLETED"})
    assert (ran(later)["version"], ran(later)["commit"]) == ("new", new)
    assert Path(ran(later)["cwd"]) == root / "outputs" / "code" / new
    assert argv_code(later) == {"commit": new, "path": str(root / "outputs" / "code" / new)}
    shown = gridman(root, "info", "--sig", later.name)  # info says which code it ran
    assert shown.returncode == 0 and f"code     {new[:12]} (" in shown.stdout, shown.stdout
    # one copy per commit, no temporary folder left
    assert sorted(p.name for p in (root / "outputs" / "code").iterdir()) == sorted(
        [".lock", old, new]
    )


def test_dirty_tree_is_refused_unless_allowed(repo: tuple[Path, str]) -> None:
    """An uncommitted edit (or a new file) stops the submission with exit 2, naming the files
    and how to go on; nothing is submitted. --allow-dirty submits: the XP runs the last commit,
    without the edit."""
    root, _ = repo
    write_grid(root, "g", "launcher(seed=0)")
    head = commit_all(root, "grid")
    set_version(root, "dirty")
    (root / "notes.py").write_text("X = 1\n", encoding="utf8")
    done = gridman(root, "grid", "g", "--no-monitor")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "uncommitted" in done.stderr and "train.py" in done.stderr
    assert "helper.py" in done.stderr and "notes.py" in done.stderr
    assert "--allow-dirty" in done.stderr and "Traceback" not in done.stderr
    folder = folder_of(root, "g", 0)
    assert not (folder / "job.json").exists()
    assert not (root / "outputs" / "code").exists()

    done = gridman(root, "grid", "g", "--no-monitor", "--allow-dirty")
    assert done.returncode == 0, done.stderr
    wait_states([folder], {"COMPLETED"})
    assert (ran(folder)["version"], ran(folder)["commit"]) == ("old", head)


def test_allow_dirty_in_gridman_yaml(tmp_path: Path) -> None:
    """``git_save: {allow_dirty: true}``: on, and an edit does not stop the submission."""
    root, _ = make_repo(tmp_path / "proj", {"git_save": {"allow_dirty": True}})
    try:
        write_grid(root, "g", "launcher(seed=3)")
        head = commit_all(root, "grid")
        set_version(root, "dirty")
        done = gridman(root, "grid", "g", "--no-monitor")
        assert done.returncode == 0, done.stderr
        folder = folder_of(root, "g", 0)
        wait_states([folder], {"COMPLETED"})
        assert (ran(folder)["version"], ran(folder)["commit"]) == ("old", head)
    finally:
        stop_pool(root / "outputs")


def test_not_a_repository_and_git_save_off(tmp_path: Path) -> None:
    """git_save on outside a git repository: exit 2 saying so. Off: XPs run in the project."""
    root = make_project(tmp_path / "plain", main_source=TRAIN.format(version="v"),
                        settings={"git_save": True})  # fmt: skip
    (root / "helper.py").write_text('VERSION = "v"\n', encoding="utf8")
    write_grid(root, "g", "launcher(seed=4)")
    done = gridman(root, "grid", "g", "--no-monitor")
    assert done.returncode == 2, done.stderr
    assert "not in a git repository" in done.stderr and "git_save: false" in done.stderr
    write_project_file(root, {"main": "train.py", "dir": "outputs"})
    try:
        done = gridman(root, "grid", "g", "--no-monitor")
        assert done.returncode == 0, done.stderr
        folder = folder_of(root, "g", 0)
        wait_states([folder], {"COMPLETED"})
        assert Path(ran(folder)["cwd"]) == root and ran(folder)["commit"] is None
        assert argv_code(folder) is None
    finally:
        stop_pool(root / "outputs")


def test_git_save_setting_parsing() -> None:
    assert parse_git_save(None, None) is None
    assert parse_git_save(None, True) == GitSave(enabled=True)
    assert parse_git_save(None, False) == GitSave(enabled=False)
    assert parse_git_save(None, {"allow_dirty": True}) == GitSave(True, True)
    for bad in ("yes", {"allow_dirt": True}, {"allow_dirty": "yes"}, 1):
        with pytest.raises(ConfigError):
            parse_git_save(Path("gridman.yaml"), bad)


def test_snapshot_moves_paths_into_the_copy(tmp_path: Path) -> None:
    snap = Snapshot("c" * 40, tmp_path / "code", tmp_path / "code" / "sub", tmp_path / "proj")
    assert snap.main_spec("train.py") == "train.py"
    assert snap.main_spec(f"{tmp_path}/proj/a/train.py:main") == f"{snap.root}/a/train.py:main"
    assert snap.main_spec("/elsewhere/train.py") == "/elsewhere/train.py"
    path = snap.pythonpath(os.pathsep.join([f"{tmp_path}/proj/src", "/opt/lib", "rel"]))
    assert path.split(os.pathsep) == [str(snap.root), f"{snap.root}/src", "/opt/lib", "rel"]


@needs_slurm()
def test_slurm_job_runs_from_the_snapshot(tmp_path: Path) -> None:
    """A real Slurm job: it runs after the edit is committed, from the submission's copy (its
    sbatch script exports the copy's PYTHONPATH; the pickled task names the copy as root, so a
    requeue of the same job runs it again)."""
    root, _ = make_repo(tmp_path / "proj", {"git_save": True, "backend": "slurm"})
    hold = tmp_path / "hold"
    hold.touch()
    try:
        write_grid(root, "g", f"launcher(seed=5, hold={str(hold)!r})")
        old = commit_all(root, "grid")
        done = gridman(root, "grid", "g", "--no-monitor")
        assert done.returncode == 0, done.stderr
        folder = folder_of(root, "g", 0)
        wait_states([folder], {"RUNNING"}, timeout=90)
        set_version(root, "new")
        commit_all(root, "new")
        hold.unlink()
        wait_states([folder], {"COMPLETED"}, timeout=90)
        snapshot = root / "outputs" / "code" / old
        assert (ran(folder)["version"], ran(folder)["commit"]) == ("old", old)
        assert Path(ran(folder)["cwd"]) == snapshot
        scripts = list((root / "outputs").glob(".slurm/jobs/*/*_submission.sh"))
        text = scripts[0].read_text(encoding="utf8")
        assert f"export GRIDMAN_CODE_ROOT={snapshot}" in text
        # what a requeue runs again: the pickled task names the copy as the XP's root
        pickled = next((root / "outputs").glob(".slurm/jobs/*/*_submitted.pkl"))
        task = pickle.loads(pickled.read_bytes()).function
        assert (Path(task.root), task.main_spec) == (snapshot, "train.py")
    finally:
        if hold.exists():
            hold.unlink()
        wait_for(lambda: True, "nothing")
        cancel_all(root / "outputs")
