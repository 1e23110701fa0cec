"""The one error family of gridman.

Core code raises these; the CLI catches ``GridmanError`` once, prints what failed, why and what
to do, and exits with ``exit_code``. Nothing else in gridman prints or exits.
"""

from __future__ import annotations

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
