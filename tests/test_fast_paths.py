"""The memos and GC pauses of the big-grid fast paths never change a result."""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from gridman.core import fastargs
from gridman.core.explore import to_argv
from gridman.core.names import grid_names
from gridman.core.perf import freezing, paused_gc, thaw


def test_paused_gc_restores_the_previous_state() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with paused_gc():
            assert not gc.isenabled()
            with paused_gc():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner block does not re-enable it
            raise ValueError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # disabled before: left disabled
    finally:
        gc.enable()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--tags", type=json.loads, default=None)
    p.add_argument("--fast", action="store_true")
    return p


def test_fast_parse_remembers_only_immutable_values() -> None:
    table = fastargs.option_table(parser())
    assert table is not None
    argv = ["--lr=0.5", "--tags=[1, 2]", "--fast"]
    first = fastargs.fast_parse(table, {"lr": 0.1, "tags": None, "fast": False}, argv)
    again = fastargs.fast_parse(table, {"lr": 0.1, "tags": None, "fast": False}, argv)
    assert first == again == {"lr": 0.5, "tags": [1, 2], "fast": True}
    assert first is not None and again is not None
    assert first["tags"] is not again["tags"]  # a list is parsed anew for every XP
    assert set(table.seen) == {"--lr=0.5", "--fast"}
    assert fastargs.fast_parse(table, {}, ["--lr=oops"]) is None  # bad values never remembered
    assert "--lr=oops" not in table.seen


class FakeMain:
    """Records value_to_argv calls (like ArgparseMain: repr of numbers, bare True flags)."""

    def __init__(self) -> None:
        self.calls = 0

    def value_to_argv(self, key: str, value: Any) -> list[str]:
        self.calls += 1
        return [f"--{key}"] if value is True else [f"--{key}={value!r}"]


def test_to_argv_memo_keeps_equal_but_different_values_apart() -> None:
    main = FakeMain()
    memo: dict[Any, list[str]] = {}
    got = [to_argv(main, {"x": v}, memo) for v in (0.0, -0.0, 1, 1.0, True, 0.0, 1)]  # type: ignore[arg-type]
    assert got == [["--x=0.0"], ["--x=-0.0"], ["--x=1"], ["--x=1.0"], ["--x"], ["--x=0.0"],
                   ["--x=1"]]  # fmt: skip
    assert main.calls == 5
    assert to_argv(main, {"x": [1]}, memo) == ["--x=[1]"] and main.calls == 6  # not memoised


def test_names_keep_equal_but_different_values_apart() -> None:
    base, names = grid_names([[("x", 0.0)], [("x", -0.0)], [("x", 1)], [("x", True)]])
    assert base == "" and names == ["x=0.0", "x=-0.0", "x=1", "x"]


@pytest.mark.parametrize("size", [0, 1, 3000, 65535, 65536, 65537, 200_000])
def test_read_bytes_reads_whole_files_of_any_size(tmp_path: Path, size: int) -> None:
    """One read when the file is shorter than a chunk; the whole file at chunk boundaries."""
    from gridman.core.fsutil import read_bytes

    data = bytes(i % 251 for i in range(size))
    path = tmp_path / "f"
    path.write_bytes(data)
    assert read_bytes(str(path)) == data


def test_freezing_freezes_what_bulk_phases_leave_and_unfreezes_at_the_end() -> None:
    gc.unfreeze()
    kept = []
    with paused_gc():
        kept.append([{} for _ in range(100)])
    assert gc.get_freeze_count() == 0  # a library call freezes nothing
    with freezing():
        assert gc.get_freeze_count() == 0
        with paused_gc():
            kept.append([{} for _ in range(100)])
        assert gc.get_freeze_count() > 100
        with freezing():  # nested: the outer block still owns the freeze
            pass
        assert gc.get_freeze_count() > 100
    assert gc.get_freeze_count() == 0
    with freezing():
        with paused_gc():
            kept.append([])
        thaw()  # the monitor: nothing stays frozen, and later phases freeze nothing
        assert gc.get_freeze_count() == 0
        with paused_gc():
            kept.append([])
        assert gc.get_freeze_count() == 0
    assert gc.isenabled()
