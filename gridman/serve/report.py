"""``gridman report``: a grid's page as one self-contained HTML file.

The served page's shell (``static/index.html``) with its style and script inlined, and the data
the script would fetch embedded as ``<script id="gridman-data" type="application/json">``:
``{"grid": GridPage, "curves": {KEY: Curves}}`` (docs/serve.md). The file opens from disk with
no server and no network; the script reads the data instead of fetching, and polls nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core import jsonsafe
from ..core.fsutil import atomic_write_text
from ..core.project import Project
from ..errors import UsageError
from . import data
from .curves import CurveStore
from .server import read_static

_STYLE_LINK = re.compile(r'<link\b[^>]*href="/static/app\.css"[^>]*>')
_SCRIPT_TAG = re.compile(r'<script\b[^>]*src="/static/app\.js"[^>]*>\s*</script>')


@dataclass(frozen=True)
class Report:
    """The file's text and the states of the XPs it shows (for the exit status)."""

    html: str
    states: list[str]
    xps: int


def _asset(name: str) -> str:
    found = read_static(name)
    if found is None:
        raise UsageError(f"gridman/serve/static/{name} is missing from this installation",
                         "reinstall gridman")  # fmt: skip
    return found.decode("utf8")


def embed_json(text: str) -> str:
    """JSON text safe inside ``<script>``: every ``<`` escaped (it only occurs in strings,
    where ``\\u003c`` reads the same), so no ``</script>`` or ``<!--`` can end the block."""
    return text.replace("<", "\\u003c")


def _inline(shell: str, css: str, js: str, payload: str) -> str:
    """The shell with the style and script inlined and the data block before the script."""
    if not _STYLE_LINK.search(shell) or not _SCRIPT_TAG.search(shell):
        raise UsageError("index.html does not load /static/app.css and /static/app.js",
                         "reinstall gridman")  # fmt: skip
    style = "<style>\n" + css.replace("</style", "<\\/style") + "\n</style>"
    script = "<script>\n" + js.replace("</script", "<\\/script") + "\n</script>"
    block = f'<script id="gridman-data" type="application/json">{payload}</script>\n'
    shell = _STYLE_LINK.sub(lambda m: style, shell, count=1)
    return _SCRIPT_TAG.sub(lambda m: block + script, shell, count=1)


def report_payload(handle: data.GridHandle, points: int) -> tuple[str, list[str]]:
    """(the data block's JSON text, the rows' states): the grid page of the selected XPs and
    the curves of every metric their histories hold."""
    page = data.grid_page(handle)
    sheeps = handle.session.sheeps
    xps = [(sheeps[r["index"]].sig, sheeps[r["index"]].xp.folder) for r in page["rows"]]
    store = CurveStore()
    keys = store.keys(xps, points)
    curves = ",".join(f"{json.dumps(k)}:{store.curves(xps, k, points)}" for k in keys)
    text = '{"grid":' + jsonsafe.dumps(page, separators=(",", ":"), default=str)
    text += ',"curves":{' + curves + "}}"
    return embed_json(text), [str(r["state"]) for r in page["rows"]]


def build_report(
    project: Project,
    name: str,
    patterns: Sequence[str] = (),
    grids_dir: Optional[str] = None,
    main: Optional[str] = None,
    points: int = 800,
) -> Report:
    """The report of grid ``name`` (the XPs ``patterns`` select, as ``gridman grid``'s)."""
    handle = data.open_handle(project, name, grids_dir, main, patterns)
    payload, states = report_payload(handle, points)
    html = _inline(_asset("index.html"), _asset("app.css"), _asset("app.js"), payload)
    return Report(html, states, len(states))


def write_report(report: Report, path: Path) -> None:
    """Write the file atomically (a reader never sees half of it)."""
    try:
        atomic_write_text(path, report.html, fsync=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def report_data(html: str) -> Any:
    """The data block of a report's text (tests read it back)."""
    start = html.index('<script id="gridman-data" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])
