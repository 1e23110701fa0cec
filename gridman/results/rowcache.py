"""A per-grid cache of table rows, so that the table skips histories that did not change.

Building the table decodes every XP's history (10,000 histories of 100 entries: most of the
table's time) only to keep what ``Explorer.process_history`` returns, usually a few numbers.
``<dir>/grids/<grid>/table-cache.json`` keeps that result for each XP, keyed by the identity
``(inode, size, mtime_ns, ctime_ns)`` of the XP folder, of ``history.jsonl`` and of
``history.json`` (null when absent), with whether ``stages/`` existed. A later table stats the
folder first: an unchanged folder has had nothing created, removed or renamed in it (so a
missing journal, snapshot or ``stages/`` is still missing); the journal and the snapshot, when
they exist, are stat'd too (appends and edits in place do not change the folder). When every
key is unchanged the stored metrics are reused; anything else (a push to the journal, a new
snapshot, an edit in place, a deleted or new file) gives another key, and the history is read
again. Stage results are never cached: they are read whenever ``stages/`` exists.

Correctness rules:

- Racy entries are never trusted: a file whose mtime or ctime is less than :data:`RACY_NS`
  older than the cache file itself could still change within the same timestamp tick without
  its key changing (as git treats its index), so its row is recomputed (and the cache rewritten
  once the file is old enough); rows of files changed within RACY_NS of now are not stored.
- The whole file is ignored unless its ``version`` and ``fingerprint`` match. The fingerprint
  covers gridman's version, the Explorer's class, and the path, size and mtime of every Python
  file that could define ``process_history``: the modules of the Explorer's classes, the grid
  files and any module loaded from the project (so editing ``grids/_explorers.py`` or a helper
  it imports invalidates every row).
- Only plain JSON rows are stored (dicts with string keys, lists, str, int, float, bool, None,
  checked by exact type) so that a cached row is equal to, and of the same types as, a computed
  one. Rows with errors, ``process_sheep`` overrides (they see the job state), trimmed
  histories and sparklines never use the cache; ``Explorer.cache_rows = False`` turns it off.
- The file is written atomically (temporary file + rename, not fsync'd: it is only a cache) and
  only when something changed. A corrupt, truncated or foreign file is ignored and replaced;
  failing to write it (read-only folder) is silent.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import atomic_write_bytes
from ..core.perf import paused_gc

CACHE_FILE = "table-cache.json"
CACHE_VERSION = 1
#: Files changed less than this before the cache was written are not trusted (2 s).
RACY_NS = 2_000_000_000


def _now_ns() -> int:
    """This machine's clock (only to tell when a row is worth storing; trust is decided
    against the cache file's own mtime, the file system's clock)."""
    return time.time_ns()


#: ``[inode, size, mtime_ns, ctime_ns]`` of a file or folder, or None when it does not exist.
FileKey = Optional[list[int]]

_JOURNAL = "/history.jsonl"
_HISTORY = "/history.json"
_STAGES = "/stages"


def file_key(path: str) -> FileKey:
    """The identity of ``path`` (None when missing; other errors propagate)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


@dataclass(frozen=True)
class RowKeys:
    """What a row was computed from: the XP folder, its journal and its snapshot, and whether
    the folder had a ``stages/`` folder (stage results are never cached, only looked for)."""

    folder: FileKey
    journal: FileKey
    history: FileKey
    stages: bool

    @classmethod
    def of(cls, folder: str, folder_key: FileKey) -> RowKeys:
        """Stat the files of the XP in ``folder`` (after the folder itself: whatever is
        created later changes the folder's key)."""
        return cls(
            folder_key,
            file_key(folder + _JOURNAL),
            file_key(folder + _HISTORY),
            os.path.isdir(folder + _STAGES),
        )


def is_plain(value: Any) -> bool:
    """Whether ``value`` survives a JSON round trip unchanged, types included."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if kind is dict:
        return all(type(k) is str and is_plain(v) for k, v in value.items())
    if kind is list:
        return all(is_plain(v) for v in value)
    return False


class RowCache:
    """The stored rows of one grid: ``get`` a trusted row, ``put`` a computed one, ``save``."""

    def __init__(self, path: Optional[Path], fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self._rows: dict[str, Any] = {}
        self._trusted_ns = 0  # keys must be older than this (the file's mtime - RACY_NS)
        self._dirty = False

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> RowCache:
        """The cache at ``path``; empty when missing, unreadable, corrupt or for other code."""
        cache = cls(path, fingerprint)
        try:
            with open(path, "rb") as handle:
                written = os.fstat(handle.fileno()).st_mtime_ns
                with paused_gc():  # ~100,000 small containers for 10,000 rows
                    data = json.loads(handle.read())
        except (OSError, ValueError):
            return cache
        if (
            isinstance(data, dict)
            and data.get("version") == CACHE_VERSION
            and data.get("fingerprint") == fingerprint
            and isinstance(data.get("rows"), dict)
        ):
            cache._rows = data["rows"]
            cache._trusted_ns = written - RACY_NS
        return cache

    def get(self, sig: str, folder: str, folder_key: list[int]) -> Optional[tuple[Any, bool]]:
        """(metrics, whether stages/ exists) stored for ``sig`` when its folder and history
        files are unchanged and older than the cache file by RACY_NS; else None.

        One stat of the folder tells whether files were created, removed or replaced in it;
        the journal and the snapshot, when they exist, are stat'd too (appends and edits in
        place do not change the folder)."""
        entry = self._rows.get(sig)
        if type(entry) is not list or len(entry) != 5 or type(entry[4]) is not dict:
            return None
        if entry[0] != folder_key or not self._trusted(folder_key):
            return None
        for index, name in ((1, _JOURNAL), (2, _HISTORY)):
            if entry[index] is not None:
                key = file_key(folder + name)
                if entry[index] != key or not self._trusted(key):
                    return None
        return entry[4], entry[3] is True

    def _trusted(self, key: FileKey) -> bool:
        if key is None or max(key[2], key[3]) < self._trusted_ns:
            return True
        if max(key[2], key[3]) + RACY_NS < _now_ns():
            self._dirty = True  # old enough now: rewriting the cache makes it trusted
        return False

    def put(self, sig: str, keys: RowKeys, metrics: Mapping[str, Any]) -> None:
        """Store the metrics computed from the files with these keys (plain JSON rows only;
        not when a file changed within RACY_NS: the cache written now could not trust it)."""
        newest = max((max(k[2], k[3]) for k in (keys.folder, keys.journal, keys.history) if k),
                     default=0)  # fmt: skip
        if newest + RACY_NS >= _now_ns():
            return  # stored on a later look (a fresh --init writes no cache at all)
        if type(metrics) is not dict or not is_plain(metrics):
            if self._rows.pop(sig, None) is not None:
                self._dirty = True
            return
        entry = [keys.folder, keys.journal, keys.history, keys.stages, metrics]
        if self._rows.get(sig) != entry:
            self._rows[sig] = entry
            self._dirty = True

    def save(self, sigs: Iterable[str]) -> None:
        """Write the rows of ``sigs`` (the grid's XPs) atomically, if anything changed."""
        if self.path is None:
            return
        keep = set(sigs)
        if any(sig not in keep for sig in self._rows):
            self._rows = {sig: row for sig, row in self._rows.items() if sig in keep}
            self._dirty = True
        if not self._dirty:
            return
        data = {"version": CACHE_VERSION, "fingerprint": self.fingerprint, "rows": self._rows}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps(data, separators=(",", ":"))
            atomic_write_bytes(self.path, text.encode("utf8"), fsync=False)
        except (OSError, ValueError):
            return  # only a cache: a read-only folder or an odd float must not break the table
        self._dirty = False


def code_fingerprint(explorer: Any, roots: Sequence[Path] = ()) -> str:
    """A digest of everything ``explorer``'s rows may depend on besides the history: gridman's
    version, the Explorer's class and the Python files it may run (see the module doc)."""
    from .. import __version__

    cls = type(explorer)
    files = {_module_file(k.__module__) for k in cls.__mro__ if k is not object}
    prefixes = tuple(os.path.join(str(r), "") for r in roots)
    system = tuple(os.path.join(p, "") for p in {sys.prefix, sys.base_prefix, sys.exec_prefix} if p)
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        if name.startswith("_gridman_grids") or (
            path.startswith(prefixes) and not path.startswith(system) and "-packages" not in path
        ):
            files.add(path)
    parts = [str(CACHE_VERSION), __version__, f"{cls.__module__}.{cls.__qualname__}"]
    for path in sorted(f for f in files if f):
        try:
            st = os.stat(path)
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:missing")
    return hashlib.sha1("\n".join(parts).encode("utf8")).hexdigest()


def _module_file(name: str) -> str:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) else ""


def cache_path(dir: Path, grid: str) -> Path:
    """Where the rows of grid ``grid`` are cached: ``<dir>/grids/<grid>/table-cache.json``."""
    return Path(dir) / "grids" / grid / CACHE_FILE
