"""The local pool daemon: ``python -m gridman.backends.pool <dir>/.pool``.

Runs queued XPs (queue/*.json, oldest first) with at most ``workers`` at once and GPU slots
(at most ``xps_per_gpu`` XPs per GPU). One daemon per XP root, guaranteed by an flock on
``daemon.lock``; it exits after a short idle period and is restarted on demand by the next
submission. An entry is claimed by renaming it into ``claimed/`` (atomic: a cancel that
unlinks it first wins), then rewritten there with the GPU slots it was given; each XP runs
through the shared attempt entry (attempt.py), in its own session, and its GPUs are noted in
its attempt (``extra["gpus"]``).

XPs outlive a daemon killed under them (their own session). A new daemon therefore first
adopts the claims of the old one whose XP still runs (their worker slots and GPUs, freed when
the XP ends, whose end it then records) and settles the others, before it starts anything.

The queue runs commands as the daemon's user, so the pool's folders are private (0700, see
local.py) and the daemon runs only entries that are regular files of its own user: anything
else, and any entry it cannot run (malformed JSON, missing keys, a GPU count the pool cannot
give), is set aside in ``rejected/`` with the reason logged, and noted as the FAILED end of the
XP's attempt when the entry is the user's own and names it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from ..core.fsutil import (
    UnsafePathError,
    atomic_write_json,
    ensure_private_dir,
    file_lock,
    open_nofollow,
    read_json,
)
from ..core.jobs import (
    RUN_LOCK,
    Attempt,
    JobRecord,
    State,
    now,
    read_job,
    this_host,
    update_job,
)
from ..core.link import settle_history
from ..core.liveness import (
    cancel_requested,
    clear_cancel,
    mark_vanished,
    process_is,
    worker_status,
)
from .attempt import AttemptSpec, run_guarded

IDLE_EXIT = 2.0
TICK = 0.1
#: Sub-folders of the pool: entries waiting, taken (one per XP started), set aside.
FOLDERS = ("queue", "claimed", "rejected")
_MAX_ENTRY = 16 << 20  # a queue entry holds an environment, not megabytes


class BadEntry(Exception):
    """A queue entry the daemon will not run; ``item`` is its content when it is the user's
    own JSON (to find the XP it names), else None."""

    def __init__(self, reason: str, item: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.item = item


def is_entry(name: str) -> bool:
    """Queue entries are ``<time>-<sig>.json``; ``.name.pid.n.tmp`` files are being written."""
    return name.endswith(".json") and not name.startswith(".")


def read_entry(path: Path) -> Any:
    """The JSON of a queue entry that is a regular file of this user (else BadEntry, without
    its content: someone else's entry is never looked into); FileNotFoundError when gone."""
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the daemon.
        fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK)
    except UnsafePathError:
        raise BadEntry("a symbolic link, not an entry of this user") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadEntry("not a regular file")
        if info.st_uid != os.geteuid():
            raise BadEntry(f"owned by uid {info.st_uid}, not by this daemon's user")
        data = os.read(fd, _MAX_ENTRY + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_ENTRY:
        raise BadEntry("larger than any queue entry")
    try:
        return json.loads(data.decode("utf8"))
    except ValueError as exc:
        raise BadEntry(f"not JSON: {exc}") from None


def parse_entry(name: str, item: Any, gpus: int) -> tuple[int, AttemptSpec]:
    """(GPUs asked for, the attempt) of an entry; BadEntry (carrying ``item``) when malformed
    or asking for more GPUs than the pool has (it would wait forever)."""
    if not isinstance(item, dict):
        raise BadEntry(f"a queue entry is a JSON object, not {type(item).__name__}")
    count = item.get("gpus") or 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise BadEntry(f"'gpus' must be a count of GPUs, got {item.get('gpus')!r}", item)
    if count > gpus:
        raise BadEntry(f"asks for {count} GPU(s), the pool has {gpus}", item)
    try:
        spec = AttemptSpec.from_json(item, backend="local", job_id=name)
    except ValueError as exc:
        raise BadEntry(str(exc), item) from None
    return count, spec


class Pool:
    """Dispatches queue entries to worker threads, each waiting on one XP process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.queue = folder / "queue"
        self.claimed = folder / "claimed"
        self.rejected = folder / "rejected"
        self.cond = threading.Condition()
        self.running: dict[str, threading.Thread] = {}
        self.gpu_load: dict[str, int] = {}
        self.ignored: set[str] = set()  # entries that could not even be set aside

    def config(self) -> tuple[int, list[str], int]:
        try:
            cfg = read_json(self.folder / "config.json")
            return int(cfg["workers"]), [str(g) for g in cfg["gpus"]], int(cfg["xps_per_gpu"])
        except (OSError, ValueError, KeyError, TypeError):
            return os.cpu_count() or 1, [], 1

    def queued(self) -> list[str]:
        names = sorted(os.listdir(self.queue)) if self.queue.exists() else []
        return [n for n in names if is_entry(n) and n not in self.ignored]

    def serve(self) -> None:
        """Adopt what a killed daemon left running, then run until the queue has been empty
        and nothing has run for IDLE_EXIT seconds."""
        self.adopt_claimed()
        idle_since: Optional[float] = None
        while True:
            workers, gpus, per_gpu = self.config()
            names = self.queued()
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
            item = read_entry(self.queue / name)
            count, spec = parse_entry(name, item, len(gpus))
        except FileNotFoundError:
            return  # cancelled meanwhile
        except BadEntry as exc:
            self.set_aside(self.queue / name, exc)
            return
        except OSError as exc:
            self.set_aside(self.queue / name, BadEntry(f"unreadable: {exc}"))
            return
        with self.cond:
            slots = self.assign(count, gpus, per_gpu)
            if slots is None:
                return  # not enough free GPU slots now; a later tick retries
            try:
                os.rename(self.queue / name, self.claimed / name)
            except FileNotFoundError:
                self.release(slots)
                return
            # The claim says which GPUs the XP holds: a daemon started after this one is
            # killed adopts them. Written before the XP exists.
            _note_slots(self.claimed / name, item, slots)
            # The queue file's name is the job id; XPs see only the GPUs they were given.
            spec = dataclasses.replace(spec, gpus=tuple(slots))
            thread = threading.Thread(target=self.run, args=(name, spec, slots), daemon=True)
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
        self.hold(chosen)
        return chosen

    def hold(self, slots: list[str]) -> None:
        for gpu in slots:
            self.gpu_load[gpu] = self.gpu_load.get(gpu, 0) + 1

    def release(self, slots: list[str]) -> None:
        for gpu in slots:
            self.gpu_load[gpu] -= 1

    def run(self, name: str, spec: AttemptSpec, slots: list[str]) -> None:
        try:
            outcome = run_guarded(spec, on_start=lambda _: _note_gpus(spec.folder, name, slots))
            _log(f"{spec.folder.name} {outcome.text()} gpus={slots}")
        finally:
            self.finish(name, slots)

    def finish(self, name: str, slots: list[str]) -> None:
        """The XP of claim ``name`` has ended and its end is recorded: free its slots."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.claimed / name)
        with self.cond:
            self.release(slots)
            self.running.pop(name, None)
            self.cond.notify_all()

    def set_aside(self, path: Path, bad: BadEntry) -> None:
        """Move an entry that will not run to ``rejected/`` (so that it never jams the pool
        nor keeps the daemon alive), log why, and end the attempt it names as FAILED."""
        name = path.name
        _log(f"setting aside {path.parent.name}/{name}: {bad.reason}")
        try:
            os.rename(path, self.rejected / name)
        except FileNotFoundError:
            return
        except OSError as exc:  # e.g. a sticky queue folder and someone else's file
            _log(f"cannot move {name} aside ({exc}); ignoring it")
            self.ignored.add(name)
        if isinstance(bad.item, dict):  # the user's own entry: its XP says why it never ran
            _end_claim(bad.item, name, State.FAILED, error=f"queue entry {name}: {bad.reason}")

    # -- adoption of a killed daemon's XPs --------------------------------------------------
    def adopt_claimed(self) -> None:
        """Take over the claims a killed daemon left: watch the XPs that still run (holding
        their worker slots and GPUs), settle the others and drop their claims."""
        names = sorted(os.listdir(self.claimed)) if self.claimed.exists() else []
        for name in filter(is_entry, names):
            path = self.claimed / name
            try:
                item = read_entry(path)
            except FileNotFoundError:
                continue
            except (BadEntry, OSError) as exc:
                self.set_aside(path, exc if isinstance(exc, BadEntry) else BadEntry(str(exc)))
                continue
            live = _live_attempt(item, name)
            if live is None:
                _settle_claim(item, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            folder, attempt = live
            slots = _slots_of(item, attempt)
            _log(f"adopting {folder.name} (pid {attempt.pid}, gpus={slots}) of a killed daemon")
            thread = threading.Thread(target=self.watch, args=(name, folder, attempt, slots),
                                      daemon=True)  # fmt: skip
            with self.cond:
                self.hold(slots)
                self.running[name] = thread
            thread.start()

    def watch(self, name: str, folder: Path, attempt: Attempt, slots: list[str]) -> None:
        """Wait for an adopted XP to end (it is no child of ours: poll its pid), then record
        its end as its runner would have."""
        try:
            with contextlib.ExitStack() as stack:
                # The run lock, as its runner held it: `gridman grid` sees the XP running.
                locked = _take_run_lock(stack, folder, attempt)
                while _xp_alive(attempt):
                    time.sleep(TICK)
                state = _record_adopted_end(folder, attempt.n, cleared=locked)
                _log(f"{folder.name} {state} (adopted) gpus={slots}")
        except Exception:
            _log(f"{folder.name} error watching an adopted XP:\n{traceback.format_exc()}")
        finally:
            self.finish(name, slots)


def _note_slots(path: Path, item: dict[str, Any], slots: list[str]) -> None:
    try:
        atomic_write_json(path, {**item, "slots": slots}, fsync=False, private=True)
    except OSError as exc:  # the XP still runs; only a later daemon's adoption would miss it
        _log(f"cannot note the GPUs of {path.name}: {exc}")


def _note_gpus(folder: Path, name: str, slots: list[str]) -> None:
    """Record the XP's GPUs in its attempt (the runner's ``on_start``: it never raises)."""

    def change(record: JobRecord) -> JobRecord:
        latest = record.latest
        if latest is None or latest.job_id != name or latest.state.finished:
            return record
        return record.with_latest(extra={**latest.extra, "gpus": list(slots)})

    try:
        update_job(folder, change, durable=False)
    except Exception as exc:
        _log(f"cannot record the GPUs of {folder.name}: {exc}")


def _claimed_attempt(item: Any, name: str) -> Optional[tuple[Path, Attempt]]:
    """The XP folder an entry names and its latest attempt, when that attempt is this
    entry's and has not ended."""
    folder = item.get("folder") if isinstance(item, dict) else None
    if not isinstance(folder, str) or not os.path.isabs(folder) or not os.path.isdir(folder):
        return None
    record = read_job(Path(folder))
    latest = record.latest if record else None
    if latest is None or latest.job_id != name or latest.state.finished:
        return None
    return Path(folder), latest


def _live_attempt(item: Any, name: str) -> Optional[tuple[Path, Attempt]]:
    """The attempt of a claim whose XP process runs on this machine (no runner left)."""
    found = _claimed_attempt(item, name)
    if found is None:
        return None
    attempt = found[1]
    if attempt.state is not State.RUNNING or attempt.host != this_host():
        return None
    return found if _xp_alive(attempt) else None


def _xp_alive(attempt: Attempt) -> bool:
    # The attempt's process, recognised by its start time and boot id (a recycled pid is not
    # it); records written before those were kept also need the pid to lead its own session,
    # as the pool's XPs do.
    if not process_is(attempt):
        return False
    if attempt.pid_start is not None:
        return True
    try:
        return os.getsid(attempt.pid or 0) == attempt.pid
    except OSError:
        return False


def _slots_of(item: dict[str, Any], attempt: Attempt) -> list[str]:
    slots = item.get("slots")
    if slots is None:
        slots = attempt.extra.get("gpus")
    return [str(g) for g in slots] if isinstance(slots, list) else []


def _settle_claim(item: Any, name: str) -> None:
    """A claim whose XP no longer runs: its end is recorded (from what the XP said, else
    VANISHED), so that the claim can go."""
    found = _claimed_attempt(item, name)
    if found is None:
        return
    folder, attempt = found
    if attempt.state is State.RUNNING:
        mark_vanished(folder)  # never touches an attempt a runner still holds
    else:
        _end_claim(item, name, State.VANISHED)  # claimed, never started
    _log(f"{folder.name} {(read_job(folder) or JobRecord(folder.name)).state} (killed daemon)")


def _end_claim(item: dict[str, Any], name: str, state: State, **extra: Any) -> None:
    """End the attempt that entry ``name`` queued (only that one, only if not ended)."""
    found = _claimed_attempt(item, name)
    if found is None:
        return

    def change(record: JobRecord) -> JobRecord:
        latest = record.latest
        if latest is None or latest.job_id != name or latest.state.finished:
            return record
        return record.with_latest(state=state, ended=now(), extra={**latest.extra, **extra})

    update_job(found[0], change)


def _take_run_lock(stack: contextlib.ExitStack, folder: Path, attempt: Attempt) -> bool:
    """The XP's run lock, tried for a while: a command testing it holds it an instant."""
    deadline = time.monotonic() + 2.0
    while _xp_alive(attempt):
        if stack.enter_context(file_lock(folder / RUN_LOCK, blocking=False)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(TICK)
    return False


def _record_adopted_end(folder: Path, n: int, cleared: bool) -> State:
    """Record how adopted attempt ``n`` ended: CANCELLED when asked to stop, else what the XP
    said in its status file, else VANISHED."""
    code = worker_status(folder, n).get("exit_code")
    if cancel_requested(folder):
        state = State.CANCELLED
    elif isinstance(code, int):
        state = State.COMPLETED if code == 0 else State.FAILED
    else:
        state, code = State.VANISHED, None
    settle_history(folder)

    def change(record: JobRecord) -> JobRecord:
        attempt = next((a for a in record.attempts if a.n == n), None)
        if attempt is None or attempt.state.finished:
            return record
        return record.with_attempt(n, state=state, exit_code=code, ended=now())

    update_job(folder, change)
    if cleared:
        clear_cancel(folder)
    return state


def _log(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


def main(folder: Path) -> int:
    """Serve while holding the daemon lock; on idle, release it and re-check the queue.

    A submitter writes its entry, then checks the lock: if it saw the lock held, this daemon
    re-checks the queue after releasing it, so no entry is ever left without a daemon.
    """
    try:
        for path in (folder, *(folder / sub for sub in FOLDERS)):
            ensure_private_dir(path)
    except UnsafePathError as exc:
        _log(f"pool daemon {os.getpid()} refuses to serve: {exc}")
        return 2
    while True:
        pool = Pool(folder)
        with file_lock(folder / "daemon.lock", blocking=False) as got:
            if not got:
                return 0
            _log(f"pool daemon {os.getpid()} serving {folder}")
            pool.serve()
        if not pool.queued():
            _log(f"pool daemon {os.getpid()} idle, exiting")
            return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
