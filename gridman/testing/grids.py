"""Helpers for testing grids, the Shepherd and the local pool: project builders, waits, records.

Like :mod:`gridman.testing`, nothing here is imported by gridman itself. On top of its
projects, these helpers write grid files and a training script that reports where and how it
ran, build job records and sheep without running anything, and wait for the detached local pool:

- :func:`make_grid_project` writes a project whose ``train.py`` is :data:`GRID_TRAIN_SOURCE`
  (``--hold FILE`` keeps an XP running while FILE exists, ``--probe`` records
  ``CUDA_VISIBLE_DEVICES``, :data:`PROBE_VAR` and the working directory in its metrics) and
  grid files written by :func:`write_grid`;
- :func:`wait_states` and :func:`wait_started` poll ``job.json`` files until XPs of the pool
  reach a state (the pool runs them in a detached daemon, so nothing else says when);
- :func:`max_overlap` checks concurrency limits from the attempts' start and end times;
- :func:`stop_pool` kills whatever a test left running (XP process groups, pool daemons);
- :func:`job_record` and :func:`fake_sheep` build inputs for the pure parts (shep, tracker);
- :func:`make_xp_folder` leaves an XP folder as a run would, :func:`write_eval_script` a stage
  command (:data:`EVAL_SOURCE`), and :func:`png_size` reads a PNG's IHDR (results, stages, plots).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import textwrap
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from . import make_project, run_cli

if TYPE_CHECKING:
    from ..core.explore import Sheep
    from ..core.jobs import JobRecord, State

#: Environment variable that :data:`GRID_TRAIN_SOURCE` records with ``--probe``.
PROBE_VAR = "GRIDMAN_TEST_PROBE"

#: Source of the ``train.py`` that :func:`make_grid_project` writes. Options: ``--lr`` (float,
#: 0.1), ``--epochs`` (int, 2), ``--seed`` (int, 0), ``--batch-size`` (int, 16, declared with a
#: dash), ``--num_workers`` (int, 2), ``--fail`` (raise after the epochs), ``--tags`` (list),
#: ``--probe`` (add ``{"probe": {"cuda", "env", "cwd", "pid", "python"}}`` to each entry),
#: ``--sleep`` (seconds to wait after the epochs), ``--hold FILE`` (wait while FILE exists,
#: 60 s at most) and ``--stubborn`` (ignore SIGTERM). ``num_*``, ``sleep`` and ``hold`` are
#: excluded from signatures. ``--crash`` kills the XP's own process with SIGKILL.
#: ``--sleep-once S`` sleeps S seconds on the first attempt only (a requeued XP resumes).
GRID_TRAIN_SOURCE = f'''\
"""Training script written by gridman.testing.grids.make_grid_project."""

import argparse
import os
import signal
import sys
import time

import gridman

parser = argparse.ArgumentParser(description="gridman grid test main")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--num_workers", type=int, default=2)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--tags", nargs="*", default=[])
parser.add_argument("--probe", action="store_true")
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--hold", default="")
parser.add_argument("--stubborn", action="store_true")
parser.add_argument("--crash", action="store_true")
parser.add_argument("--sleep-once", type=float, default=0.0)


@gridman.argparse_main(parser=parser, dir="outputs",
                       exclude=["num_*", "sleep", "hold", "sleep_once"])
def main():
    xp = gridman.get_xp()
    cfg = xp.cfg
    if cfg.stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    probe = {{
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "env": os.environ.get("{PROBE_VAR}"),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "python": sys.executable,
    }}
    print(f"xp {{xp.sig}} starts", flush=True)
    for epoch in range(len(xp.link.history), cfg.epochs):
        loss = 1.0 / (1.0 + epoch + cfg.lr + cfg.seed)
        metrics = {{"train": {{"loss": loss}}, "epoch": epoch}}
        if cfg.probe:
            metrics["probe"] = probe
        xp.link.push_metrics(metrics)
    xp.link.flush()
    if cfg.hold:
        print("holding", flush=True)
        deadline = time.monotonic() + 60
        while os.path.exists(cfg.hold) and time.monotonic() < deadline:
            time.sleep(0.05)
    if cfg.sleep:
        time.sleep(cfg.sleep)
    marker = xp.folder / "slept-once"
    if cfg.sleep_once and not marker.exists():  # a long first attempt; a resumed one is quick
        marker.touch()
        print("sleeping once", flush=True)
        time.sleep(cfg.sleep_once)
    if cfg.fail:
        raise RuntimeError("planned failure")
    if cfg.crash:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no Python cleanup at all
    print("done", flush=True)


if __name__ == "__main__":
    main()
'''


def grid_source(body: str, header: str = "") -> str:
    """A grid file whose ``@gridman.Explorer def explorer(launcher)`` runs ``body``.

    ``header`` goes after ``import gridman`` (more imports, an Explorer subclass...).
    """
    code = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    head = textwrap.dedent(header).strip("\n")
    parts = ["import gridman", head, "", "@gridman.Explorer", "def explorer(launcher):", code]
    return "\n".join(p for p in parts if p is not None) + "\n"


def write_grid(root: Path, name: str, body: str, *, raw: bool = False) -> Path:
    """Write ``root/grids/NAME.py``: ``body`` as is when ``raw``, else through
    :func:`grid_source`. Returns the file's path."""
    folder = Path(root) / "grids"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    text = textwrap.dedent(body).lstrip("\n") if raw else grid_source(body)
    path.write_text(text, encoding="utf8")
    return path


def make_grid_project(
    root: Path,
    grids: Optional[Mapping[str, str]] = None,
    *,
    settings: Optional[dict[str, Any]] = None,
    main_source: Optional[str] = None,
) -> Path:
    """A :func:`gridman.testing.make_project` project with :data:`GRID_TRAIN_SOURCE` as its
    main (unless ``main_source``) and ``grids`` (name -> explore body) in ``root/grids``."""
    root = make_project(
        root,
        main_source=GRID_TRAIN_SOURCE if main_source is None else main_source,
        settings=settings,
    )
    for name, body in (grids or {}).items():
        write_grid(root, name, body)
    return root


# -- job records -----------------------------------------------------------------------


def trained_grid_project(root: Path, grids: Mapping[str, str], grid: str = "main") -> Path:
    """A grid project whose ``grid`` has run to the end on the inline backend (for tests that
    read results); returns ``root``."""
    make_grid_project(root, grids)
    result = run_cli(["grid", grid, "--backend", "inline"], root)
    assert result.exit_code == 0, result.output
    return root


def job_record(
    state: Optional[Union[State, str]],
    *,
    backend: str = "local",
    exit_code: Optional[int] = None,
    started: Optional[bool] = None,
    sig: str = "0123abcd",
) -> Optional[JobRecord]:
    """A one-attempt job record in ``state`` (None for an XP never submitted).

    The attempt has a start time unless ``started`` is False; by default only a PENDING
    attempt has none (it waits in a queue).
    """
    from ..core.jobs import JobRecord, State

    if state is None:
        return None
    attempt_state = state if isinstance(state, State) else State(state)
    if started is None:
        started = attempt_state is not State.PENDING
    return JobRecord(sig=sig).with_new_attempt(
        backend,
        attempt_state,
        job_id="1",
        exit_code=exit_code,
        submitted=1000.0,
        started=1001.0 if started else None,
    )


def read_job_json(folder: Path) -> dict[str, Any]:
    """The content of ``folder/job.json`` ({} when there is none or it is being replaced)."""
    try:
        data = json.loads((Path(folder) / "job.json").read_text(encoding="utf8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def job_state(folder: Path) -> Optional[str]:
    """The latest attempt's state written in ``folder/job.json`` (None without one)."""
    state = read_job_json(folder).get("state")
    return str(state) if state is not None else None


def attempts_of(folder: Path) -> list[dict[str, Any]]:
    """The attempts recorded in ``folder/job.json``, oldest first."""
    attempts = read_job_json(folder).get("attempts") or []
    return [a for a in attempts if isinstance(a, dict)]


def latest_pid(folder: Path) -> Optional[int]:
    """The pid of the latest attempt's XP process, when recorded."""
    attempts = attempts_of(folder)
    pid = attempts[-1].get("pid") if attempts else None
    return int(pid) if pid else None


# -- waiting ---------------------------------------------------------------------------
def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = 30.0, period: float = 0.05
) -> Any:
    """Poll ``predicate`` every ``period`` s until it returns something true; return it.

    Raises AssertionError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(period)


def wait_states(
    folders: Iterable[Path], states: Collection[str], timeout: float = 30.0
) -> dict[Path, Optional[str]]:
    """Wait until every XP folder's ``job.json`` says one of ``states``; return the states.

    The local pool runs XPs in a detached daemon: polling the files is the only way to know
    when they are done. On timeout the AssertionError lists every XP's current state.
    """
    folders = [Path(f) for f in folders]
    wanted = set(states)
    deadline = time.monotonic() + timeout
    while True:
        current = {f: job_state(f) for f in folders}
        if all(s in wanted for s in current.values()):
            return current
        if time.monotonic() > deadline:
            shown = ", ".join(f"{f.name}: {s}" for f, s in current.items())
            logs = "".join(_log_tails(f) for f, s in current.items() if s not in wanted)
            raise AssertionError(
                f"timed out after {timeout} s waiting for states {sorted(wanted)}; now {shown}"
                + logs
            )
        time.sleep(0.05)


def _log_tails(folder: Path, lines: int = 15) -> str:
    """The last lines of every log of an XP (each attempt, each rank): why it is not done."""
    text = ""
    for log in sorted((folder / "log").glob("*.log")) if (folder / "log").is_dir() else []:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        text += f"\n--- {folder.name}/log/{log.name}\n" + "\n".join(tail)
    return text


def has_history(folder: Path) -> bool:
    """Whether the XP in ``folder`` pushed metrics at least once."""
    from ..core.link import load_history

    try:
        return bool(load_history(Path(folder)))
    except Exception:
        return False


def wait_started(folders: Iterable[Path], timeout: float = 30.0) -> dict[Path, int]:
    """Wait until each XP is RUNNING with a recorded pid and has pushed metrics (so it is
    inside the training function); returns each XP's pid."""
    folders = [Path(f) for f in folders]

    def started() -> Optional[dict[Path, int]]:
        pids = {}
        for folder in folders:
            pid = latest_pid(folder)
            if job_state(folder) != "RUNNING" or not pid or not has_history(folder):
                return None
            pids[folder] = pid
        return pids

    result: dict[Path, int] = wait_for(started, f"{len(folders)} XPs to run", timeout)
    return result


# -- concurrency -----------------------------------------------------------------------
def attempt_interval(folder: Path, index: int = -1) -> tuple[float, float]:
    """(started, ended) of an attempt of the XP in ``folder`` (the latest by default)."""
    attempt = attempts_of(folder)[index]
    return float(attempt["started"]), float(attempt["ended"])


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` intervals open at one instant.

    An interval ending exactly when another starts does not overlap it.
    """
    events = []
    for start, end in intervals:
        events.append((start, 1))
        events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends (-1) before starts (+1) at equal times
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


# -- processes -------------------------------------------------------------------------
def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not; see :func:`gridman.core.jobs.pid_alive`)."""
    from ..core.jobs import pid_alive

    return pid_alive(pid)


def reap(pid: int) -> None:
    """Collect ``pid`` if it is a child of this process that ended (no-op otherwise)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def daemon_pids(dir: Path) -> list[int]:
    """Pids of the live pool daemons serving ``dir/.pool`` (read from its daemon.log and
    checked against each process's command line)."""
    pool = Path(dir) / ".pool"
    try:
        text = (pool / "daemon.log").read_text(encoding="utf8", errors="replace")
    except OSError:
        return []
    pids = []
    for line in text.splitlines():
        words = line.split()
        if "serving" in words and "daemon" in words:
            with contextlib.suppress(ValueError, IndexError):
                pids.append(int(words[words.index("daemon") + 1]))
    alive = []
    for pid in dict.fromkeys(pids):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gridman.backends.pool" in cmdline and str(pool).encode() in cmdline:
            if process_alive(pid):
                alive.append(pid)
    return alive


def kill_daemons(dir: Path) -> list[int]:
    """SIGKILL the pool daemons of ``dir`` (reaping those this process started)."""
    pids = daemon_pids(dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(AssertionError):
            wait_for(functools.partial(_gone, pid), f"daemon {pid} to die", timeout=5)
    return pids


def _gone(pid: int) -> bool:
    reap(pid)
    return not process_alive(pid)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (an XP of the pool and its children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    reap(pid)


def stop_pool(dir: Path) -> None:
    """Kill everything a test left running under the XP root ``dir``: the XPs whose latest
    attempt has a live pid (their whole process group) and the pool daemons."""
    xps = Path(dir) / "xps"
    kill_daemons(dir)
    for folder in sorted(xps.iterdir()) if xps.is_dir() else []:
        pid = latest_pid(folder)
        if pid and process_alive(pid):
            kill_group(pid)


def lock_waiters(pids: Iterable[int]) -> set[int]:
    """Those of ``pids`` blocked waiting for a file lock (flock), from ``/proc/locks``."""
    wanted = set(pids)
    blocked: set[int] = set()
    try:
        text = Path("/proc/locks").read_text(encoding="utf8")
    except OSError:
        return blocked
    for line in text.splitlines():
        words = line.split()
        if "->" in words:
            with contextlib.suppress(ValueError, IndexError):
                pid = int(words[words.index("->") + 4])
                if pid in wanted:
                    blocked.add(pid)
    return blocked


# -- sheep and CLI output --------------------------------------------------------------
def fake_sheep(
    dir: Path,
    sig: str,
    history: Optional[Sequence[Any]] = None,
    *,
    state: Optional[str] = None,
    argv: Sequence[str] = (),
    delta: Sequence[tuple[str, Any]] = (),
) -> Sheep:
    """A Sheep for XP ``sig`` under ``dir`` (no main needed); ``history`` is written to its
    ``history.json`` when given, ``state`` becomes its job record."""
    from ..core.explore import Sheep
    from ..core.fsutil import atomic_write_json
    from ..core.resources import Resources
    from ..core.xp import XP

    xp = XP(cfg=None, argv=list(argv), delta=list(delta), sig=sig, dir=Path(dir))
    if history is not None:
        xp.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(xp.folder / "history.json", list(history), fsync=False)
    return Sheep(xp, Resources(), 0, job=job_record(state, sig=sig))


def parse_json_rows(stdout: str) -> list[dict[str, Any]]:
    """``gridman grid --json`` output: a JSON array of objects (asserted)."""
    data = json.loads(stdout)
    assert isinstance(data, list), f"not a JSON array: {stdout[:200]!r}"
    assert all(isinstance(item, dict) for item in data), "not an array of objects"
    return data


# -- results, stages and plots ---------------------------------------------------------------
#: Source of the ``evaluate.py`` that :func:`write_eval_script` writes: a stage command for
#: :data:`GRID_TRAIN_SOURCE` XPs. ``evaluate.py FOLDER SIG [ARGS...]`` reads the XP's history
#: and reports ``{"acc": 1 - last train.loss, "epochs": len(history), "argv": ARGS}``: printed
#: as its last stdout line (wrapped in ``{"test": ...}``), or written to
#: ``$GRIDMAN_STAGE_OUT`` with ``--file``. ``--fail`` exits 3 and ``--mute`` reports nothing.
EVAL_SOURCE = '''\
"""Stage command written by gridman.testing.grids.write_eval_script."""

import json
import os
import sys
from pathlib import Path

from gridman.core.link import load_history

folder, sig, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
print(f"evaluating {sig}", flush=True)
print("a warning on stderr", file=sys.stderr, flush=True)
if "--fail" in args:
    sys.exit(3)
history = load_history(folder)
metrics = {"acc": 1.0 - history[-1]["train"]["loss"], "epochs": len(history), "argv": args,
           "env": os.environ.get("GRIDMAN_XP_SIG")}
if "--mute" in args:
    print("nothing to report")
elif "--file" in args:
    with open(os.environ["GRIDMAN_STAGE_OUT"], "w") as handle:
        json.dump(metrics, handle)
    print("written")
else:
    print(json.dumps({"test": metrics}))
'''


def write_eval_script(root: Path) -> Path:
    """Write ``root/evaluate.py`` (:data:`EVAL_SOURCE`); returns its path."""
    path = Path(root) / "evaluate.py"
    path.write_text(EVAL_SOURCE, encoding="utf8")
    return path


def make_xp_folder(
    dir: Path,
    sig: str,
    *,
    delta: Sequence[tuple[str, Any]] = (),
    history: Optional[Sequence[Any]] = None,
    state: Optional[str] = "COMPLETED",
    stages: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> Path:
    """An XP folder under the XP root ``dir`` as gridman leaves it, without running anything:
    ``argv.json`` (argv made from ``delta``), ``history.json``, ``job.json`` in ``state`` and
    ``stages/NAME/metrics.json`` for each of ``stages``. Returns the folder."""
    from ..core.fsutil import atomic_write_json
    from ..core.jobs import write_job

    folder = Path(dir) / "xps" / sig
    folder.mkdir(parents=True, exist_ok=True)
    argv = [f"--{k}={v}" for k, v in delta]
    atomic_write_json(folder / "argv.json", {"version": 1, "sig": sig, "argv": argv,
                      "delta": [[k, v] for k, v in delta]}, fsync=False)  # fmt: skip
    if history is not None:
        atomic_write_json(folder / "history.json", list(history), fsync=False)
    record = job_record(state, sig=sig)
    if record is not None:
        write_job(folder, record)
    for name, metrics in (stages or {}).items():
        stage = folder / "stages" / name
        stage.mkdir(parents=True, exist_ok=True)
        data = {"version": 1, "stage": name, "metrics": dict(metrics)}
        atomic_write_json(stage / "metrics.json", data, fsync=False)
    return folder


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after decoding the whole file: every chunk's
    CRC is checked and the image data must inflate to exactly ``height`` scanlines (8-bit,
    non-interlaced images; the kinds matplotlib writes)."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    chunks: list[tuple[bytes, bytes]] = []
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", "not a complete PNG"
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    assert depth == 8 and channels is not None and interlace == 0, "an unexpected PNG kind"
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + width * channels), "image data of the wrong size"
    return int(width), int(height)
