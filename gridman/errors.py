"""The one error family of gridman.

Core code raises these; the CLI catches ``GridmanError`` once, prints what failed, why and what
to do, and exits with ``exit_code``. Nothing else in gridman prints or exits.
"""

from __future__ import annotations

import errno
import os
from typing import Optional

#: Exit codes shared by every command.
EXIT_OK = 0
EXIT_XP_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class GridmanError(Exception):
    """Base of every error gridman reports to the user.

    ``hint`` says what to do about it; ``exit_code`` is what the CLI exits with.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(GridmanError):
    """Bad flags or bad input given on the command line."""


class ConfigError(GridmanError):
    """A malformed or inconsistent configuration file (gridman.yaml, a config YAML)."""


class MainNotFoundError(ConfigError):
    """No (or more than one) decorated main could be found."""


class UnknownXPError(GridmanError):
    """A signature that names no XP."""


class SignatureCollisionError(GridmanError):
    """Two different deltas hash to the same 8-character signature."""


class ArgvError(GridmanError):
    """The training parser rejected an argv; ``message`` is the parser's own text."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class HelpRequested(GridmanError):
    """The training parser printed its help (``-- --help``); not a failure."""

    exit_code = EXIT_OK


class UserCodeError(GridmanError):
    """The user's own code (a main module, a grid file) raised; ``message`` holds its traceback."""


class HistoryError(GridmanError):
    """A history file that cannot be read; reported for that XP only."""

    exit_code = EXIT_XP_FAILED


class XPBusyError(GridmanError):
    """An operation that needs an XP to be idle found it running."""


class UnsafePathError(GridmanError):
    """A file or folder that another user may have planted or may write into: refused."""


class StorageError(GridmanError):
    """A file gridman needs cannot be written (full disk, read-only mount, no permission):
    not a bug. The message names the path and the reason, the hint what to do."""


#: The errors of the file system that are the machine's state, not a bug of gridman.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

#: Commands that only read: they work where the XP root cannot be written.
LOOK_ONLY = "gridman grid NAME --dry-run, gridman info --sig SIG and gridman export NAME"


def storage_error(exc: OSError) -> Optional[StorageError]:
    """A :class:`StorageError` for ``exc`` when it is a full disk, a read-only file system or
    a denied permission on a named path; None for any other error (a bug, reported as such)."""
    if exc.errno not in STORAGE_ERRNOS:
        return None
    if exc.filename is None and exc.errno in (errno.EACCES, errno.EPERM):
        return None  # a denied operation on no file (a signal...): not the disk's state
    path = "a file" if exc.filename is None else os.fsdecode(exc.filename)
    reason = exc.strerror or os.strerror(exc.errno)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        message = f"cannot write {path}: {reason} (the disk holding it is full)"
        hint = "free space on that disk (df -h shows it), then run the command again"
    elif exc.errno == errno.EROFS:
        message = f"cannot write {path}: {reason}"
        hint = ("remount it read-write, or point `dir:` in gridman.yaml (or GRIDMAN_DIR) at a "
                "writable folder")  # fmt: skip
    else:
        user = _user_name()
        message = f"cannot write {path}: {reason} (for user {user})"
        hint = ("ask the owner of that folder for write access, or point `dir:` in "
                "gridman.yaml (or GRIDMAN_DIR) at a folder you may write")  # fmt: skip
    return StorageError(message, f"{hint}; looking needs no writing: {LOOK_ONLY}")


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid()) if hasattr(os, "geteuid") else "?"
