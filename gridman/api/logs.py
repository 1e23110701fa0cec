"""Reading and following XP logs (the latest attempt's ``log/<n>.log``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from ..core.jobs import read_job
from ..core.liveness import mark_vanished

TAIL_BYTES = 64 * 1024


def read_log(path: Path) -> bytes:
    """The whole log (empty when it does not exist yet)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def latest_log(folder: Path) -> Path | None:
    record = read_job(folder)
    latest = record.latest if record else None
    return folder / latest.log if latest and latest.log else None


def follow_log(folder: Path, interval: float = 0.5) -> Iterator[bytes]:
    """Yield the end of the latest log, then what gets appended, until the attempt ends.

    Waits (yielding nothing) while the XP has not started; switches to a new attempt's log.
    """
    current: Path | None = None
    offset = 0
    while True:
        path = latest_log(folder)
        if path != current:
            current, offset = path, 0
            if path is not None and path.exists():
                offset = max(0, path.stat().st_size - TAIL_BYTES)
        if current is not None and current.exists():
            with open(current, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            if chunk:
                offset += len(chunk)
                yield chunk
        record = mark_vanished(folder)
        state = record.state if record else None
        if state is not None and state.finished and _drained(current, offset):
            return
        time.sleep(interval)


def _drained(path: Path | None, offset: int) -> bool:
    return path is None or not path.exists() or path.stat().st_size <= offset
