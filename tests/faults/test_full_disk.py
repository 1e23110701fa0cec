"""A briefly full disk (a real 1 MiB tmpfs): a push is written whole or raises, and a journal
damaged in the middle is set aside and reported, never erased."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridman.core.link import HISTORY, JOURNAL, Link, load_history
from gridman.testing import make_project, read_json_file, run_cli
from gridman.testing.faults import (
    FILL_TRAIN_SOURCE,
    fill_disk,
    needs_root,
    old_style_append,
    small_tmpfs,
)

pytestmark = needs_root()
CORRUPT = "history.jsonl.corrupt-"  # where a damaged journal is set aside
PAGE = 4096


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, unmounted after the test."""
    with small_tmpfs(tmp_path / "disk", "1m") as mount:
        yield mount


@pytest.fixture
def project(tmp_path: Path, disk: Path) -> Path:
    """A project whose XP folders are on the small disk."""
    return make_project(tmp_path / "proj", main_source=FILL_TRAIN_SOURCE,
                        settings={"dir": str(disk / "outputs")})  # fmt: skip


def the_xp(disk: Path) -> Path:
    """The one XP folder on the small disk."""
    (folder,) = (disk / "outputs" / "xps").iterdir()
    return folder


def entry(n: int) -> dict[str, Any]:
    return {"n": n, "pad": "p" * 5000}  # each journal line crosses a page


def test_push_on_a_full_disk_raises_and_leaves_the_journal_whole(disk: Path) -> None:
    folder = disk / "xp"
    link = Link(folder)
    for i in range(3):
        link.push_metrics(entry(i))
    size = (folder / JOURNAL).stat().st_size
    assert size % PAGE, "the journal's last page must have room: the write is cut short"
    filler = fill_disk(disk)
    with pytest.raises(OSError, match="not recorded"):
        link.push_metrics(entry(3))
    assert (folder / JOURNAL).stat().st_size == size  # the partial line was removed
    assert link.history == [entry(i) for i in range(3)]
    filler.unlink()  # the disk was full only briefly
    for i in range(3, 6):
        link.push_metrics(entry(i))
    link.close()
    assert load_history(folder) == [entry(i) for i in range(6)]
    assert Link(folder).history == [entry(i) for i in range(6)]


def test_briefly_full_disk_fails_the_xp_then_the_rerun_completes(project: Path, disk: Path) -> None:
    first = run_cli(["run", "--", "--fill_at", "3"], project)
    folder = the_xp(disk)
    log = (folder / "log" / "1.log").read_text(encoding="utf8")
    assert first.exit_code == 1, log  # not COMPLETED with fewer epochs
    assert read_json_file(folder / "job.json")["state"] == "FAILED"
    assert "not recorded" in log
    assert [h["epoch"] for h in load_history(folder)] == [0, 1, 2]
    again = run_cli(["run"], project)  # the same XP (fill_at is excluded), the disk is free
    assert again.exit_code == 0, again.output
    history = read_json_file(folder / HISTORY)
    assert [h["epoch"] for h in history] == list(range(6))
    assert load_history(folder) == history
    assert not list(folder.glob(CORRUPT + "*"))


def line(i: int) -> bytes:
    return json.dumps({"i": i, "m": {"epoch": i, "pad": "x" * 5000}}).encode() + b"\n"


def damage_journal(folder: Path, disk: Path) -> bytes:
    """What gridman <= 0.2 left after a briefly full disk: line 3 whole, line 4 cut short by a
    real short write, then lines 5 and 6 appended after it. Returns the journal's bytes."""
    journal = folder / JOURNAL
    old_style_append(journal, line(3))
    filler = fill_disk(disk)
    assert 0 < old_style_append(journal, line(4)) < len(line(4))  # the fault really happened
    filler.unlink()
    for i in (5, 6):
        old_style_append(journal, line(i))
    return journal.read_bytes()


@pytest.mark.parametrize("epochs", [4, 6])
def test_damaged_journal_is_set_aside_and_reported(project: Path, disk: Path, epochs: int) -> None:
    """epochs=4: the rerun pushes nothing (the runner settles the history); epochs=6: it
    pushes epochs 4 and 5 (the XP's link opens the damaged journal)."""
    assert run_cli(["run", "--", "--epochs", "3"], project).exit_code == 0
    folder = the_xp(disk)
    damaged = damage_journal(folder, disk)
    sig = folder.name
    info = json.loads(run_cli(["info", "--sig", sig, "--json"], project).stdout)
    assert info["history_len"] == 4  # the entries after the damaged line cannot be read
    assert any("damaged" in w for w in info["history_warnings"])

    rerun = run_cli(["run", "--sig", sig, "--", "--epochs", str(epochs)], project)
    assert rerun.exit_code == 0, rerun.output
    (aside,) = folder.glob(CORRUPT + "*")
    assert aside.read_bytes() == damaged  # never erased: every byte is kept
    history = read_json_file(folder / HISTORY)
    assert [h["epoch"] for h in history] == list(range(max(epochs, 4)))
    assert (folder / JOURNAL).read_bytes() == b""
    shown = run_cli(["info", "--sig", sig], project)
    assert shown.exit_code == 0 and str(aside) in shown.stdout and "history!" in shown.stdout


def test_a_state_file_that_cannot_be_written_is_an_error_naming_it(disk: Path) -> None:
    """A full disk under an atomic write: the error names the file, the old contents stay."""
    from gridman.core.fsutil import atomic_write_bytes

    target = disk / "job.json"
    target.write_bytes(b'{"old": true}')
    fill_disk(disk)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(target, b"x" * 200_000)
    assert caught.value.filename == str(target)  # os.write alone names no file
    assert target.read_bytes() == b'{"old": true}'
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "job.json"]  # no temporary left
