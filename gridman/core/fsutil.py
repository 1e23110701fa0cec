"""Crash-safe file primitives: atomic writes, tolerant JSON reads, advisory locks.

Every state file gridman writes goes through ``atomic_write_*``: the content goes to a temporary
file in the same folder, optionally fsync'd, then is renamed over the target, so a reader sees
either the old or the new file, never a torn one, and a crash leaves one of the two.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UnsafePathError

#: Version written into every JSON state file, checked on read.
FORMAT_VERSION = 1


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, fsync: bool = True, private: bool = False
) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + rename, fsync'd when asked).

    The file gets the usual permissions (0666 less the umask), or 0600 when ``private``: it is
    created so, never readable by others even for an instant. A bare descriptor and a
    pid-and-counter temporary name: ``--init`` writes one file per XP of a 10,000-XP grid.
    """
    target = os.fspath(path)
    folder = os.path.dirname(target) or "."
    tmp, fd = _temp_file(target, 0o600 if private else 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            # os.write and os.fsync name no file: say which one could not be written.
            raise OSError(exc.errno, exc.strerror, target) from exc
        raise
    if fsync:
        fsync_dir(Path(folder))


_temp_names = itertools.count()
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def _temp_file(target: str, mode: int) -> tuple[str, int]:
    """A new file beside ``target``: ``.<name>.<pid>.<n>.tmp``, created exclusively (a name
    left by a crashed process that had the same pid is skipped)."""
    folder, name = os.path.split(target)
    for _ in range(1000):
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{next(_temp_names)}.tmp")
        try:
            return tmp, os.open(tmp, _TEMP_FLAGS, mode)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", target)


def fsync_dir(folder: Path) -> None:
    """fsync a directory so that a rename inside it survives a machine crash."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str, fsync: bool = True, private: bool = False) -> None:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf8"), fsync=fsync, private=private)


def atomic_write_json(
    path: Path, data: Any, fsync: bool = True, indent: int | None = 1, private: bool = False
) -> None:
    """Write ``data`` as JSON atomically."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n", fsync=fsync, private=private)


def read_bytes(path: str) -> bytes:
    """A whole file through a bare descriptor: no buffered file object, for the per-XP reads
    of big grids (argv.json, histories)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunk = os.read(fd, _CHUNK)
        if len(chunk) < _CHUNK:
            return chunk  # a short read of a regular file is its end: no second read needed
        chunks = [chunk]
        while chunk:
            chunk = os.read(fd, _CHUNK)
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


_CHUNK = 1 << 16


def read_json(path: str | os.PathLike[str]) -> Any:
    """Load JSON from ``path`` (UTF-8); raises OSError or ValueError (json.JSONDecodeError,
    UnicodeDecodeError). Through :func:`read_bytes`: a grid reads one job.json per XP."""
    return json.loads(read_bytes(os.fspath(path)).decode("utf8"))


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    Yields False (and holds nothing) when ``blocking`` is False and another process holds it.
    The lock dies with its process, so a crash never leaves a stale lock behind. A lock file
    that is a symbolic link is refused (:class:`UnsafePathError`): opening it would create or
    open whatever file it points to.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                yield False
                return
            raise
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symbolic link at ``path`` itself (O_NOFOLLOW).

    A link planted where gridman creates a lock or a log would make it create, append to or
    truncate the link's target with the user's rights (``daemon.log`` -> ``~/.profile``).
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        try:
            target = f" (to {os.readlink(path)!r})"
        except OSError:
            target = ""  # replaced meanwhile
        raise UnsafePathError(
            f"{path} is a symbolic link{target}; gridman never writes through a link there",
            f"remove {path} (someone may have planted it) and run again",
        ) from None


def ensure_private_dir(path: Path) -> None:
    """Make sure ``path`` is a folder of this user that nobody else may write (created 0700).

    Whatever a folder like the local pool's holds runs as the user, so a folder owned by
    another user, writable by group or others, or a symbolic link is refused
    (:class:`UnsafePathError`); one of the user's own that others may only read is made 0700.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    me = os.geteuid()
    if not stat.S_ISDIR(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a folder"
        raise UnsafePathError(
            f"{path} is {kind}: gridman keeps what it runs as you in a private folder there",
            f"remove {path} (someone may have planted it) and run again",
        )
    if info.st_uid != me:
        raise UnsafePathError(
            f"{path} belongs to uid {info.st_uid}, not to you (uid {me}): what it holds "
            "would run as you",
            f"remove {path} (its owner or root can) or use another dir for your XPs",
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise UnsafePathError(
            f"{path} is writable by other users (mode {mode:03o}): what they put there "
            "would run as you",
            f"check what it holds, then `chmod 700 {path}`, or remove it",
        )
    if mode & 0o077:
        os.chmod(path, 0o700)  # ours, only readable by others: it holds our environment
