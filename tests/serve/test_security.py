"""Path tricks in every URL parameter, methods, Host headers and the token, against real
``gridman serve`` processes: 404/400 (never 200 with foreign content, never 500), 405, 403."""

from __future__ import annotations

import http.client
import os
import urllib.parse
from collections.abc import Iterator
from typing import Optional

import pytest

from gridman.testing.browser import ServeProcess
from gridman.testing.webproject import WebProject, make_web_project

SECRET = "TOP-SECRET-CONTENT-42"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebProject:
    base = tmp_path_factory.mktemp("sec")
    project = make_web_project(base / "proj", 2, 1, entries=4, attempts={1: 2})
    (base / "secret.txt").write_text(SECRET)
    (project.dir / "xps" / "secret.txt").write_text(SECRET)  # an XP folder's sibling
    # XP 1's latest log is a link planted to a file outside the project
    log = project.folders[1] / "log" / "2.log"
    log.unlink()
    log.symlink_to(base / "secret.txt")
    return project


@pytest.fixture(scope="module")
def server(web: WebProject) -> Iterator[ServeProcess]:
    with ServeProcess(web.root) as process:
        yield process


def port_of(server: ServeProcess) -> int:
    return int(urllib.parse.urlsplit(server.url).port or 0)


def request(
    port: int, path: str, method: str = "GET", headers: Optional[dict[str, str]] = None
) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host="Host" in (headers or {}))
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


TRICKS = ["..", "%2e%2e", "%2E%2e", "..%2f..%2fsecret.txt", "%2f", "..%5c..", "%00", "a%00b",
          "%2fetc%2fpasswd", "/etc/passwd", "x" * 5000, "secret.txt", "....", ".", "%2e",
          "..%2f..%2f..%2f..%2fetc%2fpasswd"]  # fmt: skip


def templates(web: WebProject) -> list[str]:
    sig = web.sigs[0]
    return [
        "/grid/{}", "/xp/{}", "/static/{}", "/api/grid/{}", "/api/grid/{}/curves?metric=epoch",
        "/api/xp/{}", "/api/xp/{}/curves?metric=epoch", "/api/xp/{}/log",
        "/api/grid/sweep/curves?metric={}", f"/api/xp/{sig}/curves?metric={{}}",
        "/api/grid/sweep/curves?metric=epoch&points={}", f"/api/xp/{sig}/log?bytes={{}}",
        f"/api/xp/{sig}/{{}}", "/{}", "/api/{}",
    ]  # fmt: skip


def test_path_tricks_in_every_parameter(server: ServeProcess, web: WebProject) -> None:
    port = port_of(server)
    seen = 0
    for template in templates(web):
        for trick in TRICKS:
            path = template.format(trick)
            status, body, _ = request(port, path)
            assert status in (400, 404), (path, status, body[:200])
            assert SECRET.encode() not in body and b"root:" not in body, path
            seen += 1
    assert seen == len(TRICKS) * len(templates(web))


def test_raw_dot_segments_and_absolute_targets(server: ServeProcess, web: WebProject) -> None:
    port = port_of(server)
    for path in ["/api/xp/../../secret.txt", f"/api/xp/{web.sigs[0]}/../../secret.txt",
                 "/static/../../../../etc/passwd", "http://evil/api/grids", "*",
                 "//etc/passwd", "/static/", "/static/app.js/", "/api/grid/sweep/"]:  # fmt: skip
        status, body, _ = request(port, path)
        assert status in (400, 404), (path, status)
        assert SECRET.encode() not in body


def test_a_planted_link_is_never_followed(server: ServeProcess, web: WebProject) -> None:
    status, body, _ = request(port_of(server), f"/api/xp/{web.sigs[1]}/log")
    assert status == 404 and SECRET.encode() not in body
    assert request(port_of(server), f"/api/xp/{web.sigs[0]}/log")[0] == 200


def test_writes_are_not_allowed(server: ServeProcess) -> None:
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"]:
        status, body, headers = request(port_of(server), "/api/grids", method)
        assert status == 405, method
        assert headers.get("allow") == "GET, HEAD"
    status, body, _ = request(port_of(server), "/api/grids", "HEAD")
    assert status == 200 and body == b""


def test_foreign_host_header_is_refused(server: ServeProcess) -> None:
    port = port_of(server)
    for host in ["evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                 f"localhost:{port + 1}"]:  # fmt: skip
        status, body, _ = request(port, "/api/grids", headers={"Host": host})
        assert status == 403, host
        assert b'"grids"' not in body
    for host in [f"127.0.0.1:{port}", f"localhost:{port}"]:
        assert request(port, "/api/grids", headers={"Host": host})[0] == 200


def test_no_server_version_leak(server: ServeProcess) -> None:
    _, _, headers = request(port_of(server), "/api/grids")
    assert "python" not in headers.get("server", "").lower()


def test_non_loopback_bind_needs_the_token(web: WebProject) -> None:
    with ServeProcess(web.root, ["--host", "0.0.0.0"]) as server:
        token = urllib.parse.parse_qs(urllib.parse.urlsplit(server.url).query)["token"][0]
        port = port_of(server)
        assert len(token) >= 16
        assert request(port, "/api/grids")[0] == 403
        assert request(port, "/")[0] == 403
        assert request(port, "/api/grids?token=wrong")[0] == 403
        status, body, headers = request(port, f"/api/grids?token={token}")
        assert status == 200 and b'"sweep"' in body
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert "HttpOnly" in headers["set-cookie"]
        status, body, _ = request(port, "/api/grid/sweep", headers={"Cookie": cookie})
        assert status == 200
        bad = {"Cookie": "gridman_token=nope"}
        assert request(port, "/api/grid/sweep", headers=bad)[0] == 403


def test_given_token_from_the_environment(web: WebProject, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDMAN_SERVE_TOKEN", "s3cret-token-value")
    with ServeProcess(web.root, ["--host", "0.0.0.0"]) as server:
        assert "token=s3cret-token-value" in server.url
        assert request(port_of(server), "/api/grids?token=s3cret-token-value")[0] == 200
    assert os.environ["GRIDMAN_SERVE_TOKEN"]
