"""``gridman grid``: the typer command, its flag checks and the plan printout (the table: view.py).

Everything after ``--`` is the command template of ``--stage`` (kept aside by GridCommand
before the options are parsed; without ``--stage`` it is read as more patterns).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand

from ..errors import UsageError
from .common import backend_line
from .common import stderr as _stderr
from .view import View
from .view import watch as _watch

#: Where GridCommand leaves the arguments that followed ``--`` (in the context's meta).
AFTER_DASHES = "gridman.after_dashes"


class GridCommand(TyperCommand):
    """The grid command: what follows ``--`` is kept whole (a stage's command), not parsed."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta[AFTER_DASHES] = list(args[cut + 1 :])
            args = list(args[:cut])
        return super().parse_args(ctx, args)


def grid(
    ctx: typer.Context,
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Grid file grids/NAME.py."),
    patterns: Optional[list[str]] = typer.Argument(
        None, metavar="PATTERN", help="Select XPs: lr=0.1, seed, !pat (not), 3 (index)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; schedule nothing."),
    init: bool = typer.Option(False, "--init", help="Create XP folders (so --sig works)."),
    cancel: bool = typer.Option(False, "--cancel", "-C", help="Cancel pending/running XPs."),
    clear: bool = typer.Option(
        False,
        "--clear",
        help="Cancel, delete XP folders, start over (with --dry-run: list them).",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --clear."),
    retry: bool = typer.Option(False, "--retry", "-r", help="Resubmit failed/cancelled XPs."),
    replace: bool = typer.Option(False, "--replace", "-R", help="Resubmit running XPs."),
    replace_done: bool = typer.Option(
        False,
        "--replace-done",
        "-D",
        help="Resubmit completed XPs. Their history is kept: a script that resumes "
        "from it ends at once; add --clear to start them over.",
    ),
    monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Refresh until done."),
    interval: float = typer.Option(
        5.0, "--interval", "-i", metavar="SECONDS", help="Refresh period, seconds."
    ),
    trim: Optional[int] = typer.Option(
        None, "--trim", "-T", metavar="IDX", help="Cut histories to XP IDX's length."
    ),
    trim_last: bool = typer.Option(False, "--trim-last", "-L", help="Cut to the shortest."),
    log: Optional[int] = typer.Option(
        None, "--log", "-l", metavar="IDX", help="Print the log of XP IDX."
    ),
    tail: Optional[int] = typer.Option(
        None, "--tail", "-t", metavar="IDX", help="Follow the log of XP IDX."
    ),
    folder: Optional[int] = typer.Option(
        None, "--folder", "-f", metavar="IDX", help="Print XP IDX's folder."
    ),
    backend: Optional[str] = typer.Option(
        None,
        "--backend",
        metavar="NAME",
        help="Where XPs run (a wrong name lists them; default: see gridman.yaml).",
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", metavar="N", help="Local pool size (>= 1)."
    ),
    gpus: Optional[int] = typer.Option(
        None, "--gpus", "-g", metavar="N", help="Override GPUs per XP."
    ),
    partition: Optional[str] = typer.Option(
        None, "--partition", "-p", metavar="NAME", help="Slurm partition."
    ),
    time_limit: Optional[int] = typer.Option(
        None, "--time", metavar="MINUTES", help="Time limit, minutes (Slurm)."
    ),
    mem: Optional[str] = typer.Option(
        None, "--mem", metavar="SIZE", help="Memory per XP, e.g. 16G (Slurm)."
    ),
    cpus_per_task: Optional[int] = typer.Option(
        None, "--cpus-per-task", metavar="N", help="CPUs per XP."
    ),
    constraint: Optional[str] = typer.Option(
        None, "--constraint", metavar="EXPR", help="Slurm --constraint."
    ),
    account: Optional[str] = typer.Option(None, "--account", metavar="NAME", help="Slurm account."),
    qos: Optional[str] = typer.Option(None, "--qos", metavar="NAME", help="Slurm QOS."),
    comment: Optional[str] = typer.Option(
        None, "--comment", metavar="TEXT", help="Slurm job comment."
    ),
    sbatch: Optional[list[str]] = typer.Option(
        None,
        "--sbatch",
        metavar="KEY[=VALUE]",
        help="Raw sbatch option KEY=VALUE or KEY (repeatable), e.g. mail-type=END.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the grid as one JSON array."),
    aggregate: Optional[str] = typer.Option(
        None,
        "--aggregate",
        metavar="PARAM",
        help="Group by every parameter but PARAM: mean ± std, count.",
    ),
    spark: Optional[str] = typer.Option(
        None, "--spark", metavar="METRIC", help="Sparkline of METRIC's history."
    ),
    stage: Optional[str] = typer.Option(
        None,
        "--stage",
        metavar="NAME",
        help="Run stage NAME (e.g. test) on completed XPs: command after --.",
    ),
    stage_force: bool = typer.Option(False, "--stage-force", help="Rerun it where results exist."),
    grids_dir: Optional[str] = typer.Option(
        None, "--grids-dir", metavar="DIR", help="Folder of grid files."
    ),
    main: Optional[str] = typer.Option(
        None, "--main", metavar="MAIN", help="The main (module or path)."
    ),
    allow_dirty: bool = typer.Option(
        False, "--allow-dirty", help="git_save: run the last commit despite local changes."
    ),
) -> None:
    """Schedule a grid's missing XPs and show their metrics as a table.

    \b
    Examples:
      gridman grid mygrid               schedule what is missing, monitor
      gridman grid mygrid --dry-run     the plan: submit/keep/cancel, why
      gridman grid mygrid lr=0.1 -r     retry the failed XPs with lr=0.1
      gridman grid mygrid -C            cancel its pending and running XPs
      gridman grid mygrid -t 3          follow the log of XP 3 (the table's #)
      gridman grid mygrid --json        the table as JSON
      gridman grid mygrid --aggregate seed      mean ± std over seeds
      gridman grid mygrid --spark train.loss    a sparkline of each loss
      gridman grid mygrid --stage test -- python eval.py {folder}/ckpt.pt

    IDX is an XP's index in the grid, the table's first column (also as a
    pattern). A pattern that matches no XP is an error that lists the keys.

    Resources (-p, --time, --mem, --cpus-per-task, --constraint, --account, --qos,
    --comment, --sbatch) are defaults below the grid file's launcher.slurm_(...)
    and above gridman.yaml's `slurm:` section; -g/--gpus overrides the grid file.

    Exit status: 0 when every XP shown is fine (done, running, queued, cancelled),
    1 when some failed (-l/-t: the XP shown; -f prints a path: 0), 2 for bad usage
    or input (a pattern or metric that matches nothing), 3 for a bug in gridman.
    """
    from ..api import grid as gridapi
    from ..core.project import load_project
    from ..core.shep import Rules

    if not name:  # Dora's `dora grid`: the grids there are, by dotted name
        raise typer.Exit(_list_grids(grids_dir, main, as_json))
    _check_flags(interval, trim, dry_run, clear, (log, tail, folder))
    after = list(ctx.meta.get(AFTER_DASHES) or [])
    if stage is None and after:
        patterns = [*(patterns or []), *after]  # `--` before patterns such as -1
    _check_view_flags(as_json, aggregate, spark, stage, stage_force, (retry, replace,
                      replace_done, clear, init))  # fmt: skip
    view = View(trim, trim_last, spark, aggregate)
    rules = Rules(retry=retry, replace=replace, replace_done=replace_done, cancel=cancel,
                  clear=clear)  # fmt: skip
    options = gridapi.GridOptions(
        name=name, patterns=tuple(patterns or ()), rules=rules, dry_run=dry_run, init=init,
        backend=backend, workers=workers, gpus=gpus, grids_dir=grids_dir, main=main,
        resources=resource_flags(partition=partition, time=time_limit, mem=mem,
                                 cpus_per_task=cpus_per_task, constraint=constraint,
                                 account=account, qos=qos, comment=comment, sbatch=sbatch),
        allow_dirty=allow_dirty,
    )  # fmt: skip
    session = gridapi.open_grid(load_project(), options, progress=_progress_printer())
    for warning in session.warnings:
        _stderr(f"gridman: warning: {warning}")
    shown = [x for x in (log, tail, folder) if x is not None]
    if shown:
        if as_json:
            raise UsageError("--log, --tail and --folder print text; they cannot be --json")
        raise typer.Exit(_show_one(session, log, tail, folder))
    if trim is not None:
        _check_trim(session, trim)
    if aggregate:
        _check_aggregate(session, aggregate)
    if spark:
        _check_spark(session, spark)
    if stage is not None:
        from ..core.stages import StageRequest, parse_template
        from .stage import run_stage_command

        template = tuple(after) if cancel and not after else parse_template(after)
        request = StageRequest(stage, template, stage_force)
        raise typer.Exit(run_stage_command(session, request, dry_run, cancel, monitor, interval,
                                           as_json, view))  # fmt: skip
    if clear and dry_run:
        raise typer.Exit(_print_clear_plan(session))
    if clear and not dry_run:
        from .common import confirm_deletion

        confirm_deletion(f"{len(session.selected)} XP folders (after cancelling them)", yes)
    say = _stderr if as_json else typer.echo
    backend_line(session)
    result = gridapi.run_grid(session)
    _print_plan(result.plan, session, verbose=dry_run, say=say)
    if result.initialised:
        say(f"gridman: initialised {result.initialised} XP folders")
    keep_watching = monitor and not dry_run and not cancel and not as_json
    code = _watch(session, interval, view, keep_watching, as_json, result.plan, result.created)
    raise typer.Exit(code)


def _check_view_flags(
    as_json: bool, aggregate: Optional[str], spark: Optional[str], stage: Optional[str],
    stage_force: bool, training: tuple[bool, ...],
) -> None:  # fmt: skip
    if as_json and (aggregate or spark):
        raise UsageError(
            "--aggregate and --spark change the text table; --json always gives one row per XP",
            "for aggregated JSON: gridman export NAME --aggregate PARAM --format json",
        )
    if stage_force and stage is None:
        raise UsageError("--stage-force goes with --stage NAME")
    if stage is not None and any(training):
        raise UsageError(
            "--stage runs a stage on completed XPs; it does not schedule training",
            "run --retry/--replace/--replace-done/--clear/--init without --stage",
        )


def _check_aggregate(session: Any, param: str) -> None:
    from ..core.names import grid_items

    items = grid_items([session.sheeps[i].xp.delta for i in session.selected])
    keys = list(dict.fromkeys(k for pairs in items for k, _ in pairs))
    if param not in keys:
        raise UsageError(
            f"cannot aggregate over {param!r}: no XP of the selection sets it",
            f"parameters of the grid: {', '.join(keys) or 'none'}",
        )


def _check_trim(session: Any, index: int) -> None:
    """``-T IDX``: a selected XP (grid index) that has a history to cut the others to."""
    from ..results.table import history_lengths

    xp_index(session, index)
    if history_lengths(session.sheeps, [index])[0] == 0:
        raise UsageError(f"--trim {index}: XP {index} has no history to cut the others to",
                         "pick an XP that has trained, or -L (the shortest history)")  # fmt: skip


def _check_spark(session: Any, metric: str) -> None:
    """``--spark METRIC``: a metric some selected history holds (none trained yet: fine)."""
    from ..core.link import load_history
    from ..results.records import metric_keys_of, unknown_metric

    seen: dict[str, None] = {}
    for sheep in session.chosen():
        try:
            metric_keys_of(load_history(sheep.xp.folder), seen)
        except Exception:  # an unreadable history is marked in its row, not here
            continue
        if metric in seen:
            return
    if seen:
        raise unknown_metric(metric, list(seen), "--spark")


def xp_index(session: Any, index: int) -> int:
    """The XP at grid index ``index`` (the table's first column), which the patterns must
    have selected; returns it."""
    from ..api.patterns import check_index

    check_index(index, len(session.sheeps))
    if index not in set(session.selected):
        shown = ", ".join(str(i) for i in session.selected[:10])
        more = ", ..." if len(session.selected) > 10 else ""
        raise UsageError(f"XP {index} is not among the XPs the patterns select",
                         f"selected: {shown}{more}")  # fmt: skip
    return index


def resource_flags(sbatch: Optional[list[str]] = None, **flags: Any) -> tuple[tuple[str, Any], ...]:
    """The resource flags that were given, checked, as (resource key, value) pairs."""
    for key in ("time", "cpus_per_task"):
        if flags.get(key) is not None and flags[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {flags[key]}")
    pairs: list[tuple[str, Any]] = [(k, v) for k, v in flags.items() if v is not None]
    raw = []
    for item in sbatch or ():
        key, _, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not key or " " in key:
            raise UsageError(f"--sbatch takes KEY=VALUE or a bare KEY, got {item!r}",
                             "e.g. --sbatch mail-type=END --sbatch hold")  # fmt: skip
        raw.append((key, value))
    if raw:
        pairs.append(("sbatch_args", tuple(raw)))
    return tuple(pairs)


def _progress_printer(period: float = 1.0) -> Any:
    """A callback printing a backend's progress to stderr, at most once per ``period``."""
    last = [0.0]

    def report(text: str) -> None:
        # texts start with "done/total"; the last one is always shown
        done, _, total = text.split(" ", 1)[0].partition("/")
        now = time.monotonic()
        if done == total or now - last[0] >= period:
            last[0] = now
            _stderr(f"gridman: {text}")

    return report


def _print_clear_plan(session: Any) -> int:
    """``--clear --dry-run``: the XP folders --clear would delete (and the live XPs it would
    cancel first); nothing is cancelled or deleted. Returns the exit status (0)."""
    session.refresh()  # the states as they are now, as any table shows them
    chosen = session.chosen()
    existing = [s for s in chosen if s.xp.folder.exists()]
    typer.echo(f"gridman: --clear would delete {len(existing)} of {len(chosen)} XP folders "
               "(dry run: nothing deleted)")  # fmt: skip
    for sheep in existing:
        state = sheep.state or "never run"
        live = " (cancelled first)" if state in ("PENDING", "RUNNING") else ""
        typer.echo(f"  {sheep.xp.folder}  {state}{live}")
    return 0


def _check_flags(
    interval: float, trim: Optional[int], dry_run: bool, clear: bool, shown: tuple[Any, ...]
) -> None:
    if interval <= 0:
        raise UsageError(f"--interval must be > 0 seconds, got {interval}")
    if trim is not None and trim < 0:
        raise UsageError(f"--trim must be an XP index >= 0, got {trim}")
    for index in shown:
        if index is not None and index < 0:
            raise UsageError(f"XP index must be >= 0, got {index}")
    if sum(x is not None for x in shown) > 1:
        raise UsageError("--log, --tail and --folder are exclusive")


def _show_one(session: Any, log: Optional[int], tail: Optional[int], fold: Optional[int]) -> int:
    """``-l``/``-t``/``-f IDX`` (a grid index); returns the exit status: 1 when the log shown
    is a failed XP's (``-f`` prints a path, whatever the XP's state: 0)."""
    from .common import exit_for

    index = xp_index(session, next(x for x in (log, tail, fold) if x is not None))
    sheep = session.sheeps[index]
    if fold is not None:
        typer.echo(str(sheep.xp.folder))
        return 0
    from ..api.logs import follow_log, latest_log, read_log

    path = latest_log(sheep.xp.folder) if sheep.xp.folder.exists() else None
    if path is not None and not path.exists():
        path = None  # queued (PENDING): its log comes when it starts
    if log is not None:
        if path is None:
            raise UsageError(f"XP {index} ({sheep.sig}) has no log: it has not started yet")
        sys.stdout.buffer.write(read_log(path))
        sys.stdout.flush()
        session.refresh([sheep])
        return exit_for([sheep.state])
    if path is None:
        _stderr(f"gridman: XP {sheep.sig} has not started yet; waiting for its log")
    sheep.xp.folder.mkdir(parents=True, exist_ok=True)
    for chunk in follow_log(Path(sheep.xp.folder)):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    session.refresh([sheep])  # the state it ended in
    return exit_for([sheep.state])


def _print_plan(plan: Any, session: Any, verbose: bool, say: Any) -> None:
    """The plan: counts, then each step that does something (every step with --dry-run,
    grouped by reason past 200 XPs)."""
    counts = plan.counts()
    labels = {s.sig: session.names[i] for i, s in enumerate(session.sheeps)}
    head = ", ".join(f"{n} {a}" for a, n in counts.items() if n)
    say(f"gridman: plan for grid {session.grid.name}: {head or 'nothing'}")
    steps = [s for s in plan.steps if verbose or s.action.value != "keep"]
    limit = 200 if verbose else 20
    for step in steps[:limit]:
        label = labels.get(step.sig, "(removed from the grid)")
        say(f"  {step.action.value:<8} {step.sig}  {label}: {step.reason}")
    if verbose:
        _print_requests(plan, session, say)
    if len(steps) > limit:
        groups: dict[tuple[str, str], int] = {}
        for step in steps[limit:]:
            key = (step.action.value, step.reason)
            groups[key] = groups.get(key, 0) + 1
        say(f"  ... and {len(steps) - limit} more:")
        for (action, reason), n in sorted(groups.items(), key=lambda kv: -kv[1]):
            say(f"  {action:<8} x{n}: {reason}")


def _print_requests(plan: Any, session: Any, say: Any) -> None:
    """With --dry-run: what the jobs of the XPs to submit ask for, once per distinct request
    (the arrays of a Slurm submission; the local pool reads the GPUs the same way)."""
    from ..api.table import resource_requests

    submit = {s.sig for s in plan.steps if s.action.value == "submit"}
    counts: dict[tuple[tuple[str, Any], ...], int] = {}
    for sig, request in resource_requests(session).items():
        if sig in submit:
            key = tuple(request.items())
            counts[key] = counts.get(key, 0) + 1
    for key, n in counts.items():
        text = " ".join(f"{k}={v}" for k, v in key if v is not None)
        say(f"  asks     {n} XP{'s' if n > 1 else ''}: {text}")


def _list_grids(grids_dir: Optional[str], main: Optional[str], as_json: bool) -> int:
    """Print the project's grids (``--json``: as one array), one dotted name a line; exit 0,
    with a word on stderr when there are none."""
    import json

    from ..api.grid import available_grids
    from ..core.grids import grids_dir as folder_of
    from ..core.project import load_project

    project = load_project()
    names = available_grids(project, grids_dir, main)
    if as_json:
        typer.echo(json.dumps(names))
    else:
        for name in names:
            typer.echo(name)
    if not names:
        _stderr(f"gridman: no grid files in {folder_of(project, grids_dir, main)}")
    return 0
