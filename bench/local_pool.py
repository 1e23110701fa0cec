"""Running 200 short XPs on the local pool (2 workers) against ``xargs -P2`` of the same commands.

    python bench/local_pool.py [--runs 5] [--warmup 1] [--mode both|monitor|poll] [--one-xp 10]
                               [--xp-root DIR] [--settle 35]

In a temporary copy of the toy project (bench/_toy.py), grid ``pool`` is 10 lr x 2 bs x 10 seeds
with ``--epochs 1``: 200 XPs of about 0.1 s each (interpreter start, ``import gridman``, one
metrics push). Side by side in the same run, interleaved, each run on a new ``GRIDMAN_DIR``:

- gridman, ``monitor``: ``gridman grid pool --workers 2 --interval 0.2`` (stdout not a terminal:
  it submits, then refreshes every 0.2 s and returns when every XP has finished) — whole-process
  wall time;
- gridman, ``poll``: ``gridman grid pool --workers 2 --no-monitor`` (submits and returns), then
  this script polls every XP's ``job.json``; wall = from the command's start to the last
  attempt's recorded end;
- baseline: ``xargs -P2 -L1 -a ARGS python train.py`` with the same 200 argv lines (from
  ``gridman grid pool --dry-run --json``): the bare script, which runs ``main()`` and records its
  history through gridman's decorator, with no scheduling.

Checked after every run: 200 ``job.json`` COMPLETED (gridman), 200 histories (both). Reported:
median walls and gridman/baseline (target <= 1.3x). Then the per-XP overhead: bare
``python train.py`` vs ``python -m gridman.backends.worker train.py ROOT -- ARGV`` vs
``gridman run -- ARGV`` (``--one-xp`` runs each), and, from the ``job.json``/status files of
the last pool run,
where the time went: submission, daemon start, runner before/after the XP, worker body, idle
slots, and the monitor's last refresh. XP folders go under ``--xp-root`` (default: the
temporary folder) and are deleted only at the end (see ``_toy.SETTLE_S``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy import (
    SETTLE_S,
    Run,
    Stats,
    fresh_dir,
    fs_type,
    gridman_cmd,
    gridman_env,
    loadavg,
    machine_line,
    measure,
    remove,
    settle,
    table,
    write_toy,
)

TARGET = 1.3
GRID = "pool"
N_XPS = 200
PYTHON = str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class PoolRun:
    """One timed gridman run: wall seconds, CLI CPU seconds and peak MiB, the pool daemon's own
    CPU seconds and its reaped children's (the XP processes), the XP dir."""

    wall: float
    cli_cpu: float
    cli_mib: float
    daemon_cpu: float
    xps_cpu: float
    start: float  # time.time() just before the command started
    xp_dir: Path


def daemon_cpu(xp_dir: Path) -> tuple[float, float]:
    """(own, reaped children) CPU seconds of the pool daemon, read before it exits (it idles
    2 s first); NaN when it cannot be read."""
    try:
        log = (xp_dir / ".pool" / "daemon.log").read_text()
        pid = int(log.split("pool daemon ")[1].split()[0])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) / tick for x in fields[11:15])
    return utime + stime, cutime + cstime


def grid_xps(root: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    """(sig, argv) of every XP of the grid, in grid order (the order they are queued in)."""
    done = subprocess.run(gridman_cmd("grid", GRID, "--dry-run", "--json"), cwd=root,
                          env=gridman_env(scratch), capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"gridman grid {GRID} --dry-run --json failed:\n{done.stderr[-2000:]}")
    rows = json.loads(done.stdout)
    return [(str(row["sig"]), list(row["argv"])) for row in rows]


def wait_daemon_gone(xp_dir: Path, timeout: float = 30.0) -> None:
    """Wait until the pool daemon of ``xp_dir`` has exited (it does ~2 s after going idle)."""
    lock = xp_dir / ".pool" / "daemon.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        time.sleep(0.2)


def read_records(xp_dir: Path) -> list[dict[str, Any]]:
    """The latest attempt of every XP (from job.json), with its worker's status file."""
    out = []
    for folder in sorted((xp_dir / "xps").iterdir()):
        try:
            job = json.loads((folder / "job.json").read_text())
        except (OSError, ValueError):
            continue
        latest = dict(job["attempts"][-1])
        with contextlib.suppress(OSError, ValueError):
            status = json.loads((folder / "log" / f"{latest['n']}.status.json").read_text())
            latest["worker_ended"] = status.get("ended")
        out.append(latest)
    return out


def check_completed(xp_dir: Path) -> list[dict[str, Any]]:
    records = read_records(xp_dir)
    done = [r for r in records if r["state"] == "COMPLETED"]
    if len(done) != N_XPS:
        states = sorted({r["state"] for r in records})
        raise RuntimeError(f"{len(done)}/{N_XPS} COMPLETED in {xp_dir} (states {states})")
    check_histories(xp_dir)
    return records


def check_histories(xp_dir: Path) -> None:
    xps = list((xp_dir / "xps").iterdir())
    with_history = [
        x for x in xps if (x / "history.jsonl").exists() or (x / "history.json").exists()
    ]
    if len(with_history) != N_XPS:
        raise RuntimeError(f"{len(with_history)}/{N_XPS} XPs recorded a history in {xp_dir}")


def run_monitor(root: Path, work: Path) -> PoolRun:
    xp_dir = fresh_dir(work, "monitor")
    argv = gridman_cmd("grid", GRID, "--workers", "2", "--interval", "0.2")
    start = time.time()
    run = measure(argv, root, gridman_env(xp_dir))
    own, children = daemon_cpu(xp_dir)
    check_completed(xp_dir)
    return PoolRun(run.wall, run.cpu, run.peak_mib, own, children, start, xp_dir)


def run_poll(root: Path, work: Path, sigs: list[str]) -> PoolRun:
    xp_dir = fresh_dir(work, "poll")
    argv = gridman_cmd("grid", GRID, "--workers", "2", "--no-monitor")
    start = time.time()
    run = measure(argv, root, gridman_env(xp_dir))
    # XPs start in queue (= grid) order: wait for each in turn, a file read or two per poll.
    folders = [xp_dir / "xps" / sig for sig in sigs]
    deadline = time.monotonic() + 600
    for folder in folders:
        while not _finished(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
    own, children = daemon_cpu(xp_dir)
    records = check_completed(xp_dir)
    ended = max(float(r["ended"]) for r in records)
    return PoolRun(ended - start, run.cpu, run.peak_mib, own, children, start, xp_dir)


def _finished(folder: Path) -> bool:
    try:
        latest = json.loads((folder / "job.json").read_text())["attempts"][-1]
    except (OSError, ValueError, KeyError, IndexError):
        return False
    return latest["state"] not in ("PENDING", "RUNNING")


def run_baseline(root: Path, work: Path, args_file: Path) -> Run:
    xp_dir = fresh_dir(work, "xargs")
    argv = ["xargs", "-P2", "-L1", "-a", str(args_file), PYTHON, "train.py"]
    run = measure(argv, root, gridman_env(xp_dir))
    check_histories(xp_dir)
    return run


def one_xp(root: Path, work: Path, argv: list[str], runs: int) -> dict[str, Stats]:
    """Median cost of one XP run directly, through the worker, and through ``gridman run``."""
    commands = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "python train.py ARGV (bare)": [PYTHON, "train.py", *argv],
        "python -m gridman.backends.worker train.py ROOT -- ARGV": [
            PYTHON,
            "-m",
            "gridman.backends.worker",
            "train.py",
            str(root),
            "--",
            *argv,
        ],
        "gridman run -- ARGV": gridman_cmd("run", "--", *argv),
    }
    samples: dict[str, list[Run]] = {k: [] for k in commands}
    for i in range(runs + 1):
        for name, command in commands.items():
            xp_dir = fresh_dir(work, "one")
            run = measure(command, root, gridman_env(xp_dir))
            if i:
                samples[name].append(run)
    return {k: Stats.of(v) for k, v in samples.items()}


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def breakdown(run: PoolRun, records: list[dict[str, Any]], workers: int = 2) -> list[str]:
    """Where the wall time of one pool run went, from job.json and the workers' status files."""
    submitted = sorted(float(r["submitted"]) for r in records)
    started = sorted(float(r["started"]) for r in records)
    ended = sorted(float(r["ended"]) for r in records)
    busy = sum(float(r["ended"]) - float(r["started"]) for r in records)
    span = ended[-1] - started[0]
    # The worker's status file keeps only its end (its start is overwritten by then).
    run_xp = [r["worker_ended"] - r["started"] for r in records if r.get("worker_ended")]
    post = [r["ended"] - r["worker_ended"] for r in records if r.get("worker_ended")]
    end = run.start + run.wall
    rows = [
        ["CLI start -> first XP queued (startup, herd, plan)", f"{submitted[0] - run.start:.3f}"],
        ["first -> last XP queued (200 job.json + queue entries)",
         f"{submitted[-1] - submitted[0]:.3f}"],
        ["last queued -> first XP started (daemon start)", f"{started[0] - submitted[-1]:.3f}"],
        ["first XP started -> last XP ended (2 slots)", f"{span:.3f}"],
        ["last XP ended -> command returned (monitor; 0 in poll)", f"{end - ended[-1]:.3f}"],
        ["total wall", f"{run.wall:.3f}"],
        ["per XP: runner start -> worker's end recorded (spawn, python, the XP, status)",
         f"{med(run_xp):.3f}"],
        ["per XP: worker end -> runner recorded end (exit, wait, job.json)", f"{med(post):.3f}"],
        ["per XP: runner start -> recorded end (all of the above)", f"{busy / len(records):.3f}"],
        ["slots idle between XPs (share of 2 x span)",
         f"{1 - busy / (workers * span):.1%}"],
    ]  # fmt: skip
    return table(["stage", "seconds (median per XP where noted)"], rows).splitlines()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each, after warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    parser.add_argument("--mode", choices=("both", "monitor", "poll"), default="both",
                        help="how gridman's end is detected")  # fmt: skip
    parser.add_argument("--one-xp", type=int, default=10,
                        help="runs of each single-XP command (0: skip)")  # fmt: skip
    parser.add_argument("--xp-root", type=Path, default=None,
                        help="where XP folders go (default: the temporary folder)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=SETTLE_S,
                        help="seconds to wait before timing (see _toy.SETTLE_S)")  # fmt: skip
    args = parser.parse_args(argv)

    print(f"Machine: {machine_line()}")
    modes = ("monitor", "poll") if args.mode == "both" else (args.mode,)
    with tempfile.TemporaryDirectory(prefix="gridman-bench-pool-") as tmp:
        root = write_toy(Path(tmp) / "toy-project")
        work = Path(tempfile.mkdtemp(prefix="gridman-bench-pool-", dir=args.xp_root or tmp))
        xps = grid_xps(root, Path(tmp) / "scratch")
        sigs, argvs = [sig for sig, _ in xps], [argv for _, argv in xps]
        if len(argvs) != N_XPS:
            raise RuntimeError(f"grid {GRID} has {len(argvs)} XPs, expected {N_XPS}")
        args_file = Path(tmp) / "argv.txt"
        args_file.write_text("".join(" ".join(a) + "\n" for a in argvs))
        print(f"Toy project: {root}; grid {GRID}: {N_XPS} XPs, e.g. {' '.join(argvs[0])}")
        print("  monitor: GRIDMAN_DIR=<new> gridman grid pool --workers 2 --interval 0.2")
        print("  poll:    GRIDMAN_DIR=<new> gridman grid pool --workers 2 --no-monitor, "
              "then poll job.json")  # fmt: skip
        print(f"  xargs:   GRIDMAN_DIR=<new> xargs -P2 -L1 -a argv.txt {PYTHON} train.py")
        print(f"XP folders under {work} ({fs_type(work)})")
        settle(args.settle)
        print(f"\n{args.runs} runs after {args.warmup} warm-up, load {loadavg()} ...", flush=True)
        pool: dict[str, list[PoolRun]] = {m: [] for m in modes}
        base: list[Run] = []
        last: dict[str, tuple[PoolRun, list[dict[str, Any]]]] = {}
        for i in range(args.warmup + args.runs):
            for mode in modes:
                run = run_monitor(root, work) if mode == "monitor" else run_poll(root, work, sigs)
                wait_daemon_gone(run.xp_dir)
                if i >= args.warmup:
                    pool[mode].append(run)
                    last[mode] = (run, read_records(run.xp_dir))
            b = run_baseline(root, work, args_file)
            if i >= args.warmup:
                base.append(b)
            print(f"  run {i + 1}: " + ", ".join(
                f"{m} {pool[m][-1].wall:.2f}s" for m in modes if i >= args.warmup
            ) + f"{', ' if i >= args.warmup else 'warm-up; '}xargs {b.wall:.2f}s, "
                f"load {loadavg()}", flush=True)  # fmt: skip
        base_stats = Stats.of(base)
        rows = [["xargs -P2 python train.py (baseline)", f"{base_stats.wall:.2f}",
                 f"{base_stats.cpu:.2f}", "-", "-", f"{base_stats.peak_mib:.0f}",
                 "1.00x"]]  # fmt: skip
        ratios = {}
        for mode in modes:
            runs = pool[mode]
            wall = statistics.median(r.wall for r in runs)
            ratios[mode] = wall / base_stats.wall
            rows.append([
                f"gridman grid ({mode})", f"{wall:.2f}",
                f"{statistics.median(r.xps_cpu for r in runs):.2f}",
                f"{statistics.median(r.daemon_cpu for r in runs):.2f}",
                f"{statistics.median(r.cli_cpu for r in runs):.2f}",
                f"{max(r.cli_mib for r in runs):.0f}", f"{ratios[mode]:.2f}x",
            ])  # fmt: skip
        print(
            f"\n{N_XPS} XPs, 2 at a time, medians of {args.runs} runs (CPU = user + sys; "
            "XPs: the 200 XP processes; pool: the daemon itself; peak: xargs or the CLI):\n"
        )
        headers = ["command", "wall s", "CPU XPs s", "CPU pool s", "CPU CLI s", "peak MiB",
                   "vs baseline"]  # fmt: skip
        print(table(headers, rows))
        print(f"\nLoad average: {loadavg()}")
        for mode, ratio in ratios.items():
            verdict = "PASS" if ratio <= TARGET else "MISS"
            print(f"{verdict}: gridman ({mode}) / xargs = {ratio:.2f}x (target <= {TARGET}x); "
                  f"{(ratio - 1) * base_stats.wall / N_XPS * 2 * 1000:.0f} ms extra per XP "
                  "per slot")  # fmt: skip
        for mode, (run, records) in last.items():
            print(f"\nWhere the time went, last {mode} run ({run.wall:.2f} s):\n")
            print("\n".join(breakdown(run, records)))
        if args.one_xp:
            print(f"\nOne XP ({' '.join(argvs[0])}), medians of {args.one_xp} runs "
                  f"after 1 warm-up, load {loadavg()}:\n")  # fmt: skip
            stats = one_xp(root, work, argvs[0], args.one_xp)
            bare = stats["python train.py ARGV (bare)"].wall
            rows = [[name, f"{s.wall:.3f}", f"{s.user:.3f}", f"{s.sys:.3f}", f"{s.peak_mib:.0f}",
                     f"{s.wall - bare:+.3f}"] for name, s in stats.items()]  # fmt: skip
            print(table(["command", "wall s", "user s", "sys s", "peak MiB", "vs bare"], rows))
        remove(work)
        print(f"\nLoad average at the end: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
