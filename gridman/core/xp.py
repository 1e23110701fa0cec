"""XP: one experiment (cfg, argv, delta, sig, folder, link) and its folder on disk.

Layout of ``<dir>/xps/<sig>/``: ``argv.json`` (argv, delta, the main that defines the XP,
gridman version), ``history.json`` (+ its journal, see link.py), ``job.json`` (see jobs.py) and
``log/``. ``get_xp()`` returns the XP whose code is running.

The signature hashes the delta only (as Dora's does), so two mains of one project can give the
same signature to different XPs: ``argv.json`` records the main, and a folder that another main
wrote is refused (:class:`MainMismatchError`), never shared.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import __version__
from ..errors import SignatureCollisionError, UnknownXPError, UsageError
from .fsutil import FORMAT_VERSION, atomic_write_bytes, read_bytes, read_json
from .link import Link
from .perf import paused_gc
from .signature import Delta, canonical_json, delta_from_json, is_valid_sig

ARGV_FILE = "argv.json"
XPS = "xps"
LOG_DIR = "log"


@dataclass
class XP:
    """One experiment. ``folder`` is ``<dir>/xps/<sig>``; ``link`` records its metrics."""

    cfg: Any
    argv: list[str]
    delta: Delta
    sig: str
    dir: Path
    #: every parsed value by key (defaults included), for names and tables
    params: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _link: Optional[Link] = field(default=None, repr=False, compare=False)

    _folder: Optional[Path] = field(default=None, repr=False, compare=False)
    _canonical: Optional[str] = field(default=None, repr=False, compare=False)
    #: the main that defines the XP (``train.py:main``, see DecoratedMain.main_id); None for
    #: XPs made without a main (the Evaluator's), which then record none
    main: Optional[str] = field(default=None, compare=False)

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = xp_folder(self.dir, self.sig)
        return self._folder

    @property
    def link(self) -> Link:
        if self._link is None:
            self._link = Link(self.folder)
        return self._link

    @property
    def canonical(self) -> str:
        """The canonical JSON of the delta (what the signature hashes), computed once."""
        if self._canonical is None:
            self._canonical = canonical_json(self.delta)
        return self._canonical

    @property
    def history(self) -> list[Any]:
        return self.link.history

    @contextlib.contextmanager
    def enter(self) -> Iterator[XP]:
        """Make this XP the one ``get_xp()`` returns inside the block."""
        _stack.append(self)
        try:
            yield self
        finally:
            _stack.pop()
            if self._link is not None:
                # The XP's code is done with it: history.json alone holds every entry now
                # (when it cannot be written, the journal still holds them: readers fold it).
                with contextlib.suppress(OSError):
                    self._link.settle()
                self._link.close()


_stack: list[XP] = []


def get_xp() -> XP:
    """The XP whose code is running (inside a decorated main)."""
    if not _stack:
        raise RuntimeError(
            "gridman.get_xp() called outside an XP: call it from a function decorated with "
            "@gridman.argparse_main or @gridman.yaml_main"
        )
    return _stack[-1]


def is_xp() -> bool:
    """True inside a decorated main."""
    return bool(_stack)


class MainMismatchError(SignatureCollisionError):
    """An XP folder that another main of the project wrote (same signature, other main)."""


def check_sig(text: str) -> str:
    """Return ``text`` if it is a signature; anything else (``../..`` included) is rejected."""
    if not isinstance(text, str) or not is_valid_sig(text):
        raise UsageError(
            f"{text!r} is not a signature",
            "a signature is exactly 8 hex characters, e.g. 3f9a2c1b (see `gridman info`)",
        )
    return text


def xp_folder(dir: Path, sig: str) -> Path:
    """``<dir>/xps/<sig>``, only for a valid signature (never escapes ``dir``)."""
    return _xps_of(dir) / check_sig(sig)


@functools.lru_cache(maxsize=64)
def _xps_of(dir: Path) -> Path:
    return Path(dir) / XPS  # a grid asks for it once per XP: one Path join fewer each time


def read_argv_file(folder: Path) -> dict[str, Any]:
    """The content of ``argv.json`` (raises OSError/ValueError when unreadable)."""
    data = read_json(folder / ARGV_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("argv"), list):
        raise ValueError(f"{folder / ARGV_FILE}: not a gridman argv file")
    return data


def init_xp(xp: XP) -> bool:
    """Create the XP folder and its ``argv.json``; detect signature collisions. True when
    this call created the folder (it then holds ``argv.json`` only).

    An existing ``argv.json`` with the same delta is kept as is (re-initialising 10,000 XPs
    writes nothing); one with a different delta is a collision and raises. ``log/`` is made
    by the first attempt.
    """
    return _write_argv(xp) if _needs_write(xp) else False


def init_many(xps: list[XP]) -> list[str]:
    """``init_xp`` for many XPs (serially: mkdir in one parent folder is serialised by the
    kernel anyway, so threads only add contention). Returns the signatures of the folders
    it created."""
    with paused_gc():
        return [xp.sig for xp in xps if init_xp(xp)]


def _needs_write(xp: XP) -> bool:
    """False when argv.json already holds this delta; raises on a collision."""
    try:
        raw = read_bytes(os.path.join(os.fspath(xp.folder), ARGV_FILE))
    except FileNotFoundError:
        return True
    if raw == _argv_bytes(xp):
        return False  # written by this very gridman for this very XP: nothing to parse
    _refuse_other_main(xp, _stored_main(raw))
    old = _stored_canonical(raw)
    if old == xp.canonical:
        return False
    if old is not None:
        raise SignatureCollisionError(
            f"signature collision: {xp.sig} already holds a different XP "
            f"(stored delta {old}, new delta {xp.canonical})",
            "rename or exclude a parameter so these XPs differ, or move the old folder away",
        )
    return True  # unreadable: argv.json can be regenerated


def _argv_bytes(xp: XP) -> bytes:
    """argv.json's one line: ``{"version", "sig", "argv", "delta", "gridman"}``, as
    ``json.dumps`` writes it, with the delta as its canonical text (computed already; the
    signature is a validated hex string). Built by hand: it is compared for every XP of
    every ``--init``."""
    argv = json.dumps(list(xp.argv))
    main = "" if xp.main is None else f'"main": {json.dumps(xp.main)}, '
    return (f'{{"version": {FORMAT_VERSION}, "sig": "{xp.sig}", {main}"argv": {argv}, '
            f'"delta": {xp.canonical}, "gridman": {_VERSION_JSON}}}\n').encode()  # fmt: skip


_VERSION_JSON = json.dumps(__version__)


def _write_argv(xp: XP) -> bool:
    """Write argv.json, creating the folder if needed; True when the folder was created."""
    folder = os.fspath(xp.folder)
    created = True
    try:
        os.mkdir(folder)  # the usual case: <dir>/xps exists, this XP's folder does not
    except FileExistsError:
        created = False
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
    # argv.json can be regenerated from the grid: atomic but not fsync'd (10,000 must stay fast).
    path = os.path.join(folder, ARGV_FILE)
    try:
        atomic_write_bytes(path, _argv_bytes(xp), fsync=False)
    except OSError as exc:
        if exc.filename is not None:
            raise
        # os.write names no file: a full disk is then reported with the path it hit
        raise OSError(exc.errno, exc.strerror, path) from exc
    return created


def _stored_main(raw: bytes) -> Optional[str]:
    """The main recorded in a stored argv.json (None: unreadable, or written before mains
    were recorded)."""
    try:
        main = json.loads(raw).get("main")
    except (ValueError, AttributeError):
        return None
    return main if isinstance(main, str) else None


def _refuse_other_main(xp: XP, stored: Optional[str]) -> None:
    if xp.main is None or stored is None or stored == xp.main:
        return
    raise MainMismatchError(
        f"XP folder {xp.folder} belongs to the main {stored}, not to {xp.main} (the same "
        f"signature {xp.sig}: a signature hashes the parameters, not the main)",
        "declare the project's main in gridman.yaml (`main: ...`): every other main then gets "
        "an XP root of its own (<dir>/mains/NAME), or give this main another dir (its "
        "decorator's dir=, or GRIDMAN_DIR)",
    )


def check_owner(xp: XP) -> None:
    """Raise MainMismatchError when the XP's folder exists and another main wrote it."""
    try:
        raw = read_bytes(os.path.join(os.fspath(xp.folder), ARGV_FILE))
    except OSError:
        return
    _refuse_other_main(xp, _stored_main(raw))


def record_code(folder: Path, code: dict[str, Any]) -> None:
    """Add the code snapshot an XP was submitted with (git_save: ``{"commit", "path"}``) to
    its ``argv.json`` as ``code`` (a later submission replaces it; init_xp keeps it: it
    compares the delta only)."""
    path = Path(folder) / ARGV_FILE
    data = read_argv_file(folder)
    if data.get("code") == code:
        return
    data["code"] = code
    atomic_write_bytes(os.fspath(path), (json.dumps(data) + "\n").encode(), fsync=False)


def _stored_canonical(raw: bytes) -> Optional[str]:
    """The canonical delta of a stored argv.json; None when unreadable (it is rewritten)."""
    try:
        data = json.loads(raw)
        return canonical_json(delta_from_json(data.get("delta")))
    except (ValueError, AttributeError):
        return None


def known_sigs(dir: Path) -> list[str]:
    """Signatures of the XP folders under ``<dir>/xps``."""
    try:
        names = os.listdir(Path(dir) / XPS)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if is_valid_sig(n))


def require_xp_folder(dir: Path, sig: str) -> Path:
    """The folder of ``sig``; an unknown sig raises, naming the XPs most recently used."""
    folder = xp_folder(dir, sig)
    if folder.is_dir():
        return folder
    raise UnknownXPError(f"no XP with signature {sig} under {Path(dir) / XPS}", _recent_hint(dir))


_PREFIX = re.compile(r"[0-9a-f]{1,7}")


def check_sig_or_prefix(text: str) -> None:
    """Refuse what is neither a signature nor a prefix of one, before any path is built
    from it (``..``, ``../etc``, upper case)."""
    if not (is_valid_sig(text) or _PREFIX.fullmatch(text)):
        raise UsageError(
            f"{text!r} is not a signature",
            "a signature is 8 hex characters (e.g. 3f9a2c1b), or a unique prefix of one",
        )


def find_xp_folder(dir: Path, text: str) -> Path:
    """The folder of the XP that ``text`` names: a signature or a unique prefix of one (as
    grid patterns take). An ambiguous prefix raises with its candidates."""
    if is_valid_sig(text):
        return require_xp_folder(dir, text)
    check_sig_or_prefix(text)
    matches = [s for s in known_sigs(dir) if s.startswith(text)]
    if len(matches) == 1:
        return xp_folder(dir, matches[0])
    if not matches:
        raise UnknownXPError(
            f"no XP signature starts with {text} under {Path(dir) / XPS}", _recent_hint(dir)
        )
    shown = "; ".join(_describe_sig(dir, s) for s in matches[:10])
    more = f" (and {len(matches) - 10} more)" if len(matches) > 10 else ""
    raise UsageError(
        f"signature prefix {text} is ambiguous: {len(matches)} XPs match",
        f"give more characters: {shown}{more}",
    )


def recent_sigs(dir: Path, count: int = 5) -> list[str]:
    """The signatures of the ``count`` XP folders changed last (newest first)."""
    xps = _xps_of(Path(dir))
    dated = []
    for sig in known_sigs(dir):
        with contextlib.suppress(OSError):
            dated.append((os.stat(xps / sig).st_mtime, sig))
    return [sig for _, sig in sorted(dated, reverse=True)[:count]]


def _describe_sig(dir: Path, sig: str) -> str:
    """``3f9a2c1b (--lr 0.1)``: a signature with its stored argv, for hints."""
    try:
        argv = " ".join(str(a) for a in read_argv_file(xp_folder(dir, sig))["argv"])
    except (OSError, ValueError):
        return sig
    return f"{sig} ({argv or 'defaults'})"


def _recent_hint(dir: Path) -> str:
    recent = recent_sigs(dir)
    if not recent:
        return "no XP has that signature yet; `gridman grid NAME --init` creates a grid's XPs"
    listed = "; ".join(_describe_sig(dir, s) for s in recent)
    return (f"recent XPs: {listed}. `gridman grid NAME` lists a grid's XPs with their "
            "signatures")  # fmt: skip


def clearable_target(folder: Path, dir: Path) -> Path:
    """The folder that ``--clear`` empties for the XP folder ``folder`` of the XP root ``dir``.

    An XP folder may be a symbolic link (to faster or bigger storage): what it points to is
    cleared only when it lies inside the XP root; anywhere else it is refused (UsageError).
    """
    if not folder.is_symlink():
        return folder
    target = folder.resolve()
    root = Path(dir).resolve()
    if not target.is_relative_to(root) or target in (root, root / XPS):
        raise UsageError(
            f"XP folder {folder} is a symbolic link to {target}, not a folder inside the XP "
            f"root {root}; --clear deletes nothing there",
            f"delete {target} yourself (or replace the link with a folder), then run again",
        )
    return target


def clear_xp_folder(folder: Path, dir: Path) -> bool:
    """Delete the XP folder's content (history, logs, checkpoints); False when there was none.

    A real folder is removed; a symbolic link (see :func:`clearable_target`) is kept, with the
    folder it points to emptied, so the XP keeps its storage. Errors raise (a folder left
    half-deleted would show its old history as the new one's).
    """
    target = clearable_target(folder, dir)
    if not target.is_dir():
        return False
    for attempt in range(3):
        try:
            _empty(target, keep=target is not folder)
            return True
        except OSError:
            if attempt == 2:
                raise
            time.sleep(0.2)  # a just-cancelled XP may still be writing its last files
    return True


def _empty(folder: Path, keep: bool) -> None:
    """Remove ``folder`` (``keep``: only what it holds)."""
    if not keep:
        shutil.rmtree(folder)
        return
    for child in list(folder.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
