"""The local pool daemon: ``python -m gridman.backends.pool <dir>/.pool``.

Runs queued XPs (queue/*.json, oldest first) with at most ``workers`` at once and GPU slots
(at most ``xps_per_gpu`` XPs per GPU). One daemon per XP root, guaranteed by an flock on
``daemon.lock``; it exits after a short idle period and is restarted on demand by the next
submission. An entry is claimed by renaming it into ``claimed/`` (atomic: a cancel that
unlinks it first wins), and each XP runs through the shared attempt entry (attempt.py), in its
own session.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import file_lock, read_json
from .attempt import AttemptSpec, run_guarded

IDLE_EXIT = 2.0
TICK = 0.1


class Pool:
    """Dispatches queue entries to worker threads, each waiting on one XP process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.queue = folder / "queue"
        self.claimed = folder / "claimed"
        self.cond = threading.Condition()
        self.running: dict[str, threading.Thread] = {}
        self.gpu_load: dict[str, int] = {}

    def config(self) -> tuple[int, list[str], int]:
        try:
            cfg = read_json(self.folder / "config.json")
            return int(cfg["workers"]), [str(g) for g in cfg["gpus"]], int(cfg["xps_per_gpu"])
        except (OSError, ValueError, KeyError, TypeError):
            return os.cpu_count() or 1, [], 1

    def serve(self) -> None:
        """Run until the queue has been empty and nothing has run for IDLE_EXIT seconds."""
        idle_since: Optional[float] = None
        while True:
            workers, gpus, per_gpu = self.config()
            names = sorted(os.listdir(self.queue)) if self.queue.exists() else []
            for name in names:
                with self.cond:
                    if len(self.running) >= workers:
                        break
                self.try_start(name, gpus, per_gpu)
            with self.cond:
                busy = bool(self.running)
                if names or busy:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_EXIT:
                    return
                self.cond.wait(TICK)

    def try_start(self, name: str, gpus: list[str], per_gpu: int) -> None:
        try:
            item = read_json(self.queue / name)
        except FileNotFoundError:
            return  # cancelled meanwhile
        except (OSError, ValueError):
            _log(f"dropping unreadable queue entry {name}")
            with contextlib.suppress(OSError):
                os.rename(self.queue / name, self.claimed / (name + ".bad"))
            return
        with self.cond:
            slots = self.assign(int(item.get("gpus") or 0), gpus, per_gpu)
            if slots is None:
                return  # not enough free GPU slots now; a later tick retries
            try:
                os.rename(self.queue / name, self.claimed / name)
            except FileNotFoundError:
                self.release(slots)
                return
            thread = threading.Thread(target=self.run, args=(name, item, slots), daemon=True)
            self.running[name] = thread
        thread.start()

    def assign(self, count: int, gpus: list[str], per_gpu: int) -> Optional[list[str]]:
        """``count`` GPUs with a free slot, least loaded first (None if not available)."""
        if count == 0:
            return []
        free = [g for g in gpus if self.gpu_load.get(g, 0) < per_gpu]
        if len(free) < count:
            return None
        chosen = sorted(free, key=lambda g: (self.gpu_load.get(g, 0), gpus.index(g)))[:count]
        chosen.sort(key=gpus.index)  # CUDA_VISIBLE_DEVICES lists them in the machine's order
        for gpu in chosen:
            self.gpu_load[gpu] = self.gpu_load.get(gpu, 0) + 1
        return chosen

    def release(self, slots: list[str]) -> None:
        for gpu in slots:
            self.gpu_load[gpu] -= 1

    def run(self, name: str, item: dict[str, Any], slots: list[str]) -> None:
        try:
            # The queue file's name is the job id; XPs see only the GPUs they were given.
            spec = AttemptSpec.from_json(item, backend="local", job_id=name, gpus=tuple(slots))
            outcome = run_guarded(spec)
            _log(f"{item.get('sig')} {outcome.text()} gpus={slots}")
        except Exception:  # an entry the attempt cannot even be read from
            _log(f"{item.get('sig')} runner error:\n{traceback.format_exc()}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.claimed / name)
            with self.cond:
                self.release(slots)
                self.running.pop(name, None)
                self.cond.notify_all()


def _log(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


def main(folder: Path) -> int:
    """Serve while holding the daemon lock; on idle, release it and re-check the queue.

    A submitter writes its entry, then checks the lock: if it saw the lock held, this daemon
    re-checks the queue after releasing it, so no entry is ever left without a daemon.
    """
    (folder / "queue").mkdir(parents=True, exist_ok=True)
    (folder / "claimed").mkdir(parents=True, exist_ok=True)
    while True:
        with file_lock(folder / "daemon.lock", blocking=False) as got:
            if not got:
                return 0
            _log(f"pool daemon {os.getpid()} serving {folder}")
            Pool(folder).serve()
        if not os.listdir(folder / "queue"):
            _log(f"pool daemon {os.getpid()} idle, exiting")
            return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
