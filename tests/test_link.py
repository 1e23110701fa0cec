"""Link: the metric history journal, its compaction, and what readers and crashes see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import gridman.core.link
from gridman.core.link import HISTORY, JOURNAL, Link, load_history
from gridman.errors import HistoryError


def entry(n: int) -> dict[str, Any]:
    return {"n": n, "train": {"loss": 1.0 / (n + 1), "acc": n % 7}, "tag": f"e{n}"}


def assert_prefix(history: list[Any], at_least: int = 0) -> None:
    """``history`` is entries 0..len-1 in order (each carries its index)."""
    assert [h["n"] for h in history] == list(range(len(history)))
    assert len(history) >= at_least


def journal_lines(folder: Path) -> list[dict[str, Any]]:
    text = (folder / JOURNAL).read_text(encoding="utf8")
    return [json.loads(line) for line in text.splitlines() if line]


def test_round_trip_nested(tmp_path: Path) -> None:
    link = Link(tmp_path / "xp")
    pushed: list[dict[str, Any]] = [
        {"train": {"loss": 0.5, "per_class": {"a": [1, 2]}}, "epoch": 0},
        {"x": None},
    ]
    for metrics in pushed:
        link.push_metrics(metrics)
    assert link.history == pushed
    link.close()
    assert load_history(tmp_path / "xp") == pushed
    assert Link(tmp_path / "xp").history == pushed


def test_empty_and_missing(tmp_path: Path) -> None:
    assert load_history(tmp_path) == []
    assert load_history(tmp_path / "nope") == []
    assert Link(tmp_path / "nope").history == []
    assert not (tmp_path / "nope").exists()  # reading creates nothing


def test_push_rejects_non_mapping(tmp_path: Path) -> None:
    link = Link(tmp_path)
    with pytest.raises(TypeError, match="expects a dict"):
        link.push_metrics([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot be part of a signature"):
        link.push_metrics({"x": object()})
    assert link.history == []


def test_pushed_entry_is_a_copy(tmp_path: Path) -> None:
    link = Link(tmp_path)
    metrics = {"loss": 1.0}
    link.push_metrics(metrics)
    metrics["loss"] = 2.0
    assert link.history == [{"loss": 1.0}]
    link.close()
    assert load_history(tmp_path) == [{"loss": 1.0}]


def test_compaction_snapshot_plus_journal(tmp_path: Path) -> None:
    link = Link(tmp_path)
    pushed = [entry(i) for i in range(300)]
    for metrics in pushed:
        link.push_metrics(metrics)
    link.close()
    snapshot = json.loads((tmp_path / HISTORY).read_text(encoding="utf8"))
    journal = journal_lines(tmp_path)
    assert 0 < len(snapshot) < 300  # compaction happened, and the journal holds the rest
    assert snapshot == pushed[: len(snapshot)]
    assert [r["i"] for r in journal] == list(range(len(snapshot), 300))
    assert snapshot + [r["m"] for r in journal] == pushed
    assert load_history(tmp_path) == pushed
    assert Link(tmp_path).history == pushed


def test_reopen_keeps_appending(tmp_path: Path) -> None:
    bounds = [0, 50, 100, 150, 400]
    for start, end in zip(bounds, bounds[1:]):
        link = Link(tmp_path)
        assert len(link.history) == start
        for i in range(start, end):
            link.push_metrics(entry(i))
        link.close()
    history = load_history(tmp_path)
    assert_prefix(history, at_least=400)
    assert len(history) == 400


def test_update_history_replaces(tmp_path: Path) -> None:
    link = Link(tmp_path)
    for i in range(100):
        link.push_metrics(entry(i))
    link.update_history([entry(0), entry(1)])
    assert link.history == [entry(0), entry(1)]
    assert load_history(tmp_path) == [entry(0), entry(1)]
    link.push_metrics(entry(2))
    link.close()
    assert load_history(tmp_path) == [entry(0), entry(1), entry(2)]
    assert Link(tmp_path).history == [entry(0), entry(1), entry(2)]
    with pytest.raises(ValueError):
        link.update_history({"a": 1})  # type: ignore[arg-type]


def test_update_history_on_fresh_link(tmp_path: Path) -> None:
    link = Link(tmp_path)
    for i in range(10):
        link.push_metrics(entry(i))
    link.close()
    other = Link(tmp_path)
    other.update_history([entry(0)])
    other.push_metrics(entry(1))
    other.close()
    assert load_history(tmp_path) == [entry(0), entry(1)]


def test_torn_journal_tail_is_ignored(tmp_path: Path) -> None:
    link = Link(tmp_path)
    for i in range(5):
        link.push_metrics(entry(i))
    link.close()
    with open(tmp_path / JOURNAL, "ab") as handle:
        handle.write(b'{"i":5,"m":{"n":5,"tr')
    assert load_history(tmp_path) == [entry(i) for i in range(5)]


@pytest.mark.parametrize("before", [5, 100])
def test_reopen_after_torn_tail(tmp_path: Path, before: int) -> None:
    link = Link(tmp_path)
    for i in range(before):
        link.push_metrics(entry(i))
    link.close()
    with open(tmp_path / JOURNAL, "ab") as handle:
        handle.write(b'{"i":' + str(before).encode() + b',"m":{"n"')
    link = Link(tmp_path)
    for i in range(before, before + 10):
        link.push_metrics(entry(i))
    link.close()
    history = load_history(tmp_path)
    assert history == [entry(i) for i in range(before + 10)]
    # the torn bytes are gone from the journal: every line parses
    assert all(isinstance(r, dict) for r in journal_lines(tmp_path))


def test_stale_journal_entries_after_crash_mid_compaction(tmp_path: Path) -> None:
    """A crash between the snapshot and emptying the journal leaves entries in both."""
    (tmp_path / HISTORY).write_text(json.dumps([entry(i) for i in range(3)]), encoding="utf8")
    lines = [json.dumps({"i": i, "m": entry(i)}) for i in range(5)]
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n", encoding="utf8")
    assert load_history(tmp_path) == [entry(i) for i in range(5)]
    link = Link(tmp_path)
    link.push_metrics(entry(5))
    link.close()
    assert load_history(tmp_path) == [entry(i) for i in range(6)]


def test_journal_gap_stops_the_history(tmp_path: Path) -> None:
    lines = [json.dumps({"i": i, "m": entry(i)}) for i in (0, 1, 3)]
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n", encoding="utf8")
    assert load_history(tmp_path) == [entry(0), entry(1)]


@pytest.mark.parametrize("content", ["{not json", '{"a": 1}', ""])
def test_bad_snapshot_raises_history_error(tmp_path: Path, content: str) -> None:
    (tmp_path / HISTORY).write_text(content, encoding="utf8")
    with pytest.raises(HistoryError, match=HISTORY):
        load_history(tmp_path)


def test_snapshot_rewrites_are_amortised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pushing is not O(n) per call: all snapshots together stay under ~4x the final size."""
    written: list[int] = []
    original = gridman.core.link.atomic_write_json

    def counting(path: Path, data: Any, fsync: bool = True, indent: int | None = 1) -> None:
        if Path(path).name == HISTORY:
            written.append(len(json.dumps(data, indent=indent)))
        original(path, data, fsync=fsync, indent=indent)

    monkeypatch.setattr(gridman.core.link, "atomic_write_json", counting)
    n = 5000
    link = Link(tmp_path)
    for i in range(n):
        link.push_metrics(entry(i))
    link.close()
    final = len(json.dumps(load_history(tmp_path), indent=None))
    journal = (tmp_path / JOURNAL).stat().st_size
    assert load_history(tmp_path) == [entry(i) for i in range(n)]
    assert 1 <= len(written) <= 12, written  # a doubling schedule: about log2(5000 / 64)
    assert sum(written) < 4 * final
    assert journal < final  # the journal never grows past the snapshot's size


READER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from gridman.core.link import load_history

    folder, done = Path(sys.argv[1]), Path(sys.argv[2])
    (folder.parent / "reader-ready").touch()
    errors, lengths, polls, last = [], set(), 0, 0
    while True:
        finished = done.exists()
        polls += 1
        try:
            raw = (folder / "history.json").read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            try:
                snap = json.loads(raw)
                if [e["n"] for e in snap] != list(range(len(snap))):
                    errors.append("snapshot not a prefix")
            except ValueError as exc:
                errors.append(f"invalid history.json: {exc}: {raw[-80:]!r}")
        history = load_history(folder)
        if [e["n"] for e in history] != list(range(len(history))):
            errors.append(f"load_history not a contiguous prefix at poll {polls}")
        if len(history) < last:
            errors.append(f"history shrank from {last} to {len(history)}")
        last = len(history)
        lengths.add(last)
        if finished or len(errors) > 5:
            break
    print(json.dumps({"errors": errors, "polls": polls, "lengths": len(lengths), "last": last}))
    """
)


def test_concurrent_reader_never_sees_torn_state(tmp_path: Path) -> None:
    folder = tmp_path / "xp"
    folder.mkdir()
    done = tmp_path / "writer-done"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(folder), str(done)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "reader-ready").exists():
            assert reader.poll() is None, reader.communicate()
            assert time.monotonic() < deadline, "reader did not start"
            time.sleep(0.01)
        link = Link(folder)
        for i in range(2000):
            link.push_metrics(entry(i) | {"pad": "x" * 100})
            if i % 20 == 0:
                time.sleep(0.001)  # let the reader interleave with compactions on 1-2 cores
        link.close()
        done.touch()
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    report = json.loads(out)
    assert report["errors"] == []
    assert report["last"] == 2000
    assert report["lengths"] >= 5, report  # it really read while the writer was pushing


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gridman.core.link import Link

    link = Link(Path(sys.argv[1]))
    for i in range(10 ** 7):
        link.push_metrics({"n": i, "pad": "y" * 200})
    """
)


def test_writer_killed_mid_pushes_leaves_a_valid_prefix(tmp_path: Path) -> None:
    folder = tmp_path / "xp"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)])
    seen = 0
    try:
        deadline = time.monotonic() + 30
        while seen < 3000:
            assert writer.poll() is None, "writer ended early"
            assert time.monotonic() < deadline, f"writer too slow ({seen} entries)"
            time.sleep(0.02)
            try:
                seen = len(load_history(folder))
            except HistoryError:  # pragma: no cover - would be the bug this test looks for
                raise
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    snapshot = json.loads((folder / HISTORY).read_text(encoding="utf8"))
    assert_prefix(snapshot)
    history = load_history(folder)
    assert_prefix(history, at_least=seen)  # nothing a reader saw before the kill is lost
    link = Link(folder)
    assert len(link.history) == len(history)
    link.push_metrics({"n": len(history)})
    link.close()
    assert_prefix(load_history(folder), at_least=len(history) + 1)
    assert len(load_history(folder)) == len(history) + 1


@pytest.mark.parametrize("when", ["before", "after"])
def test_compaction_between_the_reader_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """A deterministic interleaving: the writer compacts while a reader is mid-read."""
    link = Link(tmp_path)
    for i in range(127):  # snapshot of 64 entries + 63 in the journal: the next push compacts
        link.push_metrics(entry(i))
    assert len(json.loads((tmp_path / HISTORY).read_text(encoding="utf8"))) == 64
    original = gridman.core.link._read_journal
    calls: list[int] = []

    def racing(path: Path) -> list[tuple[int, Any]]:
        if when == "after":
            result = original(path)
        if not calls:
            calls.append(1)
            link.push_metrics(entry(127))  # compacts: snapshot of 128, empty journal
            assert (tmp_path / JOURNAL).stat().st_size == 0
        if when == "before":
            result = original(path)
        return result

    monkeypatch.setattr(gridman.core.link, "_read_journal", racing)
    history = load_history(tmp_path)
    assert calls == [1]
    assert_prefix(history, at_least=127)
    link.close()
