"""The live monitor in a real terminal: tmux at 80x24, read back with ``capture-pane``.

Issue 14, items 10 and 5: every line of the monitor fits the terminal (rich's ``Table``,
cropped, never wrapped), the first line says when the states were last read, the running XPs
stay on screen when the grid is taller than the terminal (with an "N more" line), and the
table printed after Ctrl-C shows the states of that moment, not those of the last refresh.
The XPs run on the real local pool; the terminal is a real tmux pane running ``gridman``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridman.testing import xps_dir
from gridman.testing.grids import make_grid_project, stop_pool, wait_states

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

WIDTH, HEIGHT = 80, 24
#: 30 XPs with long names (wider than 80 columns with their metrics): the first two hold
#: until the test removes their file, the others wait in the pool's queue behind them.
TALL = """
for i in range(30):
    launcher(lr=round(0.001 * (i + 1), 3), seed=1000 + i, tags=["a-rather-long-tag", str(i)],
             hold=HOLD, epochs=3)
"""


@pytest.fixture
def tmux() -> Iterator[str]:
    """A tmux server of the test's own (its socket name), killed at the end."""
    name = f"gridman-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


def start(tmux: str, root: Path, args: str, env: dict[str, str]) -> None:
    """Run ``gridman ARGS`` in a new detached 80x24 pane."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = (f"cd {shlex.quote(str(root))} && env -u GRIDMAN_DIR -u GRIDMAN_MAIN {exports} "
               f"{shlex.quote(sys.executable)} -m gridman {args}; sleep 600")  # fmt: skip
    subprocess.run(["tmux", "-L", tmux, "-f", "/dev/null", "new-session", "-d", "-x",
                    str(WIDTH), "-y", str(HEIGHT), command], check=True)  # fmt: skip


def capture(tmux: str, history: bool = False) -> list[str]:
    """The pane's lines as shown (with ``history``, the scrolled-off ones too)."""
    extra = ["-S", "-"] if history else []
    out = subprocess.run(["tmux", "-L", tmux, "capture-pane", "-p", "-J", *extra],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return out.splitlines()


def wait_screen(tmux: str, needle: str, timeout: float = 60.0, history: bool = False) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = capture(tmux, history)
        if any(needle in line for line in lines):
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} never showed; the pane:\n" + "\n".join(lines))
        time.sleep(0.2)


def project(tmp_path: Path, body: str) -> tuple[Path, Path]:
    hold = tmp_path / "hold"
    hold.write_text("", encoding="utf8")
    grid = body.replace("HOLD", repr(str(hold)))
    root = make_grid_project(tmp_path / "proj", {"tall": grid}, settings={"local": {"workers": 2}})
    return root, hold


def test_monitor_fits_80x24_and_keeps_running_xps_on_screen(tmp_path: Path, tmux: str) -> None:
    root, hold = project(tmp_path, TALL)
    try:
        start(tmux, root, "grid tall -i 0.5", {"TERM": "xterm-256color"})
        lines = wait_screen(tmux, "running")
        deadline = time.monotonic() + 60
        while not any(" 2 running" in line for line in lines):  # both workers busy
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.3)
            lines = capture(tmux)
        running = [f for f in sorted(xps_dir(root).iterdir()) if '"RUNNING"' in
                   (f / "job.json").read_text(encoding="utf8")]  # fmt: skip
        lines = capture(tmux)
        text = "\n".join(lines)
        assert max(len(line) for line in lines) <= WIDTH, text
        assert len(lines) <= HEIGHT
        assert any(line.startswith("updated ") for line in lines), text  # when states were read
        assert running and all(f.name in text for f in running), text  # visible, not scrolled
        assert " more rows" in text, text  # the other XPs are counted
        assert any("RUNNING" in line for line in lines), text
    finally:
        hold.unlink()
        stop_pool(root / "outputs")


def test_ctrl_c_prints_the_states_of_now(tmp_path: Path, tmux: str) -> None:
    """Issue 14 item 5: the XPs end while the monitor sleeps (-i 600); after Ctrl-C the last
    table says COMPLETED, not the RUNNING of its last refresh."""
    body = "for seed in range(2):\n    launcher(seed=seed, hold=HOLD)\n"
    root, hold = project(tmp_path, body)
    try:
        start(tmux, root, "grid tall -i 600", {"TERM": "xterm-256color", "NO_COLOR": "1"})
        wait_screen(tmux, "updated ")
        folders = sorted(xps_dir(root).iterdir())
        wait_states(folders, {"RUNNING"})
        time.sleep(1.0)  # the monitor has drawn its screen; it now sleeps for 600 s
        hold.unlink()
        wait_states(folders, {"COMPLETED"})
        subprocess.run(["tmux", "-L", tmux, "send-keys", "C-c"], check=True)
        lines = wait_screen(tmux, "2/2 done", history=True)  # the table printed after Ctrl-C
        table = [line for line in lines if "|" in line and any(f.name in line for f in folders)]
        assert len(table) == 2 and all("COMPLETED" in line for line in table), "\n".join(lines)
        assert any("2/2 done" in line for line in lines), "\n".join(lines)
    finally:
        if hold.exists():
            hold.unlink()
        stop_pool(root / "outputs")


@pytest.mark.parametrize(
    ("env", "colored"),
    [({"NO_COLOR": ""}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False),
     ({"FORCE_COLOR": "1"}, True)],
)  # fmt: skip
def test_color_conventions(
    env: dict[str, str], colored: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_COLOR counts only when non-empty; FORCE_COLOR colours a pipe; TERM=dumb none."""
    from gridman.cli.view import use_color

    for key in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    tty = os.openpty()
    try:
        stream = os.fdopen(tty[1], "w") if "FORCE_COLOR" not in env else sys.stdout
        assert use_color(stream) is colored
    finally:
        os.close(tty[0])
