"""``gridman serve``'s HTTP server: routes, checks, token, caching headers (docs/serve.md).

The standard library's ``ThreadingHTTPServer``: nothing to install. Every parameter is checked
before any path is built from it: a grid name against the project's list of grids, a
signature against ``is_valid_sig`` and the XP root, a static file against a fixed dict. Only
GET and HEAD are answered (405 for anything else). A bind to an address other than loopback
needs a token (query ``token=`` or the ``gridman_token`` cookie set on the first good request);
on a loopback bind, a Host header naming another host is refused (DNS rebinding).

A grid is opened (its explore function run) once and kept; a request without
``If-None-Match`` (a page load, not a live poll) opens it again, so grids and XPs added while
the server runs appear on the next load. Live polls only re-read job records and histories.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import http.cookies
import ipaddress
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from ..api.grid import available_grids
from ..api.xp import xp_root
from ..core import jsonsafe
from ..core.project import Project
from ..core.signature import is_valid_sig
from ..core.xp import require_xp_folder
from ..errors import GridmanError, UnknownXPError, UnsafePathError, UsageError
from . import data
from .curves import CurveStore, points_param

#: The packaged assets served, by URL name: nothing else under static/ is ever read.
STATIC = {
    "app.js": "application/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
SHELL = "index.html"
COOKIE = "gridman_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_MAX_NAME = 200
#: Seconds during which a grid opened at start serves the first page load as it is.
WARM_FOR = 60.0
# The page loads its own script and style only; inline styles set by the script are allowed.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class NotFound(UnknownXPError):
    """A URL the server does not serve (404)."""


class Forbidden(GridmanError):
    """A request without the right token, or with a foreign Host header (403)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_static(name: str) -> Optional[bytes]:
    """A packaged file of ``gridman/serve/static`` (None when it is missing)."""
    try:
        return (resources.files("gridman.serve") / "static" / name).read_bytes()
    except (OSError, ValueError):
        return None


class Site:
    """What the server shows: the project, its opened grids and the curves' cache."""

    def __init__(
        self, project: Project, grids_dir: Optional[str] = None, main: Optional[str] = None
    ) -> None:
        self.project = project
        self.grids_dir = grids_dir
        self.main = main
        self.curves = CurveStore()
        self._handles: dict[str, data.GridHandle] = {}
        self._warm: dict[str, float] = {}  # opened ahead of the first page load: when
        self._lock = threading.RLock()  # one view computed at a time: rows share sessions

    def grid_names(self) -> list[str]:
        return available_grids(self.project, self.grids_dir, self.main)

    def check_grid(self, name: str) -> str:
        """``name`` when it is one of the project's grids, else NotFound."""
        if len(name) > _MAX_NAME or name not in self.grid_names():
            raise NotFound(f"no grid named {name[:_MAX_NAME]!r} in this project")
        return name

    def check_sig(self, sig: str) -> Path:
        """The folder of XP ``sig`` of the project, else NotFound (before any path is built)."""
        if not is_valid_sig(sig):
            raise NotFound(f"{sig[:40]!r} is not the signature of an XP of this project")
        return require_xp_folder(xp_root(self.project, self.main), sig)

    def handle(self, name: str, reopen: bool) -> data.GridHandle:
        with self._lock:
            found = self._handles.get(name)
            opened = self._warm.pop(name, None)
            if opened is not None and time.monotonic() - opened < WARM_FOR:
                reopen = False  # opened moments ago for this very load: not again
            if found is None or reopen:
                found = data.open_handle(self.project, name, self.grids_dir, self.main)
                self._handles[name] = found
            return found

    def warm_up(self, name: Optional[str]) -> None:
        """Open grid ``name`` (else every grid) and compute its rows, filling the row cache,
        so that the first page load finds them ready. Errors are left for that load to show."""
        names = [name] if name else self.grid_names()
        for each in names:
            try:
                with self._lock:
                    data.grid_page(self.handle(each, reopen=False))
                    self._warm[each] = time.monotonic()
            except Exception:  # the page load that follows opens it again and reports it
                pass

    def grids(self, reopen: bool) -> dict[str, Any]:
        summaries = []
        for name in self.grid_names():
            try:
                with self._lock:
                    summaries.append(data.grid_summary(self.handle(name, reopen)))
            except Exception as exc:  # a grid whose file raises is listed with its error
                message = exc.message if isinstance(exc, GridmanError) else repr(exc)
                summaries.append(data.broken_summary(name, message))
        return data.grids_page(self.project, summaries)

    def grid(self, name: str, reopen: bool) -> dict[str, Any]:
        with self._lock:
            return data.grid_page(self.handle(self.check_grid(name), reopen))

    def grid_curves(self, name: str, metric: Optional[str], points: int) -> str:
        with self._lock:
            handle = self.handle(self.check_grid(name), False)
            xps = [(s.sig, s.xp.folder) for s in handle.session.sheeps]
        return self.curves.curves(xps, metric, points)

    def xp(self, sig: str) -> dict[str, Any]:
        folder = self.check_sig(sig)
        with self._lock:
            where = data.find_name(list(self._handles.values()), folder.name)
        return data.xp_page(self.project, self.main, folder.name, where)

    def xp_curves(self, sig: str, metric: Optional[str], points: int) -> str:
        folder = self.check_sig(sig)
        return self.curves.curves([(folder.name, folder)], metric, points)

    def log(self, sig: str, size: int) -> dict[str, Any]:
        folder = self.check_sig(sig)
        return data.log_tail(self.project, self.main, folder.name, size)


def _json_body(value: Any) -> bytes:
    return jsonsafe.dumps(value, separators=(",", ":"), default=str).encode()


class Handler(BaseHTTPRequestHandler):
    """One request: checks, then a route; errors as JSON (API) or a small page (HTML)."""

    server_version = "gridman"
    sys_version = ""  # no Python version in the Server header
    protocol_version = "HTTP/1.1"
    server: WebServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # POST, PUT, DELETE, anything else: read-only server
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        body = _json_body({"version": 1, "error": f"{self.command} is not allowed here",
                           "hint": "this server is read-only: GET and HEAD only"})  # fmt: skip
        self.close_connection = True
        self._send(405, "application/json", body, head=False, extra={"Allow": "GET, HEAD"})

    def _serve(self, head: bool) -> None:
        api = self.path.startswith("/api/")
        try:
            status, kind, body, extra = self._route()
        except GridmanError as exc:
            status = _status_of(exc)
            (kind, body), extra = self._error(api, status, exc.message, exc.hint), {}
        except Exception as exc:  # a bug: answered, never a dropped connection
            (kind, body), extra = self._error(api, 500, f"internal error: {exc!r}", None), {}
            status = 500
        if status == 200 and self._not_modified(body):
            self._send(304, kind, b"", head=True, extra=extra)
            return
        self._send(status, kind, body, head, extra)

    def _error(
        self, api: bool, status: int, message: str, hint: Optional[str]
    ) -> tuple[str, bytes]:
        if api:
            return "application/json", _json_body({"version": 1, "error": message, "hint": hint})
        import html

        text = f"<!doctype html><title>{status}</title><h1>{status}</h1><p>{html.escape(message)}"
        return "text/html; charset=utf-8", text.encode()

    def _not_modified(self, body: bytes) -> bool:
        wanted = self.headers.get("If-None-Match")
        return wanted is not None and wanted.strip() == _etag(body)

    def _route(self) -> tuple[int, str, bytes, dict[str, str]]:
        parts, query = _parse_target(self.path)
        self._check_host()
        extra = self._check_token(query)
        poll = self.headers.get("If-None-Match") is not None
        site = self.server.site
        kind, body = _dispatch(site, parts, query, poll)
        return 200, kind, body, extra

    def _check_host(self) -> None:
        if not self.server.loopback:
            return  # the token protects a non-loopback bind
        name, port = _split_host((self.headers.get("Host") or "").strip().lower())
        allowed = {*LOOPBACK_NAMES, self.server.bound_name}
        if name not in allowed or port not in ("", str(self.server.port)):
            raise Forbidden(f"Host {name[:100]!r} is not this server",
                            "open the URL gridman serve printed")  # fmt: skip

    def _check_token(self, query: dict[str, str]) -> dict[str, str]:
        token = self.server.token
        if token is None:
            return {}
        given = query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
            return {"Set-Cookie": cookie}
        jar = http.cookies.SimpleCookie()
        try:
            jar.load(self.headers.get("Cookie") or "")
        except http.cookies.CookieError:
            pass
        morsel = jar.get(COOKIE)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), token.encode()):
            return {}
        raise Forbidden(
            "a token is needed", "open the URL with ?token=... that gridman serve printed"
        )

    def _send(
        self, status: int, kind: str, body: bytes, head: bool,
        extra: Optional[dict[str, str]] = None,
    ) -> None:  # fmt: skip
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if status in (200, 304):
            self.send_header(
                "ETag", _etag(body) if status == 200 else self.headers.get("If-None-Match", "")
            )
        # The API is never stored: a page load must not send If-None-Match by itself (that
        # is how the server tells a live poll from a load, which opens the grid again).
        api = self.path.startswith("/api/")
        self.send_header("Cache-Control", "no-store" if api else "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the URL may hold the token
        self.send_header("X-Frame-Options", "DENY")
        if kind.startswith("text/html"):
            self.send_header("Content-Security-Policy", _CSP)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head and status != 304:
            self.wfile.write(body)


def _split_host(host: str) -> tuple[str, str]:
    """(name, port) of a Host header: ``[::1]:8790`` -> (``[::1]``, ``8790``)."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else ("" if not rest else "?")
    name, _, port = host.partition(":")
    return name, port


def _status_of(exc: GridmanError) -> int:
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, (UnknownXPError, UnsafePathError)):
        return 404
    if type(exc).__name__ == "UnknownGridError":
        return 404
    return 400


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _parse_target(target: str) -> tuple[list[str], dict[str, str]]:
    """The decoded path segments and query parameters; anything that could name another
    path (``..``, ``.``, an encoded ``/`` or ``\\``, NUL, empty segments) is NotFound, and a
    repeated or undecodable parameter a UsageError (400)."""
    if len(target) > 4096 or not target.startswith("/"):
        raise NotFound("no such page")
    split = urllib.parse.urlsplit(target)
    raw = split.path[1:]
    parts = [] if raw == "" else raw.split("/")
    decoded = []
    for piece in parts:
        text = urllib.parse.unquote(piece, errors="strict") if "%" in piece else piece
        if text in ("", ".", "..") or any(c in text for c in "/\\\x00") or len(text) > _MAX_NAME:
            raise NotFound("no such page")
        decoded.append(text)
    query: dict[str, str] = {}
    try:
        pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True, strict_parsing=False,
                                       errors="strict", max_num_fields=20)  # fmt: skip
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the query string cannot be read") from None
    for key, value in pairs:
        if key in query or "\x00" in value or len(value) > 1000:
            raise UsageError(f"parameter {key[:40]!r} is repeated or not valid")
        query[key] = value
    return decoded, query


def _dispatch(site: Site, parts: list[str], query: dict[str, str], poll: bool) -> tuple[str, bytes]:
    """(content type, body) of the page or JSON that the path names, else NotFound."""
    json_kind = "application/json"
    if not parts or parts[0] in ("grid", "xp"):
        if len(parts) == 2 and parts[0] == "grid":
            site.check_grid(parts[1])
        elif len(parts) == 2:
            site.check_sig(parts[1])
        elif parts:
            raise NotFound("no such page")
        return "text/html; charset=utf-8", _asset(SHELL)
    if parts[0] == "static" and len(parts) == 2 and parts[1] in STATIC:
        return STATIC[parts[1]], _asset(parts[1])
    if parts[0] != "api" or len(parts) < 2:
        raise NotFound("no such page")
    rest = parts[1:]
    if rest == ["grids"]:
        return json_kind, _json_body(site.grids(reopen=not poll))
    if rest[0] == "grid" and len(rest) == 2:
        return json_kind, _json_body(site.grid(rest[1], reopen=not poll))
    if rest[0] == "grid" and len(rest) == 3 and rest[2] == "curves":
        points = points_param(query.get("points"))
        return json_kind, site.grid_curves(rest[1], query.get("metric"), points).encode()
    if rest[0] == "xp" and len(rest) == 2:
        return json_kind, _json_body(site.xp(rest[1]))
    if rest[0] == "xp" and len(rest) == 3 and rest[2] == "curves":
        points = points_param(query.get("points"))
        return json_kind, site.xp_curves(rest[1], query.get("metric"), points).encode()
    if rest[0] == "xp" and len(rest) == 3 and rest[2] == "log":
        return json_kind, _json_body(site.log(rest[1], data.log_bytes(query.get("bytes"))))
    raise NotFound("no such page")


def _asset(name: str) -> bytes:
    found = read_static(name)
    if found is None:
        raise NotFound(f"{name} is not installed with gridman")
    return found


class WebServer(ThreadingHTTPServer):
    """The HTTP server, holding the site and the access rules."""

    daemon_threads = True
    allow_reuse_address = True  # a restart right after a stop binds the same port

    def __init__(
        self, address: tuple[str, int], site: Site, token: Optional[str],
        log: Optional[Callable[[str], None]] = None,
    ) -> None:  # fmt: skip
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.site = site
        self.token = token
        self.log = log
        self.loopback = is_loopback(address[0])
        self.bound_name = f"[{address[0]}]" if ":" in address[0] else address[0]
        self.port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer: nothing to report (and never print)


class Server:
    """A running ``gridman serve``: ``url``, ``serve_forever()``, ``shutdown()``."""

    def __init__(self, web: WebServer, host: str) -> None:
        self.web = web
        self.host = host
        self.port = web.port
        shown = host
        if host in ("0.0.0.0", "::", ""):
            shown = socket.gethostname()
        elif ":" in host:
            shown = f"[{host}]"
        self.base = f"http://{shown}:{self.port}/"

    @property
    def token(self) -> Optional[str]:
        return self.web.token

    def url(self, path: str = "") -> str:
        """The URL of ``path`` (``grid/NAME``), with ``?token=`` when one is needed."""
        query = f"?token={urllib.parse.quote(self.token)}" if self.token else ""
        return self.base + path.lstrip("/") + query

    def serve_forever(self) -> None:
        self.web.serve_forever(poll_interval=0.2)

    def warm_up(self, name: Optional[str] = None) -> threading.Thread:
        """Start :meth:`Site.warm_up` in a daemon thread (the server answers meanwhile)."""
        thread = threading.Thread(target=self.web.site.warm_up, args=(name,), daemon=True,
                                  name="gridman-serve-warm-up")  # fmt: skip
        thread.start()
        return thread

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread) and close the socket."""
        self.web.shutdown()
        self.web.server_close()


def serve(
    project: Project,
    host: str = "127.0.0.1",
    port: int = 8790,
    token: Optional[str] = None,
    grids_dir: Optional[str] = None,
    main: Optional[str] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Server:
    """Bind the server (not serving yet). A non-loopback ``host`` without ``token`` gets a
    fresh one; a port in use is a UsageError."""
    import secrets

    if not is_loopback(host) and not token:
        token = secrets.token_urlsafe(24)
    site = Site(project, grids_dir, main)
    try:
        web = WebServer((host, port), site, token or None, log)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} of {host} is in use",
                "choose another with --port N, or --port 0 for a free one",
            ) from None
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            "use --host 127.0.0.1 (the default) or an address of this machine",
        ) from None
    return Server(web, host)
