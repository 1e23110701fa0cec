"""Small helpers every command module uses: messages on stderr, confirming a deletion."""

from __future__ import annotations

import sys

import typer

from ..errors import EXIT_USAGE, UsageError


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
