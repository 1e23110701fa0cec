"""Histories as curves for display: every flat metric of an XP, downsampled to ``points``.

A history longer than ``points`` is cut into ``points // 2`` buckets of consecutive entries,
and each bucket keeps its smallest and its largest value (in entry order): spikes and dips
stay visible however long the history, which a plain stride would drop. Display only: exports
and tables never go through here.

:class:`CurveStore` keeps, per XP folder, the downsampled curves of every metric as ready JSON
text, keyed by the identity (inode, size, mtime_ns) of ``history.json`` and ``history.jsonl``:
a live poll of 1,000 XPs re-reads only the histories that changed, and switching the metric
shown reads nothing again.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast

from ..core.link import HISTORY, JOURNAL, load_history
from ..errors import UnknownXPError, UsageError

VERSION = 1
DEFAULT_POINTS = 800
MAX_POINTS = 5000
MIN_POINTS = 2

Number = Optional[float]
FileKey = Optional[tuple[int, int, int]]


def points_param(text: Optional[str]) -> int:
    """The ``points`` parameter: DEFAULT_POINTS when absent, else MIN_POINTS..MAX_POINTS."""
    if text is None:
        return DEFAULT_POINTS
    if not text.isdigit() or len(text) > 6:
        raise UsageError(f"points must be a whole number, got {text[:40]!r}")
    value = int(text)
    if not MIN_POINTS <= value <= MAX_POINTS:
        raise UsageError(f"points must be between {MIN_POINTS} and {MAX_POINTS}, got {value}")
    return value


def _flatten_into(entry: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in entry.items():
        if type(value) is dict and value:
            _flatten_into(value, f"{prefix}{key}.", out)
        else:
            out[prefix + key] = value


def columns(history: Sequence[Any]) -> dict[str, list[Number]]:
    """Each flat metric key (first-seen order) -> its value in every entry (None: absent).
    Two levels of nesting (``{"train": {"loss"}}``) are walked inline: this runs for every
    entry of every history shown (10,000,000 for 1,000 XPs of 10,000 entries)."""
    cols: dict[str, list[Number]] = {}
    size = len(history)
    deeper: dict[str, Any] = {}
    for index, entry in enumerate(history):
        if type(entry) is not dict:
            continue
        for key, value in entry.items():
            if type(value) is dict:
                for sub, leaf in value.items():
                    if type(leaf) is dict and leaf:
                        deeper.clear()
                        _flatten_into(leaf, f"{key}.{sub}.", deeper)
                        for name, item in deeper.items():
                            _put(cols, name, size, index, item)
                    else:
                        _put(cols, f"{key}.{sub}", size, index, leaf)
            else:
                _put(cols, key, size, index, value)
    return cols


def _put(cols: dict[str, list[Number]], key: str, size: int, index: int, value: Any) -> None:
    col = cols.get(key)
    if col is None:
        col = cols[key] = [None] * size
    kind = type(value)
    if kind is float:
        col[index] = value if math.isfinite(value) else None
    elif kind is int:
        col[index] = float(value)


def downsample(values: Sequence[Number], points: int) -> tuple[list[int], list[Number]]:
    """(x, y) of ``values`` (x: 1-based entry index) with at most ``points`` points: each of
    ``points // 2`` buckets keeps its min and its max, in entry order; a bucket without any
    number keeps one null (a gap in the line)."""
    size = len(values)
    if size <= points:
        return list(range(1, size + 1)), list(values)
    buckets = points // 2
    xs: list[int] = []
    ys: list[Number] = []
    for b in range(buckets):
        start, stop = b * size // buckets, (b + 1) * size // buckets
        seg = values[start:stop]
        if None in seg:
            pairs = [(v, i) for i, v in enumerate(seg) if v is not None]
            if not pairs:
                xs.append(start + 1)
                ys.append(None)
                continue
            low, high = min(pairs)[1], max(pairs)[1]
        else:
            at = cast(Callable[[int], float], seg.__getitem__)  # no None in this bucket
            low = min(range(len(seg)), key=at)
            high = max(range(len(seg)), key=at)
        for i in sorted({low, high}):
            xs.append(start + i + 1)
            ys.append(seg[i])
    return xs, ys


def curve_json(sig: str, x: list[int], y: list[Number], size: int) -> str:
    """One curve object as JSON text (y holds finite numbers or null only)."""
    return (
        f'{{"sig":{json.dumps(sig)},"x":{json.dumps(x, separators=(",", ":"))},'
        f'"y":{json.dumps(y, separators=(",", ":"))},"n":{size}}}'
    )


def _file_key(path: str) -> FileKey:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass
class _Entry:
    key: tuple[FileKey, FileKey]
    points: int
    size: int
    keys: list[str]
    texts: dict[str, str]  # metric -> the curve's JSON text
    empty: str  # the curve of a metric this XP lacks


#: (sig, folder, identity of its history files, points): one XP's curves to compute.
_Job = tuple[str, str, tuple[FileKey, FileKey], int]
#: From this many histories to read, worker processes share the work (one per CPU, at most
#: POOL_WORKERS): parsing JSON holds the GIL, and the first look at 1,000 histories of 10,000
#: entries took half a minute in one process. Their memory is theirs, not the server's.
POOL_MIN = 64
POOL_WORKERS = 8
POOL_SLICE = 100


def compute(job: _Job) -> _Entry:
    """Read one XP's history and downsample every metric of it (in any process)."""
    sig, where, key, points = job
    try:
        history = load_history(where) if key != (None, None) else []
    except Exception:  # a damaged history: no curve (the table row shows its error)
        history = []
    cols = columns(history)
    texts = {m: curve_json(sig, *downsample(v, points), len(history)) for m, v in cols.items()}
    return _Entry(key, points, len(history), list(cols), texts,
                  curve_json(sig, [], [], len(history)))  # fmt: skip


def compute_all(jobs: Sequence[_Job], pool_min: int = POOL_MIN) -> list[_Entry]:
    """:func:`compute` of every job, in order: in worker processes from ``pool_min`` jobs on
    a machine with several CPUs, else (or when a worker fails) in this one."""
    workers = min(len(os.sched_getaffinity(0)), POOL_WORKERS, len(jobs))
    if len(jobs) >= pool_min and workers > 1:
        found = _in_workers(jobs, workers)
        if found is not None:
            return found
    return [compute(job) for job in jobs]


def _in_workers(jobs: Sequence[_Job], workers: int) -> Optional[list[_Entry]]:
    """The jobs in slices of :data:`POOL_SLICE`, each computed by ``python -m
    gridman.serve.curves`` (a fresh interpreter: nothing of the server's threads or of its
    main module is forked or imported again), ``workers`` at a time; None when one fails.
    Small slices keep what the server holds at once small (their curves' JSON text)."""
    import concurrent.futures
    import subprocess
    import sys

    slices = [list(jobs[i : i + POOL_SLICE]) for i in range(0, len(jobs), POOL_SLICE)]

    def run(part: list[_Job]) -> Optional[list[_Entry]]:
        try:
            done = subprocess.run([sys.executable, "-m", "gridman.serve.curves"],
                                  input=json.dumps(part).encode(), capture_output=True,
                                  timeout=3600, check=True)  # fmt: skip
            entries = [_Entry(**item) for item in json.loads(done.stdout)]
        except (OSError, ValueError, TypeError, subprocess.SubprocessError):
            return None
        for entry in entries:  # JSON gave lists: the cache compares tuples
            entry.key = tuple(tuple(k) if k else None for k in entry.key)  # type: ignore
        return entries if len(entries) == len(part) else None

    out: list[_Entry] = []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for found in pool.map(run, slices):
            if found is None:
                return None
            out.extend(found)
    return out


def _worker_main() -> None:
    """``python -m gridman.serve.curves``: jobs as JSON on stdin, their entries on stdout."""
    import sys
    from dataclasses import asdict

    jobs = json.loads(sys.stdin.buffer.read())
    entries = []
    for sig, where, key, points in jobs:
        files = tuple(tuple(k) if k is not None else None for k in key)
        entries.append(asdict(compute((sig, where, files, points))))  # type: ignore[arg-type]
    sys.stdout.write(json.dumps(entries))


def _first_metric(keys: Sequence[str]) -> Optional[str]:
    """The first key that is not a counter, else the first key (None without any)."""
    counters = ("epoch", "epochs", "step", "steps")
    first = keys[0] if keys else None
    return next((k for k in keys if k.rpartition(".")[2] not in counters), first)


class CurveStore:
    """Downsampled curves of XP folders, recomputed only when a history file changed."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _fresh(self, xps: Sequence[tuple[str, Path]], points: int) -> list[_Entry]:
        """The entries of these XPs, in their order: those whose history files changed since
        (or never seen) are computed again, together (see :func:`compute_all`)."""
        found: list[Optional[_Entry]] = []
        stale: list[tuple[int, _Job]] = []
        with self._lock:
            for sig, folder in xps:
                where = os.fspath(folder)
                key = (_file_key(os.path.join(where, HISTORY)),
                       _file_key(os.path.join(where, JOURNAL)))  # fmt: skip
                cached = self._entries.get(where)
                if cached is not None and cached.key == key and cached.points == points:
                    found.append(cached)
                else:
                    found.append(None)
                    stale.append((len(found) - 1, (sig, where, key, points)))
        if stale:
            computed = compute_all([job for _, job in stale])
            with self._lock:
                for (index, job), entry in zip(stale, computed):
                    self._entries[job[1]] = entry
                    found[index] = entry
        return [e for e in found if e is not None]

    def keys(self, xps: Sequence[tuple[str, Path]], points: int) -> list[str]:
        """Every flat metric key of these XPs' histories, in first-seen order."""
        entries = self._fresh(xps, points)
        return list(dict.fromkeys(k for e in entries for k in e.keys))

    def curves(
        self, xps: Sequence[tuple[str, Path]], metric: Optional[str], points: int
    ) -> str:  # fmt: skip
        """The Curves JSON text of ``metric`` for these (sig, folder) pairs, in their order.
        Without ``metric``: the first key that is not a counter (epoch, step). An unknown
        metric (no history has it) raises UnknownXPError (a 404)."""
        entries = self._fresh(xps, points)
        keys = list(dict.fromkeys(k for e in entries for k in e.keys))
        if metric is None:
            metric = _first_metric(keys)
        if metric is None or (keys and metric not in keys):
            known = ", ".join(keys[:20]) or "none yet"
            raise UnknownXPError(f"no metric {str(metric)[:80]!r} in these histories",
                                 f"metrics: {known}")  # fmt: skip
        body = ",".join(e.texts.get(metric, e.empty) for e in entries)
        head = {"version": VERSION, "metric": metric, "keys": keys, "points": points}
        return json.dumps(head)[:-1] + f',"curves":[{body}]}}'

    def forget(self, keep: Sequence[Path]) -> None:
        """Drop the entries of folders not in ``keep`` (grids closed or changed)."""
        wanted = {os.fspath(f) for f in keep}
        with self._lock:
            for where in [w for w in self._entries if w not in wanted]:
                del self._entries[where]


if __name__ == "__main__":
    _worker_main()
