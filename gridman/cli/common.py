"""Small helpers every command module uses: messages on stderr, confirming a deletion, the
exit status of a command that showed XPs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Optional

import typer

from ..errors import EXIT_USAGE, EXIT_XP_FAILED, UsageError


def stderr(text: str) -> None:
    """One line for the user on stderr (stdout carries only results, e.g. JSON)."""
    typer.echo(text, err=True)


def confirm_deletion(what: str, yes: bool) -> None:
    """Ask before deleting ``what`` (``--yes`` skips; no terminal to ask on is a usage error)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"--clear would delete {what}", "add --yes to confirm")
    if not typer.confirm(f"Delete {what}?", default=False):
        raise typer.Exit(EXIT_USAGE)


#: States of an XP that is fine to show: done, on its way, never run, or cancelled by a user.
FINE_STATES = frozenset({"COMPLETED", "RUNNING", "PENDING", "UNKNOWN", "NEW", "CANCELLED"})


def exit_for(states: Iterable[Optional[str]]) -> int:
    """The exit status of a command that showed XPs in ``states``: 1 when any failed (FAILED,
    VANISHED, TIMEOUT ...), else 0 (every command's contract; None: never run)."""
    failed = any(s is not None and s not in FINE_STATES for s in states)
    return EXIT_XP_FAILED if failed else 0


def readable_metavars(params: Iterable[Any]) -> None:
    """Help that reads as words, not Python types: an option without a metavar shows its
    name (``--sig SIG``, not ``--sig <str>``), an argument its metavar without the type."""
    for param in params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            if param.metavar is None:
                param.metavar = str(param.name or "ARG").upper()
            param.display_type_rich = _no_type  # (an instance attribute: this command only)
        elif param.metavar is None and getattr(param, "param_type_name", "") == "option":
            param.metavar = str(param.name or "VALUE").upper()


def _no_type(ctx: Any = None) -> None:
    return None


def backend_line(session: Any) -> None:
    """Say on stderr which backend runs the XPs and why, within 80 columns."""
    import textwrap

    text = f"gridman: backend {session.describe_backend()} ({session.backend_reason})"
    stderr(textwrap.fill(text, 80, subsequent_indent="  ", break_on_hyphens=False))
