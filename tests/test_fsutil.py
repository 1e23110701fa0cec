"""gridman.core.fsutil's atomic writes: permissions, temporary names, failures leave no debris."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gridman.core import fsutil
from gridman.core.fsutil import atomic_write_bytes, atomic_write_json, read_json


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_with_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}\n", fsync=False)
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.json", b"{}\n")
    finally:
        os.umask(umask)
    assert _mode(tmp_path / "a.json") == 0o644
    assert _mode(tmp_path / "b.json") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]  # no temporaries


def test_private_files_are_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        seen.append(stat.S_IMODE(os.stat(src).st_mode))  # the temporary, before it is renamed
        replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", spy)
    atomic_write_json(tmp_path / "entry", {"env": {"TOKEN": "x"}}, fsync=False, private=True)
    assert seen == [0o600]
    assert _mode(tmp_path / "entry") == 0o600
    assert read_json(tmp_path / "entry") == {"env": {"TOKEN": "x"}}


def test_a_temporary_name_left_by_a_crash_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsutil, "_temp_names", iter(range(10)))
    for n in range(3):  # a crashed process with the same pid left these behind
        (tmp_path / f".job.json.{os.getpid()}.{n}.tmp").write_text("torn")
    atomic_write_bytes(tmp_path / "job.json", b"new\n")
    assert (tmp_path / "job.json").read_bytes() == b"new\n"
    assert (tmp_path / f".job.json.{os.getpid()}.0.tmp").read_text() == "torn"  # not touched


def test_a_failed_rename_removes_the_temporary_and_keeps_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()  # a folder cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "target", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["target"]


def test_large_contents_are_written_whole(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    atomic_write_bytes(tmp_path / "big", data, fsync=False)
    assert (tmp_path / "big").read_bytes() == data


def test_relative_path_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    atomic_write_bytes(Path("here.txt"), b"x")
    assert (tmp_path / "here.txt").read_bytes() == b"x"
