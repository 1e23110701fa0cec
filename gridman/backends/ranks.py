"""The ranks of a distributed attempt: their environment, logs, ends, and how they are watched.

An XP that runs as several processes (ranks) is still one attempt with one record: rank 0's
runner holds the run lock and records it; every other rank only runs the XP. Rank 0 writes
``log/<n>.log`` (what ``gridman info --log`` shows), rank ``r`` writes ``log/<n>.rank<r>.log``.

Ranks started by the runner itself (the local pool, ``gridman run -d``) are its children. Ranks
started by someone else (the tasks of a Slurm step) tell rank 0 how they ended through
``log/<n>.rank<r>.end.json``, a file on the XP's (shared) folder. Rank 0 watches both kinds as
one :class:`RankGroup`: the first rank that fails fails the XP, with its rank and exit code,
and the others are stopped.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import atomic_write_json
from ..core.torchenv import DEFAULT_ADDR, TORCH_KEYS

_PERIOD = 0.1


def rank_log(folder: Path, n: int, rank: int) -> Path:
    """Where rank ``rank`` of attempt ``n`` writes its output (rank 0: the attempt's log)."""
    return folder / "log" / (f"{n}.log" if rank == 0 else f"{n}.rank{rank}.log")


def rank_end_file(folder: Path, n: int, rank: int) -> Path:
    """Where a rank that rank 0's runner did not start records how it ended."""
    return folder / "log" / f"{n}.rank{rank}.end.json"


def write_rank_end(folder: Path, n: int, rank: int, code: Optional[int]) -> None:
    """Record that rank ``rank`` of attempt ``n`` ended with ``code`` (None: unknown)."""
    data = {"version": 1, "rank": rank, "exit_code": code, "ended": time.time()}
    atomic_write_json(rank_end_file(folder, n, rank), data, fsync=False)


def read_rank_end(path: Path) -> Optional[int]:
    """The exit status a rank recorded (an unknown one reads as 1); None while it runs."""
    try:
        data = json.loads(path.read_text(encoding="utf8"))
    except (OSError, ValueError):
        return None  # not written yet (written atomically: never half there)
    code = data.get("exit_code") if isinstance(data, dict) else None
    return code if isinstance(code, int) else 1


def free_port() -> int:
    """A TCP port free on this machine now, for the master of ranks that all run here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((DEFAULT_ADDR, 0))
        return int(sock.getsockname()[1])


def local_rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """torch's variables for rank ``rank`` of ``world`` ranks that all run on this machine."""
    values = (rank, world, rank, world, DEFAULT_ADDR, port)
    return {key: str(value) for key, value in zip(TORCH_KEYS, values)}


def rank_note(folder: Path, n: int, world: int) -> dict[str, Any]:
    """What the attempt's record says about its ranks (``gridman info`` shows ``extra``)."""
    logs = [rank_log(folder, n, r).name for r in range(world)]
    return {"ranks": world, "rank_logs": logs}


@dataclass
class RankGroup:
    """The ranks of one attempt as rank 0's runner sees them: its children (``procs``) and
    the ranks that record their end in a file (``remote``)."""

    procs: dict[int, subprocess.Popen[bytes]]
    remote: dict[int, Path] = field(default_factory=dict)
    codes: dict[int, int] = field(default_factory=dict)
    failed: Optional[tuple[int, int]] = None

    def check(self) -> Optional[tuple[int, int]]:
        """Look at every rank once; the first found to have failed, as (rank, exit code).

        The first failure seen is the cause: the others often fail of it (their peer is
        gone). Among those seen at once, a rank killed by a signal comes first, then the
        lowest rank."""
        new: dict[int, int] = {}
        for rank, proc in self.procs.items():
            if rank not in self.codes and proc.poll() is not None:
                new[rank] = int(proc.returncode)
        for rank, path in self.remote.items():
            code = read_rank_end(path) if rank not in self.codes else None
            if code is not None:
                new[rank] = code
        self.codes.update(new)
        bad = sorted(((c >= 0, r), c) for r, c in new.items() if c != 0)
        if self.failed is None and bad:
            self.failed = (bad[0][0][1], bad[0][1])
        return self.failed

    def done(self) -> bool:
        return len(self.codes) == len(self.procs) + len(self.remote)

    def watch(self) -> Optional[tuple[int, int]]:
        """Wait until every rank ended (None) or one failed ((rank, exit code))."""
        while True:
            failed = self.check()
            if failed is not None or self.done():
                return failed
            time.sleep(_PERIOD)

    def stop(self, first: Optional[int], grace: float) -> None:
        """Stop the children still running: ``first`` (None: they got a signal already),
        then SIGTERM, then SIGKILL, each given ``grace`` seconds."""
        steps: list[Optional[int]] = [first]
        if first != signal.SIGTERM:
            steps.append(signal.SIGTERM)
        for sig in steps:
            self._signal(sig)
            deadline = time.monotonic() + grace
            while self._living() and time.monotonic() < deadline:
                time.sleep(_PERIOD)
        self._signal(signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait()
        self.check()

    def _living(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs.values() if p.poll() is None]

    def _signal(self, sig: Optional[int]) -> None:
        if sig is None:
            return
        for proc in self._living():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)


def without(env: Mapping[str, str], *keys: str) -> dict[str, str]:
    """``env`` less ``keys``."""
    return {k: v for k, v in env.items() if k not in keys}
