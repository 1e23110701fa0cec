"""``gridman report`` and ``gridman serve`` as commands: the report's exit status and embedded
data, no network asset, ``--help``, a port in use, the URL printed and a clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from gridman.serve.report import report_data
from gridman.testing.browser import ServeProcess
from gridman.testing.webproject import WebProject, make_web_project

GRIDMAN = str(Path(sys.executable).parent / "gridman")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebProject:
    return make_web_project(tmp_path_factory.mktemp("rep") / "proj", 3, 2, entries=50,
                            states={1: "FAILED"}, extra_grids={"other": 2})  # fmt: skip


def run(web: WebProject, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDMAN_DIR", "GRIDMAN_MAIN")}
    return subprocess.run([GRIDMAN, *args], cwd=web.root, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_report_exit_status_and_data(web: WebProject, tmp_path: Path) -> None:
    out = tmp_path / "sweep.html"
    done = run(web, "report", "sweep", "-o", str(out), "--points", "20")
    assert done.returncode == 1, done.stderr  # XP 1 failed: export's rule
    html = out.read_text()
    data = report_data(html)
    assert [r["sig"] for r in data["grid"]["rows"]] == list(web.sigs)
    assert set(data["curves"]) == {"train.loss", "valid.acc", "epoch"}
    loss = data["curves"]["train.loss"]
    assert loss["points"] == 20 and all(len(c["x"]) <= 20 for c in loss["curves"])
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert not re.search(r"<link[^>]*href=\"(?!data:)", html)  # data: URLs only
    assert not re.search(r"(src|href)=\"https?://", html)
    assert "/static/app." not in html.split('id="gridman-data"')[0]
    ok = tmp_path / "other.html"
    assert run(web, "report", "other", "-o", str(ok)).returncode == 0
    some = tmp_path / "some.html"
    assert run(web, "report", "sweep", "seed=0", "-o", str(some)).returncode == 0
    assert len(report_data(some.read_text())["grid"]["rows"]) == 3


def test_report_escapes_the_closing_tag(web: WebProject, tmp_path: Path) -> None:
    from gridman.testing.webproject import push_metric

    folder = web.grids["other"].folders[0]
    push_metric(folder, {"note": "</script><script>alert(1)</script>", "epoch": 99})
    out = tmp_path / "o.html"
    assert run(web, "report", "other", "-o", str(out)).returncode == 0
    html = out.read_text()
    assert "alert(1)</script>" not in html
    assert report_data(html)["grid"]["rows"][0]["metrics"]["note"].startswith("</script>")


def test_unknown_grid_is_the_grid_error(web: WebProject) -> None:
    done = run(web, "serve", "nope")
    grid = run(web, "grid", "nope", "--dry-run")
    assert done.returncode == 2 and grid.returncode == 2
    assert "no grid named 'nope'" in done.stderr and "sweep" in done.stderr
    assert run(web, "report", "nope", "-o", "x.html").returncode == 2


def test_serve_help() -> None:
    done = subprocess.run([GRIDMAN, "serve", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for text in ["--host", "--port", "--token", "Examples:", "gridman serve mygrid"]:
        assert text in done.stdout
    helped = subprocess.run([GRIDMAN, "report", "--help"], capture_output=True, text=True)
    assert "--points" in helped.stdout and "-o" in helped.stdout


def test_port_in_use_is_a_usage_error(web: WebProject) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run(web, "serve", "--port", str(port))
    assert done.returncode == 2
    assert f"port {port}" in done.stderr and "--port 0" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_the_url_and_stops_cleanly(web: WebProject, stop: int) -> None:
    server = ServeProcess(web.root, ["sweep"])
    try:
        split = urllib.parse.urlsplit(server.url)
        assert split.hostname == "127.0.0.1" and split.path == "/grid/sweep"
        assert split.port and not split.query  # loopback: no token
        server.process.send_signal(stop)
        assert server.process.wait(20) == 0
    finally:
        out = server.stop()
    assert "Traceback" not in out and "stopped serving" in out
