"""Link: how a running XP records its metric history, cheaply and crash-safely.

On disk an XP's history is two files:

- ``history.json``: a JSON list of metric dicts, always complete and valid (replaced atomically);
- ``history.jsonl``: a journal of the pushes made since that snapshot, one
  ``{"i": index, "m": metrics}`` line each, appended with a single ``write``.

``push_metrics`` appends one journal line (O(1)); the snapshot is rewritten only when the journal
holds as many entries as the snapshot (amortised O(1) per push, about twice the history's bytes
written in total). A reader takes the journal first, then the snapshot, and keeps the journal
entries that extend the snapshot contiguously; a torn last line (a writer killed mid-write) is
ignored. A reader therefore never sees a torn file and never sees an entry twice.

The journal is fsync'd at most once a second and on ``flush``/exit: a killed process loses
nothing (the page cache survives it); a machine crash may lose the last second of metrics.
Snapshots are always fsync'd.
"""

from __future__ import annotations

import atexit
import json
import os
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from ..errors import HistoryError
from .fsutil import atomic_write_bytes, atomic_write_json, fsync_dir, read_bytes
from .signature import jsonable

HISTORY = "history.json"
JOURNAL = "history.jsonl"
_FSYNC_PERIOD = 1.0
_MIN_JOURNAL = 64
_open_links: weakref.WeakSet[Link] = weakref.WeakSet()


def _read_journal(path: Path | str) -> list[tuple[int, Any]]:
    try:
        data = read_bytes(os.fspath(path))
    except FileNotFoundError:
        return []
    entries = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            entries.append((int(record["i"]), record["m"]))
        except (ValueError, KeyError, TypeError):
            break  # a torn line can only be the last one a killed writer left
    return entries


def load_history(folder: Path | str, journal: bool = True) -> list[Any]:
    """The full history of the XP in ``folder`` (empty when it has none).

    ``journal=False`` when the caller knows there is no journal (one failed open fewer).
    Raises HistoryError when ``history.json`` exists but is not a JSON list.
    """
    where = os.fspath(folder)
    entries = _read_journal(os.path.join(where, JOURNAL)) if journal else []
    path = os.path.join(where, HISTORY)
    try:
        history = json.loads(read_bytes(path))
    except FileNotFoundError:
        history = []
    except (OSError, ValueError) as exc:
        raise HistoryError(f"{path}: unreadable history ({exc})") from None
    if not isinstance(history, list):
        raise HistoryError(f"{path}: history must be a JSON list, found {type(history).__name__}")
    for index, metrics in entries:
        if index == len(history):
            history.append(metrics)
        elif index > len(history):
            break
    return history


class Link:
    """Records the metric history of one XP (``xp.link``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._history: Optional[list[Any]] = None
        self._journal_fd: Optional[int] = None
        self._journal_len = 0
        self._last_sync = 0.0
        self._dirty = False

    @property
    def history(self) -> list[Any]:
        """The history so far: a list with one metrics dict per push."""
        if self._history is None:
            self.load()
        assert self._history is not None
        return self._history

    def load(self) -> None:
        """(Re)read the history from disk."""
        self._close_journal()
        self._history = load_history(self.folder) if self.folder.exists() else []

    def push_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Append one entry (nested dicts allowed) to the history, durably and in O(1)."""
        if not isinstance(metrics, Mapping):
            raise TypeError(f"push_metrics expects a dict, got {type(metrics).__name__}")
        entry = jsonable(dict(metrics))
        history = self.history
        if self._journal_fd is None:
            self._open_journal()
        line = json.dumps({"i": len(history), "m": entry}, separators=(",", ":")) + "\n"
        assert self._journal_fd is not None
        os.write(self._journal_fd, line.encode("utf8"))
        history.append(entry)
        self._journal_len += 1
        self._dirty = True
        if self._journal_len >= max(_MIN_JOURNAL, len(history) - self._journal_len):
            self._compact()
        elif time.monotonic() - self._last_sync > _FSYNC_PERIOD:
            self.flush()

    def update_history(self, history: list[Any]) -> None:
        """Replace the whole history (after loading a checkpoint, to resync with it)."""
        if not isinstance(history, list):
            raise ValueError(f"update_history expects a list, got {type(history).__name__}")
        new = [jsonable(h) for h in history]
        # Snapshot what exists, empty the journal, then write the new list: a crash at any
        # point leaves either the old history or the new one, never a mix.
        self.history  # noqa: B018 - load before replacing
        self._compact()
        self._history = new
        self._write_snapshot()

    def flush(self) -> None:
        """fsync the journal now (pushes are otherwise synced at most once a second)."""
        if self._journal_fd is not None and self._dirty:
            os.fsync(self._journal_fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Flush and release the journal."""
        self.flush()
        self._close_journal()

    def _open_journal(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / JOURNAL
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        valid = len(_read_journal(path))
        if data and (not data.endswith(b"\n") or valid != data.count(b"\n")):
            # A torn tail from a killed writer: fold what is valid into a snapshot first.
            self._compact()
            valid = 0
        self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._journal_len = valid
        self._last_sync = time.monotonic()
        _open_links.add(self)

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def _write_snapshot(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / HISTORY, self.history, fsync=True, indent=None)

    def _compact(self) -> None:
        """Write the full history as the snapshot, then start an empty journal."""
        had_journal = self._journal_fd is not None
        self._close_journal()
        self._write_snapshot()
        atomic_write_bytes(self.folder / JOURNAL, b"", fsync=False)
        fsync_dir(self.folder)
        self._journal_len = 0
        self._dirty = False
        if had_journal:
            path = self.folder / JOURNAL
            self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


@atexit.register
def _flush_all() -> None:
    for link in list(_open_links):
        try:
            link.close()
        except OSError:
            pass
