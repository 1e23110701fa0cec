"""The web view's pages as data: plain dicts ready for JSON (docs/serve.md), no HTTP here.

Everything is read the way ``gridman grid NAME --json --dry-run`` reads it, with one
difference that makes serving read-only: job records are read as they are on disk
(``core.jobs.read_job``), never refreshed through a backend, which may rewrite them. Rows come
from ``api.table.grid_rows`` (the grid's row cache: unchanged histories are not decoded again;
saving the cache is silent where it cannot be written).
"""

from __future__ import annotations

import errno
import math
import os
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..api.grid import GridOptions, GridSession, open_grid
from ..api.table import View, grid_rows, json_rows, table_columns
from ..api.xp import info, xp_root
from ..core.jobs import JOB_FILE, read_job
from ..core.link import HISTORY, JOURNAL
from ..core.names import grid_items, part
from ..core.project import Project
from ..core.xp import require_xp_folder
from ..errors import UnsafePathError, UsageError
from ..results.rows import Row
from ..results.table import best_rule

VERSION = 1
#: What ``/api/xp/SIG/log`` sends by default, and at most.
LOG_DEFAULT = 65536
LOG_MAX = 1 << 20


@dataclass
class GridHandle:
    """An opened grid (the herd built once) and what the page needs of it besides rows."""

    session: GridSession
    items: list[list[tuple[str, Any]]]  # each XP's (key, value) name pairs
    params: list[str]  # the keys whose value differs between XPs, in name order
    extras: list[dict[str, Any]] = field(default_factory=list)  # XPExtra, grid order

    @property
    def name(self) -> str:
        return self.session.grid.name

    def sig_names(self) -> dict[str, str]:
        return {s.sig: n for s, n in zip(self.session.sheeps, self.session.names)}


def open_handle(
    project: Project, name: str, grids_dir: Optional[str], main: Optional[str],
    patterns: Sequence[str] = (),
) -> GridHandle:  # fmt: skip
    """Load grid ``name`` (its explore function runs); UnknownGridError when there is none.
    ``patterns`` select XPs as ``gridman grid NAME PATTERNS`` does (rows of those only)."""
    options = GridOptions(name=name, patterns=tuple(patterns), dry_run=True,
                          grids_dir=grids_dir, main=main)  # fmt: skip
    session = open_grid(project, options)
    sheeps = session.sheeps
    items = grid_items([s.xp.delta for s in sheeps], [s.xp.params for s in sheeps])
    seen: dict[str, set[str]] = {}
    for pairs in items:
        for key, value in pairs:
            seen.setdefault(key, set()).add(part(key, value, True))
    params = [k for k, values in seen.items() if len(values) > 1]
    extras = [_extra(pairs) for pairs in items]
    return GridHandle(session, items, params, extras)


def _extra(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """XPExtra: the XP's parameters, and the texts patterns match (core/names.py ``select``:
    the short and the full form of each ``key=value``)."""
    parts = [part(k, v) for k, v in pairs] + [part(k, v, True) for k, v in pairs]
    return {"params": {k: _plain(v) for k, v in pairs}, "parts": list(dict.fromkeys(parts))}


def _plain(value: Any) -> Any:
    """A parameter's value as JSON holds it (a Path as its text, other objects by str)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def read_jobs(handle: GridHandle) -> None:
    """Re-read every XP's job record as it is on disk (no backend polling)."""
    for sheep in handle.session.sheeps:
        sheep.job = read_job(sheep.xp.folder)


def current_rows(handle: GridHandle) -> list[Row]:
    """The grid's rows now: job records re-read, changed histories decoded again."""
    read_jobs(handle)
    return grid_rows(handle.session, View())


def columns_json(handle: GridHandle, rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The CLI table's metric columns with their best rule (null for a column without a
    number in any row, or a counter such as epoch)."""
    out = []
    for col in table_columns(handle.session, list(rows)):
        key = ".".join(col.path)
        rule = best_rule(key) if _has_number(rows, key) else None
        group = ".".join(col.path[:-1])
        out.append({"key": key, "title": col.path[-1], "group": group,
                    "fmt": col.fmt or None, "best": rule})  # fmt: skip
    return out


def _has_number(rows: Sequence[Row], key: str) -> bool:
    return any(_number(r.flat_metrics().get(key)) is not None for r in rows)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def best_value(rows: Sequence[Row], column: Optional[dict[str, Any]]) -> Optional[float]:
    """The best value of ``column`` among the rows (None without a column or a number)."""
    if column is None or column["best"] is None:
        return None
    found = [n for r in rows if (n := _number(r.flat_metrics().get(column["key"]))) is not None]
    if not found:
        return None
    return min(found) if column["best"] == "min" else max(found)


def updated(folders: Sequence[Path]) -> Optional[float]:
    """The newest modification time of the XPs' histories and job records (None: none)."""
    newest: Optional[float] = None
    for folder in folders:
        base = os.fspath(folder)
        for name in (HISTORY, JOURNAL, JOB_FILE):
            try:
                when = os.stat(os.path.join(base, name)).st_mtime
            except OSError:
                continue
            newest = when if newest is None or when > newest else newest
    return newest


def grid_page(handle: GridHandle) -> dict[str, Any]:
    """GridPage: the grid's rows (``gridman grid NAME --json``'s), columns, XP extras."""
    rows = current_rows(handle)
    columns = columns_json(handle, rows)
    main = next((c for c in columns if c["best"] is not None), None)
    return {
        "version": VERSION,
        "name": handle.name,
        "base": handle.session.base_name,
        "main_metric": main["key"] if main else None,
        "columns": columns,
        "params": handle.params,
        "rows": json_rows(rows),
        "xps": [handle.extras[r.index] for r in rows],
        "states": dict(Counter(r.state for r in rows)),
        "updated": updated([s.xp.folder for s in handle.session.sheeps]),
    }


def grid_summary(handle: GridHandle) -> dict[str, Any]:
    """GridSummary of an opened grid (one line of the grids page)."""
    rows = current_rows(handle)
    columns = columns_json(handle, rows)
    main = next((c for c in columns if c["best"] is not None), None)
    states = Counter(r.state for r in rows)
    return {
        "name": handle.name,
        "xps": len(rows),
        "states": dict(states),
        "progress": states.get("COMPLETED", 0) / len(rows) if rows else 0.0,
        "main_metric": main["key"] if main else None,
        "best": best_value(rows, main),
        "updated": updated([s.xp.folder for s in handle.session.sheeps]),
        "error": None,
    }


def broken_summary(name: str, error: str) -> dict[str, Any]:
    """GridSummary of a grid that could not be opened (its explore function raised ...)."""
    return {"name": name, "xps": 0, "states": {}, "progress": 0.0, "main_metric": None,
            "best": None, "updated": None, "error": error}  # fmt: skip


def grids_page(project: Project, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": VERSION, "project": project.root.name, "grids": summaries}


def xp_page(
    project: Project, main: Optional[str], sig: str, where: Optional[tuple[str, str]] = None
) -> dict[str, Any]:
    """XPPage: ``gridman info --json``'s object (its job record read as it is) with each
    attempt in short and, when ``where`` is known, the grid (``grid``) that holds it and the
    XP's name there (``name``)."""
    folder = require_xp_folder(xp_root(project, main), sig)  # UnknownXPError when absent
    data = info(project, main, folder.name, refresh=False).to_json()
    attempts = (data.get("job") or {}).get("attempts") or []
    data["attempts_list"] = [
        {"backend": a.get("backend"), "job_id": a.get("job_id"), "state": a.get("state"),
         "exit_code": a.get("exit_code"), "start": a.get("started"), "end": a.get("ended")}
        for a in attempts if isinstance(a, dict)
    ]  # fmt: skip
    if where is not None:
        data["grid"], data["name"] = where
    return {"version": VERSION, **data}


def log_bytes(text: Optional[str]) -> int:
    """The ``bytes`` parameter: LOG_DEFAULT when absent, 1..LOG_MAX, else UsageError."""
    if text is None:
        return LOG_DEFAULT
    if not text.isdigit() or len(text) > 8:
        raise UsageError(f"bytes must be a whole number of bytes, got {text[:40]!r}")
    value = int(text)
    if not 1 <= value <= LOG_MAX:
        raise UsageError(f"bytes must be between 1 and {LOG_MAX}, got {value}")
    return value


def log_tail(project: Project, main: Optional[str], sig: str, size: int) -> dict[str, Any]:
    """The last ``size`` bytes of the log of the XP's latest attempt (path null and no text
    when it has none yet). A log path that leaves the XP folder, or goes through a symbolic
    link, is refused (UnsafePathError)."""
    folder = require_xp_folder(xp_root(project, main), sig)
    record = read_job(folder)
    latest = record.latest if record else None
    out = {"version": VERSION, "sig": folder.name, "path": None, "size": 0, "text": ""}
    if latest is None or not latest.log:
        return out
    parts = Path(latest.log).parts
    if Path(latest.log).is_absolute() or not parts or any(p in ("..", ".") for p in parts):
        raise UnsafePathError(f"XP {folder.name}: its log path leaves the XP folder")
    try:
        size_now, data = _read_tail(folder, parts, size)
    except FileNotFoundError:
        return out
    out.update(path=str(folder.joinpath(*parts)), size=size_now,
               text=data.decode("utf8", errors="replace"))  # fmt: skip
    return out


def _read_tail(folder: Path, parts: Sequence[str], size: int) -> tuple[int, bytes]:
    """(file size, its last ``size`` bytes) of ``folder/parts...``, opened one component at a
    time without following any symbolic link, and only when it is a regular file."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fds = [os.open(folder, flags | os.O_DIRECTORY)]
    try:
        for name in parts[:-1]:
            fds.append(_step(fds[-1], name, flags | os.O_DIRECTORY))
        fds.append(_step(fds[-1], parts[-1], flags | os.O_NONBLOCK))
        info_ = os.fstat(fds[-1])
        if not stat.S_ISREG(info_.st_mode):
            raise UnsafePathError(f"{folder.joinpath(*parts)} is not a regular file")
        start = max(0, info_.st_size - size)
        return info_.st_size, os.pread(fds[-1], size, start)
    finally:
        for fd in fds:
            os.close(fd)


def _step(fd: int, name: str, flags: int) -> int:
    """Open ``name`` relative to ``fd``; a link (ELOOP, or ENOTDIR for a link where a folder
    is wanted) is an UnsafePathError."""
    try:
        return os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(f"{name}: a symbolic link or not a folder; not served") from None
        raise


def find_name(handles: Sequence[GridHandle], sig: str) -> Optional[tuple[str, str]]:
    """(grid, name): the first opened grid that holds the XP, and its name there."""
    for handle in handles:
        found = handle.sig_names().get(sig)
        if found is not None:
            return handle.session.grid.name, found
    return None
