"""A real headless browser and a real ``gridman serve`` for the web view's tests and benchmark.

Nothing here is imported by gridman itself. The browser is Debian's ``chromium`` driven by
Playwright (from PyPI, the ``test`` extra) pointed at that executable, so no browser is ever
downloaded:

- :func:`browser_missing` says why no browser can run here ("" when one can), and
  :func:`needs_browser` turns that into a pytest skip mark, or an error where
  ``GRIDMAN_REQUIRE_BROWSER`` is set (CI), so that CI never skips the browser tests;
- :func:`launch_browser` starts chromium through Playwright (``launch(executable_path=...)``),
  falling back to attaching over the DevTools protocol to a chromium started here;
- :class:`ServeProcess` runs ``gridman serve`` as a real child process on port 0 and reads the
  URL it prints; :func:`peak_rss_mib` reads a process's peak memory from ``/proc``;
- :func:`take_screenshots` (also ``python -m gridman.testing.browser --screenshots DIR``)
  writes the README's pictures of the three views from a project of
  :mod:`gridman.testing.webproject`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

#: Set in CI: a missing browser fails the browser tests instead of skipping them.
REQUIRE_VAR = "GRIDMAN_REQUIRE_BROWSER"
#: Overrides the chromium executable (default: ``chromium`` on PATH, else /usr/bin/chromium).
CHROMIUM_VAR = "GRIDMAN_CHROMIUM"
#: Flags for a headless chromium in a container (no user namespaces for its sandbox there).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-dev-shm-usage")

_URL = re.compile(r"https?://[^\s'\"<>]+")


def chromium_path() -> Optional[str]:
    """The chromium executable to drive, or None when there is none."""
    given = os.environ.get(CHROMIUM_VAR)
    if given:
        return given if os.access(given, os.X_OK) else None
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def browser_missing() -> str:
    """Why no browser test can run here ("" when chromium and Playwright are both there)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "no chromium executable (apt-get install chromium, or set GRIDMAN_CHROMIUM)"
    return ""


def needs_browser() -> Any:
    """A pytest skip mark for tests that drive a real browser; with GRIDMAN_REQUIRE_BROWSER
    set (CI) a missing browser is an error instead, so CI never skips them."""
    import pytest

    missing = browser_missing()
    if missing and os.environ.get(REQUIRE_VAR):
        raise RuntimeError(f"{REQUIRE_VAR} is set but {missing}")
    return pytest.mark.skipif(bool(missing), reason=missing)


def launch_browser(playwright: Playwright) -> Browser:
    """Start headless chromium through Playwright. Playwright's own build is never used: the
    executable is Debian's. When Playwright cannot launch it (a protocol mismatch between a
    newer chromium and an older Playwright), attach over CDP to one started here."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError(browser_missing() or "no chromium executable")
    try:
        return playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
    except Exception as launch_error:  # Playwright raises its own Error; any failure: try CDP
        try:
            return _connect_over_cdp(playwright, executable)
        except Exception:
            raise launch_error from None


def _connect_over_cdp(playwright: Playwright, executable: str) -> Browser:
    """Start chromium with a DevTools port chosen by itself and attach to it."""
    process = subprocess.Popen(
        [executable, "--headless=new", *CHROMIUM_ARGS, "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    line = _read_line_matching(process, process.stderr, re.compile(r"ws://\S+"), 30.0)
    browser = playwright.chromium.connect_over_cdp(line)
    # The process outlives the connection unless stopped: stop it when the browser closes.
    browser.on("disconnected", lambda _browser: process.terminate())
    return browser


def _read_line_matching(
    process: subprocess.Popen[str], stream: Any, pattern: re.Pattern[str], timeout: float
) -> str:
    """The first match of ``pattern`` in the lines ``stream`` writes within ``timeout``."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if not ready:
            if process.poll() is not None:
                break
            continue
        line = stream.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        found = pattern.search(line)
        if found:
            return found.group(0)
    process.kill()
    process.wait()
    raise RuntimeError(f"no line matching {pattern.pattern} within {timeout} s: {''.join(seen)}")


class ServeProcess:
    """``gridman serve ARGS`` in ``root`` as a real child process, on a port the system picks.

    ``url`` is the URL it printed (with its token, if any), ``base`` the same without path
    or query; :meth:`stop` (or leaving the ``with`` block) ends it and returns what it wrote.
    """

    def __init__(self, root: Path, args: Sequence[str] = (), timeout: float = 60.0) -> None:
        gridman = Path(sys.executable).parent / "gridman"
        command = [str(gridman), "serve", *args]
        if "--port" not in args:
            command += ["--port", "0"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # its URL line must reach us at once
        self.process = subprocess.Popen(
            command, cwd=root, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = _read_line_matching(self.process, self.process.stdout, _URL, timeout)
        scheme, rest = self.url.split("://", 1)
        self.base = f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> str:
        """End the server (SIGTERM, then SIGKILL after 10 s) and return its remaining output."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        out = self.process.stdout.read() if self.process.stdout else ""
        if self.process.stdout:
            self.process.stdout.close()
        return out or ""

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def wait_view(page: Page, view: str, timeout_ms: float = 20_000) -> None:
    """Wait until the page shows ``view`` (``grids``, ``grid``, ``xp``) with its data."""
    page.wait_for_function(
        "view => document.body && document.body.dataset.view === view", arg=view,
        timeout=timeout_ms,
    )  # fmt: skip


@contextlib.contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[Page]:
    """A fresh page of a fresh headless browser (for scripts; tests share one browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def get_json(url: str, timeout: float = 60.0) -> Any:
    """GET ``url`` and decode its JSON body (a test's own view of the server's API)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


#: The README's pictures: file name -> what it shows.
SCREENSHOTS = ("serve-grids.png", "serve-grid.png", "serve-grouped.png", "serve-xp.png")


def screenshot_views(page: Page, base: str, grid: str, sig: str, out: Path) -> list[Path]:
    """Write :data:`SCREENSHOTS` of a served project into ``out``: the grids, grid ``grid``
    (one curve per XP, then grouped by seed) and XP ``sig``. Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in SCREENSHOTS]
    size = page.viewport_size or {"width": 1280, "height": 860}
    page.goto(f"{base}/")
    wait_view(page, "grids")
    # A short list of grids: the picture ends below the table instead of a blank page.
    box = page.locator("table#grids").bounding_box()
    bottom = int(box["y"] + box["height"] + 24) if box else size["height"]
    page.screenshot(path=str(paths[0]), clip={"x": 0, "y": 0, "width": size["width"],
                                              "height": min(bottom, size["height"])})  # fmt: skip
    page.goto(f"{base}/grid/{grid}")
    wait_view(page, "grid")
    page.wait_for_function("() => window.gridman && window.gridman.curves.lines > 0")
    page.screenshot(path=str(paths[1]), full_page=True)
    page.select_option("select#group-by", "seed")
    page.wait_for_function("() => window.gridman.curves.bands > 0")
    page.locator("canvas#curves").scroll_into_view_if_needed()
    page.screenshot(path=str(paths[2]))
    page.goto(f"{base}/xp/{sig}")
    wait_view(page, "xp")
    page.wait_for_function("() => document.querySelector('pre#xp-log').textContent.length > 0")
    page.screenshot(path=str(paths[3]), full_page=True)
    return paths


def take_screenshots(out: Path, work: Path) -> list[Path]:
    """Build a demo project in ``work`` (6 learning rates x 3 seeds, a few XPs running, one
    failed twice, a second grid), serve it and write the README's screenshots into ``out``."""
    from .webproject import make_web_project

    states = {4: "RUNNING", 9: "RUNNING", 13: "FAILED", 17: "PENDING"}
    project = make_web_project(work / "demo", 6, 3, entries=60, states=states,
                               attempts={13: 2}, extra_grids={"baseline": 4})  # fmt: skip
    with ServeProcess(project.root) as server, browser_page(1280, 860) as page:
        return screenshot_views(page, server.base, project.grid, project.sigs[13], out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m gridman.testing.browser --screenshots DIR``: write the README's pictures."""
    parser = argparse.ArgumentParser(prog="python -m gridman.testing.browser")
    parser.add_argument("--screenshots", type=Path, required=True, metavar="DIR")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gridman-shots-") as work:
        take_screenshots(args.screenshots, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
