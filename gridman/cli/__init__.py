"""Command line: thin typer commands over gridman.api; every GridmanError is caught here, once.

Exit codes for every command: 0 success, 1 the command worked but some XPs failed, 2 bad usage
or bad input, 3 an internal error (a bug: rerun with --verbose and report it).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import (
    EXIT_INTERNAL,
    EXIT_XP_FAILED,
    ArgvError,
    GridmanError,
    HelpRequested,
    storage_error,
)
from . import fast as clifast
from .common import confirm_deletion, readable_metavars

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": False}


class _Group(TyperGroup):
    """Catches gridman's error family once, for every command."""

    # Plain values are converted without building pydantic adapters (see gridman.cli.fast).
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        clifast.install(self.get_params(ctx))
        return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            clifast.install(command.get_params(ctx))
            readable_metavars(command.get_params(ctx))  # `--sig SIG`, not `--sig <str>`
            if "_GRIDMAN_COMPLETE" in os.environ:  # a shell asks: grid names, patterns, sigs
                from .complete import attach

                attach(command.get_params(ctx))
        return command

    def invoke(self, ctx: Any) -> Any:
        from ..core.perf import freezing

        try:
            with freezing():
                return super().invoke(ctx)
        except HelpRequested as exc:
            typer.echo(exc.message)
            raise typer.Exit(0) from None
        except ArgvError as exc:  # the training parser's own message, as it wrote it
            _report(ctx, exc.message, exc)
            raise typer.Exit(exc.exit_code) from None
        except GridmanError as exc:
            _report(ctx, f"gridman: error: {exc}", exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("gridman: interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if _is_cli_framework(exc):  # usage errors, --help and exits: typer handles them
                raise
            # A full disk, a read-only mount, a denied permission: the machine's state, said
            # with the path and what to do (exit 2), never an "internal error" to report.
            known = storage_error(exc) if isinstance(exc, OSError) else None
            if known is not None:
                _report(ctx, f"gridman: error: {known}", exc)
                raise typer.Exit(known.exit_code) from None
            _report(ctx, f"gridman: internal error: {type(exc).__name__}: {exc}", exc, bug=True)
            raise typer.Exit(EXIT_INTERNAL) from None


def _is_cli_framework(exc: BaseException) -> bool:
    # typer's own exceptions (vendored click or click itself), whatever the typer version
    return type(exc).__module__.split(".")[0] in ("typer", "click")


def _report(ctx: Any, text: str, exc: BaseException, bug: bool = False) -> None:
    verbose = bool((ctx.obj or {}).get("verbose"))
    if verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    typer.echo(text, err=True)
    if bug and not verbose:
        typer.echo("  rerun with --verbose for the traceback, and report it", err=True)


app = typer.Typer(
    cls=_Group,
    name="gridman",
    no_args_is_help=True,
    add_completion=True,  # --install-completion/--show-completion; values: cli/complete.py
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gridman {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Grid-search experiment manager: XPs keyed by signature, run locally or on clusters.

    \b
    Examples:
      gridman run -- --lr 0.01          run one XP in the foreground
      gridman run --sig 3f9a2c1b        run it again, from its signature
      gridman info --sig 3f9a2c1b       inspect it: argv, state, metrics, log
      gridman grid mygrid               schedule grids/mygrid.py, monitor
      gridman grid mygrid --dry-run     print the plan without scheduling

    Exit status (every command): 0 when all it shows is fine, 1 when it shows a
    failed XP, 2 for bad usage or input, 3 for a bug in gridman (--verbose).
    """
    ctx.obj = {"verbose": verbose}


MAIN_HELP = "The main to use: a module (train), a path (train.py), optionally :NAME."


def _project() -> Any:
    from ..api.xp import open_project

    return open_project()


@app.command(context_settings=_PASS_THROUGH)
def run(
    argv: Optional[list[str]] = typer.Argument(None, help="Training arguments (after --)."),
    sig: Optional[str] = typer.Option(None, "--sig", "-s", help="Run this XP (8 hex chars)."),
    clear: bool = typer.Option(False, "--clear", help="Delete the XP folder first (asks)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --clear."),
    main: Optional[str] = typer.Option(None, "--main", help=MAIN_HELP),
    distributed: bool = typer.Option(
        False, "--distrib", "-d", help="Run one rank per visible GPU (torch.distributed)."
    ),
    ws: Optional[int] = typer.Option(
        None, "--ws", help="Run this many ranks on CPUs (implies -d; for debugging)."
    ),
) -> None:
    """Run one XP in the foreground, recording its state, history and log.

    \b
    Examples:
      gridman run -- --lr 0.01 --epochs 3     argparse main
      gridman run lr=0.01 model.depth=4       YAML main overrides
      gridman run --sig 3f9a2c1b              an XP from its signature
      gridman run --sig 3f9a2c1b -- --epochs 9  its argv, with an override
      gridman run -d -- --lr 0.01             a rank per GPU (log/N.rankR.log)
      gridman run --ws 2 -- --lr 0.01         two ranks on CPUs

    Exit status: 0 when the XP completed, 1 when it failed, 2 for bad arguments.
    """
    from ..api import xp as api

    project = _project()
    prepared = api.prepare(project, main, sig, argv or [])
    if clear and prepared.exists:
        confirm_deletion(f"{prepared.xp.folder} and everything in it", yes)
        api.clear(prepared)
    typer.echo(f"gridman: XP {prepared.xp.sig} in {prepared.xp.folder}", err=True)
    result = api.run(project, prepared, echo=(sys.stdout.buffer, sys.stderr.buffer),
                     distributed=distributed, ws=ws)  # fmt: skip
    failed = "" if result.failed_rank is None else f" in rank {result.failed_rank}"
    typer.echo(
        f"gridman: XP {result.sig} {result.state.value} (exit {result.exit_code}{failed}), "
        f"log {result.log}",
        err=True,
    )
    if result.state.value == "CANCELLED":
        raise typer.Exit(130)
    if result.state.value != "COMPLETED":
        raise typer.Exit(EXIT_XP_FAILED)


@app.command(context_settings=_PASS_THROUGH)
def info(
    argv: Optional[list[str]] = typer.Argument(None, help="Training arguments (after --)."),
    sig: Optional[str] = typer.Option(None, "--sig", "-s", help="The XP's signature."),
    log: bool = typer.Option(False, "--log", "-l", help="Print the latest attempt's log."),
    tail: bool = typer.Option(False, "--tail", "-t", help="Follow the log until the XP ends."),
    metrics: bool = typer.Option(False, "--metrics", "-m", help="Print the whole history."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object, nothing else."),
    diff: Optional[str] = typer.Option(None, "--diff", help="Compare with XP DIFF (a sig)."),
    main: Optional[str] = typer.Option(None, "--main", help=MAIN_HELP),
) -> None:
    """Inspect one XP: signature, folder, argv, delta, state, history and last metrics.

    \b
    Examples:
      gridman info --sig 3f9a2c1b
      gridman info --sig 3f9a2c1b --tail
      gridman info --json -- --lr 0.01
      gridman info --sig 3f9a2c1b --diff 7c0e11aa   what differs: params, metrics

    Exit status: 0 when the XP shown is fine (done, running, queued, never run,
    cancelled), 1 when it failed (with --diff: either XP; with --tail: how it
    ended), 2 for bad usage or an unknown XP, 3 for a bug in gridman.
    """
    from ..api import xp as api
    from ..errors import UsageError
    from .common import exit_for

    if diff is not None:
        from .results import show_diff

        raise typer.Exit(show_diff(_project(), main, sig, argv, diff, as_json))
    if sig is None and not argv:
        raise UsageError("name an XP", "give --sig SIG, or its training arguments after --")
    found = api.info(_project(), main, sig, argv)
    if as_json:
        data = found.to_json()
        if metrics:
            data["history"] = _history(found)
        from ..core import jsonsafe  # NaN/inf as null: strict JSON

        typer.echo(jsonsafe.dumps(data, indent=2))
        raise typer.Exit(exit_for([found.state]))
    typer.echo(_render_info(found))
    if metrics:
        for index, entry in enumerate(_history(found)):
            typer.echo(f"  [{index}] {_flat_text(entry)}")
    state = found.state
    if log or tail:
        _show_log(found, follow=tail)
        if tail:  # the state the XP ended in, as followed
            from ..core.liveness import mark_vanished

            record = mark_vanished(Path(found.folder))
            state = record.state.value if record and record.state else state
    raise typer.Exit(exit_for([state]))


def _history(found: Any) -> list[Any]:
    from ..core.link import load_history

    if not found.exists or found.history_error:
        return []
    return load_history(Path(found.folder))


def _flat_text(entry: Any) -> str:
    from ..core.config import flatten

    if not isinstance(entry, dict):
        return json.dumps(entry)
    return "  ".join(f"{k}={_fmt(v, k)}" for k, v in flatten(entry).items())


#: Metric names whose values are Unix times (shown as local ISO times, not 1.79646e+09).
_TIME_NAMES = ("time", "timestamp", "ts", "date", "started", "ended", "start", "end")


def _fmt(value: Any, key: str = "") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _is_time(key, value):
        import datetime

        return datetime.datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if not isinstance(value, str) else value


def _is_time(key: str, value: float) -> bool:
    # A time-like name (time, wall_time, started_at...) and a value in 2001-2286.
    name = key.rsplit(".", 1)[-1].lower()
    timely = name in _TIME_NAMES or name.endswith(("_time", "_at", "_ts", "time"))
    return timely and 1e9 <= value < 1e10


def _attempt_text(attempt: dict[str, Any]) -> str:
    from ..api.xp import job_label

    parts = [f"{attempt.get('state')}", f"on {attempt.get('backend')}"]
    job = str(attempt.get("job_id") or "")
    label = job_label(str(attempt.get("backend")), job) if job else None
    if label:  # each backend says how its ids show (some are worth less than the pid)
        parts.append(f"job {label}")
    elif attempt.get("pid"):
        parts.append(f"pid {attempt['pid']}")
    if attempt.get("array_index") is not None:
        parts.append(f"(array index {attempt['array_index']})")
    if attempt.get("host"):
        parts.append(f"node {attempt['host']}")
    if attempt.get("exit_code") is not None:
        parts.append(f"exit {attempt['exit_code']}")
    extra = attempt.get("extra") or {}
    if isinstance(extra.get("ranks"), int) and extra["ranks"] > 1:
        logs = extra.get("rank_logs")
        where = f", rank r logs to log/{attempt.get('n')}.rank<r>.log" if logs else ""
        parts.append(f"({extra['ranks']} ranks{where})")
    if extra.get("failed_rank") is not None:
        parts.append(f"(failed in rank {extra['failed_rank']})")
    if extra.get("stopped_by"):
        parts.append(f"(stopped by {extra['stopped_by']})")
    if extra.get("error"):
        parts.append(f"- {extra['error']}")
    if extra.get("log_error"):
        parts.append(f"- log incomplete: {extra['log_error']}")
    return " ".join(parts)


def _job_rows(job: dict[str, Any]) -> list[tuple[str, str]]:
    """Where each attempt ran (job id, array index, node), latest last."""
    attempts = [a for a in job.get("attempts") or [] if isinstance(a, dict)]
    if not attempts:
        return []
    rows = [("job", _attempt_text(attempts[-1]))]
    if len(attempts) > 1:
        rows += [("attempts" if i == 0 else "", f"{a.get('n')}: {_attempt_text(a)}")
                 for i, a in enumerate(attempts)]  # fmt: skip
    return rows


def _code_row(found: Any) -> list[tuple[str, str]]:
    """With git_save, the commit the XP runs from and where its copy is."""
    code = getattr(found, "code", None)
    return [("code", f"{code['commit'][:12]} ({code.get('path')})")] if code else []


def _render_info(found: Any) -> str:
    delta = "  ".join(f"{k}={_fmt(v)}" for k, v in found.delta) or "(defaults)"
    if found.state is None:
        state = "never run" if found.exists else "not initialised (no folder yet)"
    else:
        job = found.job or {}
        latest = (job.get("attempts") or [{}])[-1]
        code = latest.get("exit_code")
        state = f"{found.state} (attempt {found.attempts}" + (
            f", exit {code})" if code is not None else ")"
        )
    rows = [
        ("sig", found.sig),
        ("folder", found.folder),
        *([("main", found.main)] if getattr(found, "main", None) else []),
        *_code_row(found),
        ("argv", " ".join(found.argv) or "(none)"),
        ("delta", delta),
        ("state", state),
        ("history", _history_text(found)),
    ]
    rows += _job_rows(found.job or {})
    if found.history_error:
        rows.append(("history!", found.history_error))
    rows += [("history!", warning) for warning in found.history_warnings]
    if found.last_metrics:
        rows.append(("metrics", _flat_text(found.last_metrics)))
    if found.log:
        rows.append(("log", found.log))
    return "\n".join(f"{k:<9}{v}" for k, v in rows)


def _history_text(found: Any) -> str:
    """``N entries``, marked when the history is damaged (N then counts what could be read)."""
    text = f"{found.history_len} entries"
    if found.history_error or found.history_warnings:
        text += " (DAMAGED: only what could be read; see history! below)"
    return text


def _show_log(found: Any, follow: bool) -> None:
    from ..api.logs import follow_log, read_log
    from ..errors import UsageError

    if not found.log or not Path(found.log).exists():  # queued: its log comes when it starts
        if not follow:
            raise UsageError(f"XP {found.sig} has no log yet", "it has not started yet")
        typer.echo(f"gridman: XP {found.sig} has not started yet; waiting for its log", err=True)
    if not follow:
        sys.stdout.buffer.write(read_log(Path(found.log)))
        return
    for chunk in follow_log(Path(found.folder)):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def _register_grid() -> None:
    from .grid import GridCommand, grid

    app.command(name="grid", cls=GridCommand)(grid)


def _register_results() -> None:
    from .results import export, plot

    app.command(name="export")(export)
    app.command(name="plot")(plot)


def _register_serve() -> None:
    from .serve import report, serve

    app.command(name="serve")(serve)
    app.command(name="report")(report)


_register_grid()
_register_results()
_register_serve()


def main() -> None:
    """Console-script entry point (every rank's, under mpiexec)."""
    from ..api.entry import run_entry

    code = run_entry(app)  # a backend may run every process of its job (mpiexec -n N gridman)
    if code is not None:
        sys.exit(code)
    app()


if __name__ == "__main__":
    main()
