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

In a distributed XP only rank 0's Link writes (``RANK``, as :mod:`gridman.distrib` reads it):
the other ranks keep their pushes in memory, so that the history holds each push once.

A push writes its whole line or raises (a short write, e.g. a full disk, is undone: the journal
is truncated back to its previous length). A journal with a damaged line before its end, or
entries that cannot be folded into the history, is never erased: before anything replaces it,
it is set aside as ``history.jsonl.corrupt-<time>`` and :func:`history_warnings` reports it.

When an attempt ends, :func:`settle_history` (the runner) and :meth:`Link.settle` (the XP's own
process, on a normal exit or SIGTERM) fold the journal into the snapshot, so ``history.json``
alone holds every entry, as Dora's users and their scripts expect.

The journal is fsync'd at most once a second and on ``flush``/exit: a killed process loses
nothing (the page cache survives it); a machine crash may lose the last second of metrics.
Snapshots are always fsync'd.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Optional

from ..errors import HistoryError
from .fsutil import atomic_write_bytes, atomic_write_json, fsync_dir, read_bytes
from .signature import jsonable
from .torchenv import env_rank

HISTORY = "history.json"
JOURNAL = "history.jsonl"
#: A damaged journal set aside is renamed ``history.jsonl.corrupt-<time>``.
CORRUPT = JOURNAL + ".corrupt-"
_FSYNC_PERIOD = 1.0
_MIN_JOURNAL = 64
_open_links: weakref.WeakSet[Link] = weakref.WeakSet()


def _scan_journal(data: bytes) -> tuple[list[tuple[int, Any]], bool]:
    """The entries of a journal's bytes, and whether a complete line was damaged.

    An unterminated last line is a torn tail (a writer killed mid-write): skipped, not damage.
    """
    entries = []
    damaged = False
    lines = data.split(b"\n")
    last = len(lines) - 1
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            entries.append((int(record["i"]), record["m"]))
        except (ValueError, KeyError, TypeError):
            damaged = damaged or number < last
    return entries, damaged


def _journal_bytes(path: Path | str) -> bytes:
    try:
        return read_bytes(os.fspath(path))
    except FileNotFoundError:
        return b""


def _read_journal(path: Path | str) -> list[tuple[int, Any]]:
    return _scan_journal(_journal_bytes(path))[0]


def _fold(history: list[Any], entries: list[tuple[int, Any]]) -> bool:
    """Append the entries that extend ``history`` contiguously; True when some could not be
    (a gap: they would be lost if the journal were emptied)."""
    for index, metrics in entries:
        if index == len(history):
            history.append(metrics)
        elif index > len(history):
            return True
    return False


def _read_snapshot(folder: str) -> Optional[list[Any]]:
    """``history.json`` of ``folder`` (None when there is none); HistoryError when bad."""
    path = os.path.join(folder, HISTORY)
    try:
        history = json.loads(read_bytes(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HistoryError(f"{path}: unreadable history ({exc})") from None
    if not isinstance(history, list):
        raise HistoryError(f"{path}: history must be a JSON list, found {type(history).__name__}")
    return history


def load_history(folder: Path | str, journal: bool = True) -> list[Any]:
    """The full history of the XP in ``folder`` (empty when it has none).

    ``journal=False`` when the caller knows there is no journal (one failed open fewer).
    Raises HistoryError when ``history.json`` exists but is not a JSON list.
    """
    where = os.fspath(folder)
    entries = _read_journal(os.path.join(where, JOURNAL)) if journal else []
    history = _read_snapshot(where) or []
    _fold(history, entries)
    return history


def _set_aside(folder: Path) -> Path:
    """Keep the current journal as ``history.jsonl.corrupt-<time>`` (a hard link: no space
    needed on a full disk; a copy where links are refused). Raises OSError when it cannot,
    so that the journal is then left alone."""
    source = folder / JOURNAL
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        target = folder / (f"{CORRUPT}{stamp}" + (f".{n}" if n else ""))
        try:
            os.link(source, target)
        except FileExistsError:
            continue
        except OSError:
            if target.exists():
                continue
            atomic_write_bytes(target, read_bytes(os.fspath(source)), fsync=True)
        fsync_dir(folder)
        return target
    raise FileExistsError(errno.EEXIST, "no free name to set the journal aside", str(source))


def settle_history(folder: Path | str) -> bool:
    """Fold the journal of the XP in ``folder`` into ``history.json`` (the end of an attempt:
    no process writes it). True when ``history.json`` now holds every entry; never raises.

    A damaged journal is set aside first; the emptied journal stays for the next attempt.
    """
    where = Path(folder)
    try:
        if where.is_dir():
            _settle(where)
            return True
    except (OSError, HistoryError):
        pass  # history.json stays as it was and readers still fold the journal
    return False


def _settle(folder: Path) -> None:
    data = _journal_bytes(folder / JOURNAL)
    entries, damaged = _scan_journal(data)
    snapshot = _read_snapshot(os.fspath(folder))
    if not data and snapshot is not None:
        return  # settled already
    history = snapshot or []
    if _fold(history, entries) or damaged:
        _set_aside(folder)
    atomic_write_json(folder / HISTORY, history, fsync=True, indent=None)
    if data:
        atomic_write_bytes(folder / JOURNAL, b"", fsync=False)
        fsync_dir(folder)


def history_warnings(folder: Path | str) -> list[str]:
    """What is wrong with the XP's history files, without writing anything: journals set
    aside, or a damaged journal still in place (its entries after the damage are not shown)."""
    where = Path(folder)
    try:
        names = sorted(os.listdir(where))
    except OSError:
        return []
    warnings = [
        f"{where / name}: a damaged metrics journal was set aside; entries missing from the "
        "history may be in it (delete it once checked)"
        for name in names
        if name.startswith(CORRUPT)
    ]
    if JOURNAL in names:
        with contextlib.suppress(OSError, HistoryError):
            entries, damaged = _scan_journal(_journal_bytes(where / JOURNAL))
            history = _read_snapshot(os.fspath(where)) or []
            if _fold(history, entries) or damaged:
                warnings.append(
                    f"{where / JOURNAL}: damaged, the history stops after {len(history)} "
                    "entries; the next attempt of this XP sets the journal aside"
                )
    return warnings


class Link:
    """Records the metric history of one XP (``xp.link``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._history: Optional[list[Any]] = None
        self._journal_fd: Optional[int] = None
        self._journal_len = 0  # entries in the journal
        self._journal_size = 0  # its bytes: where a failed push truncates it back to
        self._last_sync = 0.0
        self._next_compact = 0.0  # after a failed compaction (a full disk), retry from then
        self._dirty = False
        self._checked = False  # the journal on disk was checked for damage since loading
        self._pid = os.getpid()  # a forked child (a data loader) must not settle it
        # Every rank of a distributed XP runs the same code; only rank 0 writes, so that the
        # history holds each push once (the others keep theirs in memory only).
        self._writes = env_rank() == 0

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
        self._checked = False
        self._history = load_history(self.folder) if self.folder.exists() else []

    def push_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Append one entry (nested dicts allowed) to the history, durably and in O(1).

        Raises OSError when the entry could not be written whole (e.g. a full disk): the
        journal and the history are then as they were before the call.
        """
        if not isinstance(metrics, Mapping):
            raise TypeError(f"push_metrics expects a dict, got {type(metrics).__name__}")
        entry = jsonable(dict(metrics))
        history = self.history
        if not self._writes:
            history.append(entry)
            return
        if self._journal_fd is None:
            self._open_journal()
        line = json.dumps({"i": len(history), "m": entry}, separators=(",", ":")) + "\n"
        self._append(line.encode("utf8"), len(history))
        history.append(entry)
        self._journal_len += 1
        self._dirty = True
        if self._journal_len >= max(_MIN_JOURNAL, len(history) - self._journal_len):
            self._compact_if_possible()
        elif time.monotonic() - self._last_sync > _FSYNC_PERIOD:
            self.flush()

    def _append(self, data: bytes, index: int) -> None:
        """Write ``data`` at the journal's end, whole, or undo what was written and raise."""
        fd = self._journal_fd
        assert fd is not None
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write: the disk is full (or a signal came)
                more = os.write(fd, data[written:])  # raises ENOSPC when nothing more fits
                if more <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += more
        except BaseException as exc:
            self._truncate_back()
            if isinstance(exc, OSError):
                raise OSError(
                    exc.errno,
                    f"{self.folder / JOURNAL}: metrics entry #{index} not recorded "
                    f"({exc.strerror}); the history is unchanged",
                ) from exc
            raise
        self._journal_size += len(data)

    def _truncate_back(self) -> None:
        """Remove a partly written line; when even that fails, drop the descriptor: the next
        push reopens the journal, which folds the valid lines away from the torn tail."""
        assert self._journal_fd is not None
        try:
            os.ftruncate(self._journal_fd, self._journal_size)
        except OSError:
            self._close_journal()

    def _compact_if_possible(self) -> None:
        # The entry is in the journal already: a snapshot that cannot be written (a full disk)
        # only postpones the compaction, the push itself succeeded.
        if time.monotonic() < self._next_compact:
            return
        try:
            self._compact()
        except OSError:
            self._next_compact = time.monotonic() + _FSYNC_PERIOD

    def update_history(self, history: list[Any]) -> None:
        """Replace the whole history (after loading a checkpoint, to resync with it)."""
        if not isinstance(history, list):
            raise ValueError(f"update_history expects a list, got {type(history).__name__}")
        new = [jsonable(h) for h in history]
        if not self._writes:  # a rank other than 0: see __init__
            self._history = new
            return
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

    def settle(self) -> None:
        """Close, with the whole history in ``history.json`` (the end of the XP's process).

        Only a link that wrote the journal settles it from memory; otherwise there is nothing
        new to fold, and the runner settles from disk (:func:`settle_history`).
        """
        if os.getpid() != self._pid:
            return  # a forked copy of the writer's link: the writer settles, not this copy
        if self._journal_fd is not None and (self._journal_len or not self._snapshot_exists()):
            self._compact()
        self.close()

    def _snapshot_exists(self) -> bool:
        return (self.folder / HISTORY).exists()

    def _check_journal(self) -> tuple[bytes, bool]:
        """Read the journal; set it aside when damaged (True), before anything replaces it."""
        data = _journal_bytes(self.folder / JOURNAL)
        entries, damaged = _scan_journal(data)
        aside = damaged or any(index >= len(self.history) for index, _ in entries)
        if aside:
            _set_aside(self.folder)  # raises OSError when it cannot: nothing is erased then
        self._checked = True
        return data, aside

    def _open_journal(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / JOURNAL
        data, aside = self._check_journal()
        valid = len(_scan_journal(data)[0])
        if aside or (data and (not data.endswith(b"\n") or valid != data.count(b"\n"))):
            # Damage set aside, or a torn tail from a killed writer: fold what is valid into a
            # snapshot first.
            self._compact()
            valid = 0
        self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._journal_len = valid
        self._journal_size = os.fstat(self._journal_fd).st_size
        self._last_sync = time.monotonic()
        self._pid = os.getpid()
        _open_links.add(self)
        _settle_on_sigterm()

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def _write_snapshot(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / HISTORY, self.history, fsync=True, indent=None)

    def _compact(self) -> None:
        """Write the full history as the snapshot, then start an empty journal."""
        if self._journal_fd is None and not self._checked:
            self._check_journal()  # a journal this link never opened may hold damage
        had_journal = self._journal_fd is not None
        self._close_journal()
        self._write_snapshot()
        atomic_write_bytes(self.folder / JOURNAL, b"", fsync=False)
        fsync_dir(self.folder)
        self._journal_len = 0
        self._journal_size = 0
        self._dirty = False
        if had_journal:
            path = self.folder / JOURNAL
            self._journal_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _settle_on_sigterm() -> None:
    """On SIGTERM, settle the open links' histories before dying of it, as the default action
    would; only where nothing else handles SIGTERM (a handler of the user's is kept)."""
    if threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    # From disk, not memory: the signal may have come in the middle of a push.
    for link in list(_open_links):
        if link._pid == os.getpid():  # not in a forked child (a data loader's worker)
            settle_history(link.folder)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@atexit.register
def _flush_all() -> None:
    for link in list(_open_links):
        try:
            link.settle()
        except OSError:
            with contextlib.suppress(OSError):
                link.close()
