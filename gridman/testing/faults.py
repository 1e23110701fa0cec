"""Real faults for tests: a small tmpfs that fills up, mains that misbehave, a real ``gridman``.

Nothing is simulated: :func:`small_tmpfs` mounts a real tmpfs (root only), :func:`fill_disk`
fills it with a real file until the kernel answers ENOSPC, :func:`start_gridman` starts the real
command line as its own process group so that a test can send it the signals a terminal or a
scheduler would. The mains (:data:`FILL_TRAIN_SOURCE`, :data:`DIVERGE_TRAIN_SOURCE`) are written
by :func:`gridman.testing.make_project`'s ``main_source``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

#: A main whose ``--fill_at N`` fills the disk holding the XP folders just before pushing epoch
#: N (the disk is full for that one push only: the filler is removed right after). Each epoch
#: pushes ``{"epoch": i, "pad": 5000 bytes}``, so that every journal line crosses a page and a
#: full disk cuts it short. ``--sleep`` waits after the last epoch. ``epochs``, ``fill_at`` and
#: ``sleep`` are excluded from the signature: a rerun with other values is the same XP, and
#: resumes.
FILL_TRAIN_SOURCE = '''\
"""Training script written by gridman.testing.faults (a disk that fills up mid-run)."""

import argparse
import time

import gridman
from gridman.testing.faults import fill_disk

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--fill_at", type=int, default=-1)
parser.add_argument("--sleep", type=float, default=0.0)


@gridman.argparse_main(parser=parser, dir="outputs", exclude=["epochs", "fill_at", "sleep"])
def main():
    xp = gridman.get_xp()
    cfg = xp.cfg
    for epoch in range(len(xp.link.history), cfg.epochs):
        metrics = {"epoch": epoch, "pad": "x" * 5000}
        if epoch == cfg.fill_at:
            time.sleep(0.3)  # the runner logs the output so far before the disk fills
            filler = fill_disk(xp.folder.parent)
            try:
                xp.link.push_metrics(metrics)
            finally:
                filler.unlink()  # the disk was full for this one push
        else:
            xp.link.push_metrics(metrics)
        print(f"epoch {epoch} pushed", flush=True)
    if cfg.sleep:
        print("sleeping", flush=True)
        time.sleep(cfg.sleep)


if __name__ == "__main__":
    main()
'''

#: A main whose metrics diverge: NaN and infinities, at the top and nested in lists.
DIVERGE_TRAIN_SOURCE = '''\
"""Training script written by gridman.testing.faults (a diverged run)."""

import argparse

import gridman

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)


@gridman.argparse_main(parser=parser, dir="outputs")
def main():
    xp = gridman.get_xp()
    xp.link.push_metrics({"loss": 1.0, "epoch": 0})
    xp.link.push_metrics({"loss": float("nan"), "best": float("inf"), "low": -float("inf"),
                          "curve": [1.0, float("nan")], "epoch": 1})


if __name__ == "__main__":
    main()
'''


def is_root() -> bool:
    """Whether this process may mount a tmpfs."""
    return os.geteuid() == 0


def needs_root() -> Any:
    """A pytest skip mark for tests that mount a real tmpfs (CI runs them as root)."""
    import pytest

    return pytest.mark.skipif(not is_root(), reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path`` (created) for the block; always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        _unmount(path)


def _unmount(path: Path) -> None:
    # A process of the test may still hold a file there for an instant (a dying XP).
    for _ in range(50):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def fill_disk(folder: Path, name: str = "filler") -> Path:
    """Write ``folder/name`` until the disk holding it is full (ENOSPC); returns its path."""
    path = Path(folder) / name
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    continue  # a short write: the next one answers ENOSPC
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return path


def old_style_append(journal: Path, line: bytes) -> int:
    """Append ``line`` to a journal as gridman <= 0.2 did: one ``write``, a short count
    ignored. Returns the count (a test checks that the fault really happened)."""
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        return os.write(fd, line)
    finally:
        os.close(fd)


def start_gridman(
    args: Sequence[str], cwd: Path, log: Path, env: Optional[Mapping[str, str]] = None
) -> subprocess.Popen[bytes]:
    """Start ``gridman ARGS...`` as a real process, leading its own process group (a test
    signals the group as a terminal's Ctrl-C or a scheduler does); output goes to ``log``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    full.update(env or {})
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gridman", *args],
            cwd=cwd, env=full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@contextlib.contextmanager
def reachable_by_others(*paths: Path) -> Iterator[None]:
    """Let another uid reach ``paths`` (this interpreter's venv, gridman's sources) for the block.

    A clone made in a ``mktemp -d`` folder (0700, as CI makes it) hides the venv from a second
    uid, whose ``python`` then silently falls back to the system's, without gridman. Each folder
    above ``paths`` that others may not traverse gets ``o+x`` (search only: nothing becomes
    listable or readable) and its mode back at the end.
    """
    changed: dict[Path, int] = {}
    try:
        for path in paths:
            for folder in [Path(path).resolve(), *Path(path).resolve().parents]:
                mode = folder.stat().st_mode
                if folder not in changed and not mode & 0o001:
                    changed[folder] = mode & 0o7777
                    os.chmod(folder, (mode & 0o7777) | 0o001)
        yield
    finally:
        for folder, mode in changed.items():
            with contextlib.suppress(OSError):
                os.chmod(folder, mode)
