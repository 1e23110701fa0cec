"""Issue 14 case 15: the smaller things a new user hit.

Timestamps in ``info`` read as local ISO times; the ``Base: ...`` line is explained; the order
of the keys in names never depends on which values are defaults; a damaged history is marked
where its entries are counted; ``-D``'s help says the history is kept; ``--clear --dry-run``
lists what ``--clear`` would delete, and deletes nothing.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gridman.testing import TRAIN_SOURCE, make_project, run_cli, xp_folders

GRIDMAN = Path(sys.executable).parent / "gridman"
README = Path(__file__).resolve().parent.parent / "README.md"
PUSH = 'xp.link.push_metrics({"train": {"loss": loss}, "epoch": epoch})'
TIMED = 'xp.link.push_metrics({"train": {"loss": loss}, "epoch": epoch, "time": time.time()})'
GRID = """\
import gridman


@gridman.Explorer
def explorer(launcher):
    launcher(seed=1, epochs=1)           # lr left at its default (0.1)
    launcher(lr=0.5, seed=2, epochs=1)
"""


def gridman(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    return subprocess.run([str(GRIDMAN), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    assert PUSH in TRAIN_SOURCE
    root = make_project(tmp_path / "proj", main_source=TRAIN_SOURCE.replace(PUSH, TIMED))
    (root / "grids").mkdir()
    (root / "grids" / "pair.py").write_text(GRID, encoding="utf8")
    return root


def test_info_prints_times_as_local_iso(project: Path) -> None:
    assert gridman(project, "run", "--", "--lr", "0.5").returncode == 0
    shown = gridman(project, "info", "--sig", "3b45fed1")
    assert shown.returncode == 0, shown.stderr
    metrics = next(line for line in shown.stdout.splitlines() if line.startswith("metrics"))
    stamp = re.search(r"time=(\S+ \S+)", metrics)
    assert stamp is not None and "e+09" not in metrics
    when = datetime.datetime.fromisoformat(stamp.group(1))  # local time, to the second
    assert abs((datetime.datetime.now() - when).total_seconds()) < 600
    every = run_cli(["info", "--sig", "3b45fed1", "--metrics"], project)
    assert "e+09" not in every.stdout and every.stdout.count(f"time={when.date()}") == 3


def test_damaged_history_is_marked(project: Path) -> None:
    assert gridman(project, "run", "--", "--lr", "0.5").returncode == 0
    folder = xp_folders(project)[0]
    (folder / "history.json").unlink()
    (folder / "history.jsonl").write_text("garbage{{\nmore junk\n", encoding="utf8")
    shown = gridman(project, "info", "--sig", "3b45fed1")
    history = next(line for line in shown.stdout.splitlines() if line.startswith("history "))
    assert "0 entries (DAMAGED" in history
    assert "history! " in shown.stdout


def test_name_keys_in_the_parsers_order(project: Path) -> None:
    result = run_cli(["grid", "pair", "--dry-run"], project)
    assert result.exit_code == 0, result.output
    # lr comes first (the parser's order) even for the XP where lr is the default
    assert "lr=0.1 seed=1" in result.stdout and "lr=0.5 seed=2" in result.stdout
    assert "seed=1 lr=0.1" not in result.stdout
    assert "Base: epochs=1" in result.stdout


def test_base_line_and_replace_done_are_explained(project: Path) -> None:
    readme = README.read_text(encoding="utf8")
    assert "`Base: ...` line above the table lists the `key=value` parts that every XP" in readme
    helped = gridman(project, "grid", "--help")
    text = " ".join(helped.stdout.split())
    assert "Their history is kept: a script that resumes from it ends at once" in text
    assert "(with --dry- run: list them)" in text or "(with --dry-run: list them)" in text


def test_clear_dry_run_lists_and_deletes_nothing(project: Path) -> None:
    ran = run_cli(["grid", "pair", "--backend", "inline", "--no-monitor"], project)
    assert ran.exit_code == 0, ran.output
    folders = xp_folders(project)
    assert len(folders) == 2
    shown = gridman(project, "grid", "pair", "--clear", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "--clear would delete 2 of 2 XP folders (dry run: nothing deleted)" in shown.stdout
    for folder in folders:
        assert f"{folder}  COMPLETED" in shown.stdout
        assert (folder / "history.json").exists()
