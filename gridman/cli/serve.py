"""``gridman serve`` (a read-only local web view of the project's grids) and ``gridman
report`` (a grid's page as one self-contained HTML file): thin typer commands over
gridman/serve/ (docs/serve.md)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import UsageError
from .common import exit_for, stderr

TOKEN_VAR = "GRIDMAN_SERVE_TOKEN"


def serve(
    name: Optional[str] = typer.Argument(
        None, metavar="NAME", help="Open this grid's page (default: the list of grids)."
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        metavar="ADDRESS",
        help="Address to listen on; one other than loopback needs a token.",
    ),
    port: int = typer.Option(8790, "--port", "-p", metavar="PORT", help="0: a free port."),
    token: Optional[str] = typer.Option(
        None,
        "--token",
        metavar="TOKEN",
        help=f"Token the URL must carry (default: ${TOKEN_VAR}, else a fresh one when needed).",
    ),
    grids_dir: Optional[str] = typer.Option(
        None, "--grids-dir", metavar="DIR", help="Folder of grid files."
    ),
    main: Optional[str] = typer.Option(
        None, "--main", metavar="MAIN", help="The main (module or path)."
    ),
) -> None:
    """Serve a live, read-only web view of the project's grids until Ctrl-C.

    Tables sortable and filtered with the CLI's patterns, curves, parallel
    coordinates, each XP's attempts and log; it all updates while XPs run. Every
    page has a JSON twin under /api/ (rows as `gridman grid NAME --json`'s).
    Nothing is ever changed: job records are read, never polled or rewritten.

    \b
    Examples:
      gridman serve                     every grid, at http://127.0.0.1:8790/
      gridman serve mygrid --port 0     one grid's page, on a free port
      gridman serve --host 0.0.0.0      reachable from other machines: the URL
                                        printed carries a token (?token=...)
      ssh -L 8790:localhost:8790 cluster   then open http://127.0.0.1:8790/

    Exit status: 0 when stopped (Ctrl-C or SIGTERM), 2 for bad usage (a port in
    use, an unknown grid), 3 for a bug in gridman.
    """
    from ..api.xp import open_project
    from ..serve.server import serve as start

    project = open_project()
    if name is not None:
        _check_grid(project, name, grids_dir, main)
    given = token if token is not None else os.environ.get(TOKEN_VAR) or None
    server = start(project, host, port, given, grids_dir, main)
    # SIGTERM stops as Ctrl-C does, from before the URL is printed: whoever reads the URL
    # may stop the server at once
    previous = signal.signal(signal.SIGTERM, _stop)
    try:  # (a signal may come as soon as the URL is out: the whole of it is inside)
        url = server.url(f"grid/{name}" if name else "")
        typer.echo(f"Serving {project.root.name} at {url}")
        typer.echo("Press Ctrl-C to stop.")
        sys.stdout.flush()
        server.warm_up(name)  # the grid's rows ready before the browser asks for them
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.web.server_close()
    stderr("gridman: stopped serving")


def _check_grid(project: Any, name: str, grids_dir: Optional[str], main: Optional[str]) -> None:
    """The error ``gridman grid NAME`` gives for a grid the project does not have."""
    from ..api.grid import available_grids
    from ..core.grids import grids_dir as folder_of
    from ..core.grids import unknown_grid

    if name not in available_grids(project, grids_dir, main):
        raise unknown_grid(folder_of(project, grids_dir, main), name)


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def report(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Grid file grids/NAME.py."),
    patterns: Optional[list[str]] = typer.Argument(
        None, metavar="PATTERN", help="Select XPs: lr=0.1, !pat, 3 (the table's index)."
    ),
    output: Optional[str] = typer.Option(
        None, "--output", "-o", metavar="FILE", help="The HTML file (default: NAME.html)."
    ),
    points: int = typer.Option(
        800, "--points", metavar="N", help="Points per curve at most (2-5000; display only)."
    ),
    grids_dir: Optional[str] = typer.Option(
        None, "--grids-dir", metavar="DIR", help="Folder of grid files."
    ),
    main: Optional[str] = typer.Option(
        None, "--main", metavar="MAIN", help="The main (module or path)."
    ),
) -> None:
    """Write a grid's page as one HTML file that opens from disk, offline.

    The table (sort, pattern filter), curves of every metric and parallel
    coordinates of `gridman serve`, with the data embedded: no server, no
    network, nothing to install to read it. A snapshot: it does not update.

    \b
    Examples:
      gridman report mygrid                      mygrid.html
      gridman report mygrid -o sweep.html        another file name
      gridman report mygrid lr=0.1 !seed=3       some XPs only
      gridman report mygrid --points 2000        finer curves

    Exit status: 0 when every XP shown is fine, 1 when some failed (the file is
    written all the same), 2 for bad usage or input, 3 for a bug in gridman.
    """
    from ..api.xp import open_project
    from ..serve.curves import points_param
    from ..serve.report import build_report, write_report

    project = open_project()
    if not name:
        _check_grid(project, "", grids_dir, main)
    assert name is not None
    if not 2 <= points <= 5000:
        raise UsageError(f"--points must be between 2 and 5000, got {points}")
    found = build_report(project, name, patterns or (), grids_dir, main,
                         points_param(str(points)))  # fmt: skip
    path = Path(output or f"{name}.html")
    write_report(found, path)
    typer.echo(f"gridman: wrote {path} ({found.xps} XPs)", err=True)
    raise typer.Exit(exit_for(found.states))
