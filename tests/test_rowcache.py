"""The table's row cache: rows are reused only while their files are unchanged, and a corrupt,
racy or foreign cache is never trusted."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from gridman.core.explore import Explorer, Sheep
from gridman.core.link import Link
from gridman.results import rowcache
from gridman.results.rowcache import (
    CACHE_VERSION,
    RACY_NS,
    RowCache,
    cache_path,
    code_fingerprint,
    is_plain,
)
from gridman.results.rows import Row
from gridman.results.table import build_rows
from gridman.testing.grids import fake_sheep

FINGERPRINT = "test"


def explorer() -> Explorer:
    return Explorer(lambda launcher: None)


def trust(path: Path) -> None:
    """Date the cache file 10 s from now: every file is then older than it by RACY_NS (files
    touched by a test are seconds old at most, and os.utime always sets ctime to now)."""
    if path.exists():
        when = time.time_ns() + 10 * 10**9
        os.utime(path, ns=(when, when))


def rows(sheeps: list[Sheep], path: Path, explorer_: Explorer | None = None) -> list[Row]:
    """Build the rows through the cache at ``path``, then save it (as the CLI does)."""
    cache = RowCache.load(path, FINGERPRINT)
    out = build_rows(explorer_ or explorer(), sheeps, range(len(sheeps)),
                     [s.sig for s in sheeps], cache=cache)  # fmt: skip
    cache.save(s.sig for s in sheeps)
    trust(path)
    return out


def stored(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert data["version"] == CACHE_VERSION and data["fingerprint"] == FINGERPRINT
    return dict(data["rows"])


def poison(path: Path, sig: str) -> None:
    """Replace a stored row by a value no history gives: seen again only if it is trusted."""
    data = json.loads(path.read_text())
    data["rows"][sig][4] = {"epoch": -1}
    path.write_text(json.dumps(data))
    trust(path)


@pytest.fixture(autouse=True)
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are stored only for files older than RACY_NS: let the tests' files be a minute
    old as far as storing goes (trust is still decided by the cache file's mtime)."""
    monkeypatch.setattr(rowcache, "_now_ns", lambda: time.time_ns() + 60 * 10**9)


@pytest.fixture
def sheeps(tmp_path: Path) -> list[Sheep]:
    made = [
        fake_sheep(tmp_path, "aaaaaaaa", [{"loss": 0.9}, {"loss": 0.5}]),
        fake_sheep(tmp_path, "bbbbbbbb", [{"loss": 0.8}]),
        fake_sheep(tmp_path, "cccccccc"),  # never ran: no folder, never cached
    ]
    return made


def test_rows_with_the_cache_equal_rows_without(sheeps: list[Sheep], tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    plain = build_rows(explorer(), sheeps, range(3), ["a", "b", "c"])
    assert [r.metrics for r in rows(sheeps, path)] == [r.metrics for r in plain]
    assert set(stored(path)) == {"aaaaaaaa", "bbbbbbbb"}
    assert [r.metrics for r in rows(sheeps, path)] == [r.metrics for r in plain]


def test_an_unchanged_history_is_not_read_again(sheeps: list[Sheep], tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    rows(sheeps, path)
    poison(path, "aaaaaaaa")
    assert rows(sheeps, path)[0].metrics == {"epoch": -1}  # proves the cache is used


def test_a_history_edited_in_place_is_read_again(sheeps: list[Sheep], tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    rows(sheeps, path)
    history = sheeps[0].xp.folder / "history.json"
    text = history.read_text()
    history.write_text(text.replace("0.5", "0.7"))  # same size, same inode, new mtime/ctime
    assert rows(sheeps, path)[0].metrics == {"epoch": 2, "loss": 0.7}


def test_a_push_to_the_journal_is_seen(sheeps: list[Sheep], tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    rows(sheeps, path)
    poison(path, "bbbbbbbb")
    link = Link(sheeps[1].xp.folder)
    link.push_metrics({"loss": 0.1})  # a journal appears: the folder changes
    link.close()
    assert rows(sheeps, path)[1].metrics == {"epoch": 2, "loss": 0.1}
    poison(path, "bbbbbbbb")
    link = Link(sheeps[1].xp.folder)
    link.push_metrics({"loss": 0.05})  # an append to the existing journal: only it changes
    link.close()
    assert rows(sheeps, path)[1].metrics == {"epoch": 3, "loss": 0.05}


def test_new_and_removed_files_are_seen(sheeps: list[Sheep], tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    rows(sheeps, path)
    poison(path, "aaaaaaaa")
    (sheeps[0].xp.folder / "history.json").unlink()
    assert rows(sheeps, path)[0].metrics == {"epoch": 0}
    fake_sheep(tmp_path, "cccccccc", [{"acc": 1.0}])
    assert rows(sheeps, path)[2].metrics == {"epoch": 1, "acc": 1.0}


def test_stage_results_are_read_fresh(sheeps: list[Sheep], tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    rows(sheeps, path)
    result = sheeps[0].xp.folder / "stages" / "test"
    result.mkdir(parents=True)
    (result / "result.json").write_text(json.dumps({"version": 1, "metrics": {"acc": 0.9}}))
    fresh = build_rows(explorer(), sheeps, [0], ["a"])[0].metrics
    assert rows(sheeps, path)[0].metrics == fresh


def test_racy_rows_are_not_trusted(sheeps: list[Sheep], tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    rows(sheeps, path)
    poison(path, "aaaaaaaa")
    folder = sheeps[0].xp.folder
    newest = max(max(st.st_mtime_ns, st.st_ctime_ns)
                 for st in (os.stat(folder), os.stat(folder / "history.json")))  # fmt: skip
    written = newest + RACY_NS // 2  # the cache is barely newer than the XP's files
    os.utime(path, ns=(written, written))
    cache = RowCache.load(path, FINGERPRINT)
    got = build_rows(explorer(), sheeps, [0], ["a"], cache=cache)
    assert got[0].metrics == {"epoch": 2, "loss": 0.5}  # recomputed, not the stored row


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"[1, 2]",
        json.dumps({"version": CACHE_VERSION + 1, "fingerprint": FINGERPRINT, "rows": {}}).encode(),
        json.dumps({"version": CACHE_VERSION, "fingerprint": "other", "rows": {}}).encode(),
        json.dumps({"version": CACHE_VERSION, "fingerprint": FINGERPRINT, "rows": []}).encode(),
        json.dumps({"version": CACHE_VERSION, "fingerprint": FINGERPRINT,
                    "rows": {"aaaaaaaa": "junk", "bbbbbbbb": [1, 2, 3, 4, "x"]}}).encode(),
    ],
)  # fmt: skip
def test_a_corrupt_or_foreign_cache_is_ignored(
    sheeps: list[Sheep], tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(content)
    trust(path)  # newer than every file: only its content can make it wrong
    got = [r.metrics for r in rows(sheeps, path)]
    assert got == [{"epoch": 2, "loss": 0.5}, {"epoch": 1, "loss": 0.8}, {"epoch": 0}]
    assert set(stored(path)) == {"aaaaaaaa", "bbbbbbbb"}  # replaced by a valid cache


def test_a_corrupt_history_is_an_error_row_never_cached(
    sheeps: list[Sheep], tmp_path: Path
) -> None:
    path = tmp_path / "cache.json"
    (sheeps[0].xp.folder / "history.json").write_text("[{")
    for _ in range(2):
        row = rows(sheeps, path)[0]
        assert row.error and "unreadable history" in row.error
    assert "aaaaaaaa" not in stored(path)


def test_only_plain_rows_are_stored(sheeps: list[Sheep], tmp_path: Path) -> None:
    class Tuples(Explorer):
        def process_history(self, history: list[Any]) -> dict[str, Any]:
            return {"pair": (1, 2), "n": len(history)}

    path = tmp_path / "cache.json"
    first = rows(sheeps, path, Tuples(lambda launcher: None))
    assert first[0].metrics == {"pair": (1, 2), "n": 2}
    assert not path.exists() or not stored(path)
    assert is_plain({"a": [1, 2.5, "x", None, True, {"b": 1}]})
    assert not is_plain({"a": (1,)}) and not is_plain({1: 2}) and not is_plain({"a": {1, 2}})


def test_process_sheep_and_opt_out_never_use_the_cache(sheeps: list[Sheep], tmp_path: Path) -> None:
    class BySheep(Explorer):
        def process_sheep(self, sheep: Sheep, history: list[Any]) -> dict[str, Any]:
            return {"state": sheep.state or "none", "n": len(history)}

    class OptOut(Explorer):
        cache_rows = False

    for kind in (BySheep, OptOut):
        path = tmp_path / f"{kind.__name__}.json"
        rows(sheeps, path, kind(lambda launcher: None))
        assert not path.exists()


def test_an_unwritable_cache_is_silently_skipped(sheeps: list[Sheep], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    got = rows(sheeps, blocker / "sub" / "cache.json")  # its folder cannot be created
    assert got[0].metrics == {"epoch": 2, "loss": 0.5}


def test_the_fingerprint_follows_the_explorer_code(tmp_path: Path) -> None:
    import importlib.util
    import sys

    source = tmp_path / "myexplorer.py"
    source.write_text("from gridman import Explorer\nclass Mine(Explorer):\n    pass\n")
    spec = importlib.util.spec_from_file_location("myexplorer", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["myexplorer"] = module
    try:
        spec.loader.exec_module(module)
        mine = module.Mine(lambda launcher: None)
        before = code_fingerprint(mine, [tmp_path])
        assert code_fingerprint(mine, [tmp_path]) == before
        assert code_fingerprint(explorer(), [tmp_path]) != before  # another class
        source.write_text(source.read_text() + "# edited\n")
        assert code_fingerprint(mine, [tmp_path]) != before
    finally:
        sys.modules.pop("myexplorer", None)


def test_cache_path() -> None:
    assert cache_path(Path("/x/out"), "mygrid") == Path("/x/out/grids/mygrid/table-cache.json")


def test_grid_table_through_the_cache(tmp_path: Path) -> None:
    """``gridman grid`` writes the cache, reuses it, and still shows a history changed since."""
    from gridman.testing import run_cli
    from gridman.testing.grids import make_grid_project, parse_json_rows

    def table(*args: str) -> list[dict[str, Any]]:
        done = run_cli(["grid", "main", *args, "--json"], root)
        assert done.exit_code == 0, done.output
        return [
            {k: v for k, v in row.items() if k != "plan"} for row in parse_json_rows(done.stdout)
        ]

    root = make_grid_project(tmp_path / "proj", {"main": "launcher(lr=0.2)\nlauncher(lr=0.3)"})
    first = table("--backend", "inline")
    assert all(row["state"] == "COMPLETED" and "train.loss" in row["metrics"] for row in first)
    path = cache_path(root / "outputs", "main")
    assert set(json.loads(path.read_text())["rows"]) == {row["sig"] for row in first}
    trust(path)
    assert table("--dry-run") == first
    link = Link(Path(first[0]["folder"]))
    link.push_metrics({"train": {"loss": 0.001}})
    link.close()
    later = table("--dry-run")
    assert later[0]["metrics"]["train.loss"] == 0.001
    assert later[1] == first[1]


def test_rows_of_just_written_files_are_not_stored(
    sheeps: list[Sheep], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rowcache, "_now_ns", time.time_ns)  # the files are seconds old at most
    path = tmp_path / "cache.json"
    assert rows(sheeps, path)[0].metrics == {"epoch": 2, "loss": 0.5}
    assert not path.exists()  # nothing a cache written now could trust: nothing written
