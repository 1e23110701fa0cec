"""A 1,000-XP grid on the local Slurm cluster: Slurm commands called, submit time, completion.

    python bench/slurm_submit.py [--xps 1000] [--no-wait] [--interval 5] [--naive 100]
                                 [--rev HEAD] [--settle 35] [--timeout 3600]

Needs the cluster of scripts/local-slurm.sh (``bash scripts/local-slurm.sh up``). In a temporary
project (gridman.testing.grids.make_grid_project, no ``backend:`` in gridman.yaml) whose grid
``slurmbench`` is ``--xps`` XPs varying one parameter (``seed=0 .. N-1``, ``--epochs 1``: each
XP runs for milliseconds), every Slurm command is counted for real: a temporary folder of shims
named sbatch, squeue, sacct, scancel, scontrol and srun, first on PATH, appends one line per call
to a log (the tool, ``SLURM_JOB_ID`` when called from inside a job, and the phase) and then
execs the real binary by its absolute path. Phases, in this order:

- (c) naive baseline first, on an idle cluster: the same XPs' commands submitted one
  ``sbatch --wrap`` each, the first ``--naive`` of them timed (``--hold``: they never run, so
  that they take no CPU from what follows) and extrapolated to ``--xps``; then cancelled;
- submit: ``gridman grid slurmbench --backend slurm --no-monitor``, timed as a whole process
  (wall, user and system CPU, peak RSS, from bench/_toy.measure);
- (a) again: ``gridman grid slurmbench --no-monitor`` right after (the backend auto-detected
  from sbatch on PATH): it must submit nothing;
- (b) wait (unless ``--no-wait``): ``gridman grid slurmbench --json --no-monitor`` every
  ``--interval`` seconds until every XP has finished; calls per poll and time to completion
  (from the submit's start to the last XP's end recorded in its job.json).

At the end, every job this run submitted (the array job ids from the backend's intent files,
the baseline's job ids) is cancelled by id, never by name or user, and the script waits until
none of them is pending or running. Calls made from inside the jobs (submitit's ``srun``) are
reported apart from the client's. gridman's code is ``git archive --rev`` (default HEAD) put on
``PYTHONPATH`` of every command and job, so that edits in progress in the working tree do not
change (or break) a run; ``--rev worktree`` measures the working tree itself. ``--settle``
waits before timing: on ext4 here, creating 1,000 XP folders soon after many deletions (an
earlier run's) costs seconds of system time (see ``_toy.SETTLE_S``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import ForeignLoad
from _toy import GRIDMAN, REPO, SETTLE_S, Run, loadavg, machine_line, measure, settle, table

TOOLS = ("sbatch", "squeue", "sacct", "scancel", "scontrol", "srun")
GRID = "slurmbench"
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "OUT_OF_MEMORY",
            "NODE_FAIL", "VANISHED"}  # fmt: skip
LIVE_SLURM = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
              "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}  # fmt: skip

# One line per call: tool, SLURM_JOB_ID ("-" outside a job), phase; then the real binary.
_SHIM = """#!/bin/sh
printf '%s\\t%s\\t%s\\n' {tool} "${{SLURM_JOB_ID:--}}" "${{BENCH_PHASE:--}}" >> {log}
exec {real} "$@"
"""


# -- counting Slurm calls ------------------------------------------------------------------
class Shims:
    """A folder of counting wrappers for the Slurm commands, and the log they append to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "shims"
        self.log = folder / "slurm-calls.log"
        self.real: dict[str, str] = {}
        self.source: Optional[Path] = None  # gridman's code, when not the working tree
        self.folder.mkdir(parents=True)
        self.log.touch()
        for tool in TOOLS:
            real = shutil.which(tool)
            if real is None:
                raise SystemExit(f"{tool} is not on PATH: start the cluster with "
                                 "`bash scripts/local-slurm.sh up`")  # fmt: skip
            self.real[tool] = str(Path(real).resolve())
            shim = self.folder / tool
            shim.write_text(_SHIM.format(tool=tool, log=shlex.quote(str(self.log)),
                                         real=shlex.quote(self.real[tool])))  # fmt: skip
            shim.chmod(0o755)

    def env(self, phase: str) -> dict[str, str]:
        """The environment of a command whose calls count under ``phase``."""
        env = {k: v for k, v in os.environ.items() if k not in ("GRIDMAN_DIR", "NO_COLOR")}
        env["PATH"] = f"{self.folder}{os.pathsep}{env.get('PATH', '')}"
        if self.source is not None:  # inherited by the jobs too (sbatch exports it)
            env["PYTHONPATH"] = str(self.source)
        env["BENCH_PHASE"] = phase
        return env

    def calls(self) -> list[tuple[str, str, str]]:
        """(tool, job id or "-", phase) for every call so far."""
        lines = self.log.read_text().splitlines()
        return [tuple(line.split("\t")) for line in lines if line.count("\t") == 2]  # type: ignore[misc]

    def client(self, phase: str) -> Counter[str]:
        """Calls made by gridman (or the baseline) itself during ``phase``, by tool."""
        return Counter(t for t, job, p in self.calls() if p == phase and job == "-")

    def in_jobs(self) -> Counter[str]:
        """Calls made from inside Slurm jobs (submitit's srun), by tool."""
        return Counter(t for t, job, _ in self.calls() if job != "-")


def counts_text(counter: Counter[str]) -> str:
    return ", ".join(f"{counter[t]} {t}" for t in TOOLS if counter[t]) or "none"


# -- gridman's code and the project ---------------------------------------------------------
def export_source(rev: str, into: Path) -> tuple[Path, str]:
    """``git archive REV gridman`` unpacked into ``into``, and the commit it is."""
    into.mkdir(parents=True)
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    archive = subprocess.run(["git", "archive", rev, "gridman"], cwd=REPO, capture_output=True,
                             check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into, sha


def write_project(root: Path, n_xps: int) -> Path:
    from gridman.testing.grids import make_grid_project  # from --rev's code (sys.path)

    body = f"for seed in range({n_xps}):\n    launcher(seed=seed, epochs=1)"
    # backend: None drops make_project's `backend: local`: the second command auto-detects.
    return make_grid_project(root, {GRID: body}, settings={"backend": None})


def slurm_dir(root: Path) -> Path:
    return root / "outputs" / ".slurm"


def submitted_jobs(root: Path) -> dict[str, int]:
    """Array (or single) job id -> number of XPs, from the backend's intent files."""
    jobs: dict[str, int] = {}
    for path in (slurm_dir(root) / "submissions").glob("*.json"):
        data = json.loads(path.read_text())
        if data.get("job_id"):
            jobs[str(data["job_id"])] = len(data["folders"])
    return dict(sorted(jobs.items(), key=lambda item: int(item[0])))


def xp_times(root: Path) -> tuple[list[float], list[float], Counter[str]]:
    """Start and end times of every XP's latest attempt, and the XPs' states (job.json)."""
    starts: list[float] = []
    ends: list[float] = []
    states: Counter[str] = Counter()
    for path in (root / "outputs" / "xps").glob("*/job.json"):
        data = json.loads(path.read_text())
        states[str(data.get("state"))] += 1
        latest = (data.get("attempts") or [{}])[-1]
        if latest.get("started"):
            starts.append(float(latest["started"]))
        if latest.get("ended"):
            ends.append(float(latest["ended"]))
    return starts, ends, states


# -- phases ----------------------------------------------------------------------------------
@dataclass
class Baseline:
    """Naive submission: one ``sbatch --wrap`` per XP."""

    timed: int
    wall: float
    job_ids: list[str] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)  # each sbatch's own wall time

    @property
    def per_sbatch(self) -> float:
        return self.wall / self.timed


def naive_baseline(shims: Shims, root: Path, sample: int, tag: str, record: list[str]) -> Baseline:
    """Submit ``sample`` XPs' commands one sbatch each (held: they never run), timed; every
    job id goes into ``record`` at once (to be cancelled whatever happens)."""
    python = shlex.quote(sys.executable)
    env = shims.env("naive")
    env["GRIDMAN_DIR"] = str(root / "naive-outputs")  # were they released: not our XPs' folder
    base = Baseline(timed=sample, wall=0.0)
    start = time.perf_counter()
    for seed in range(sample):
        argv = [
            "sbatch", "--parsable", "--hold", f"--job-name={tag}-naive",
            f"--output={os.devnull}", f"--chdir={root}",
            f"--wrap={python} train.py --seed={seed} --epochs=1",
        ]  # fmt: skip
        one = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        base.walls.append(time.perf_counter() - one)
        if done.returncode != 0:
            raise SystemExit(f"naive sbatch failed: {done.stderr.strip()}")
        base.job_ids.append(done.stdout.strip().split(";")[0])
        record.append(base.job_ids[-1])
    base.wall = time.perf_counter() - start
    return base


@dataclass
class Poll:
    wall: float
    calls: Counter[str]
    states: Counter[str]


def poll_once(shims: Shims, root: Path, index: int) -> Poll:
    phase = f"poll-{index}"
    start = time.perf_counter()
    done = subprocess.run([str(GRIDMAN), "grid", GRID, "--json", "--no-monitor"], cwd=root,
                          env=shims.env(phase), capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some XP failed
        raise SystemExit(f"poll {index} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    rows = json.loads(done.stdout)
    return Poll(wall, shims.client(phase), Counter(str(r["state"]) for r in rows))


def wait_all(
    shims: Shims, root: Path, n_xps: int, interval: float, timeout: float
) -> tuple[list[Poll], bool]:
    polls: list[Poll] = []
    deadline = time.monotonic() + timeout
    while True:
        tick = time.monotonic()
        poll = poll_once(shims, root, len(polls))
        polls.append(poll)
        finished = sum(n for s, n in poll.states.items() if s in FINISHED)
        states = " ".join(f"{s} {n}" for s, n in sorted(poll.states.items()))
        print(f"  poll {len(polls) - 1:3d}: {poll.wall:5.2f} s, {counts_text(poll.calls)}; "
              f"{states}; load {loadavg()}", flush=True)  # fmt: skip
        if finished >= n_xps:
            return polls, True
        if time.monotonic() > deadline:
            return polls, False
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))


# -- cleaning up -------------------------------------------------------------------------------
def live_jobs(ids: Iterable[str], real_squeue: str) -> list[str]:
    """Which of these jobs (or their array tasks) are still pending or running."""
    mine = {i.split("_", 1)[0] for i in ids}
    out = subprocess.run([real_squeue, "-h", "-u", str(os.getuid()), "-o", "%i|%T"],
                         capture_output=True, text=True).stdout  # fmt: skip
    live = []
    for line in out.splitlines():
        job, _, state = line.partition("|")
        base = job.split("_", 1)[0]
        if base in mine and state.strip() in LIVE_SLURM:
            live.append(job.strip())
    return live


def cancel_and_wait(ids: Sequence[str], shims: Shims, timeout: float = 120.0) -> list[str]:
    """scancel exactly these job ids (never by name or user); wait until none is live."""
    if not ids:
        return []
    subprocess.run([shims.real["scancel"], *ids], capture_output=True, text=True)
    deadline = time.monotonic() + timeout
    left = live_jobs(ids, shims.real["squeue"])
    while left and time.monotonic() < deadline:
        time.sleep(1.0)
        left = live_jobs(ids, shims.real["squeue"])
    return left


def queue_summary(real_squeue: str) -> str:
    out = subprocess.run([real_squeue, "-h", "-o", "%T"], capture_output=True, text=True).stdout
    states = Counter(line.strip() for line in out.splitlines() if line.strip())
    return ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "empty"


# -- report ----------------------------------------------------------------------------------
def run_row(label: str, run: Run, calls: Counter[str]) -> list[str]:
    return [label, f"{run.wall:.2f}", f"{run.user:.2f}", f"{run.sys:.2f}", f"{run.peak_mib:.0f}",
            *(str(calls[t]) for t in TOOLS)]  # fmt: skip


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):g} / {statistics.median(values):g} / {max(values):g}"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xps", type=int, default=1000, help="XPs in the grid (default 1000)")
    parser.add_argument("--no-wait", action="store_true",
                        help="cancel right after the two submissions, do not wait")  # fmt: skip
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--naive", type=int, default=100,
                        help="naive one-sbatch-per-XP submits timed (extrapolated)")  # fmt: skip
    parser.add_argument("--rev", default="HEAD",
                        help="run gridman's code of this commit (git archive; default HEAD), or "
                             "'worktree' for the working tree as it is")  # fmt: skip
    parser.add_argument("--settle", type=float, default=SETTLE_S,
                        help="seconds to wait before timing (see _toy.SETTLE_S)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="give up waiting for completion after this many seconds")  # fmt: skip
    args = parser.parse_args(argv)
    if args.xps < 1 or args.naive < 1 or args.interval <= 0:
        parser.error("--xps and --naive must be >= 1, --interval > 0")
    naive_n = min(args.naive, args.xps)

    print(f"Machine: {machine_line()}")
    tmp = Path(tempfile.mkdtemp(prefix="gridman-bench-slurm-"))
    tag = f"gmbench{os.getpid()}"
    shims = Shims(tmp)
    if args.rev != "worktree":
        shims.source, sha = export_source(args.rev, tmp / "src")
        sys.path.insert(0, str(shims.source))
        print(f"gridman's code: git archive {args.rev} ({sha}) in {shims.source}, PYTHONPATH "
              "of every command and job (edits in the working tree do not matter)")  # fmt: skip
    else:
        print(f"gridman's code: the working tree {REPO / 'gridman'}")
    for tool, real in shims.real.items():
        print(f"  {tool}: {real}")
    conf = subprocess.run([shims.real["scontrol"], "show", "config"], capture_output=True,
                          text=True).stdout  # fmt: skip
    max_array = next((line.split("=", 1)[1].strip() for line in conf.splitlines()
                      if line.startswith("MaxArraySize")), "?")  # fmt: skip
    print(f"Cluster: MaxArraySize {max_array}; queue before: {queue_summary(shims.real['squeue'])}")
    root = write_project(tmp / "project", args.xps)
    print(f"Project: {root} (grid {GRID}: {args.xps:,} XPs seed=0..{args.xps - 1}, --epochs 1)")
    print(f"Call log: {shims.log}")

    settle(args.settle)  # the XP folders of a previous run were just deleted: see SETTLE_S
    ours: list[str] = []
    baseline: Optional[Baseline] = None
    code = 0
    try:
        # (c) the naive baseline, on an idle cluster, cancelled before gridman submits
        print(f"\n(c) naive: {naive_n} x (Python's subprocess.run) `sbatch --parsable --hold "
              f"--wrap '<python> train.py --seed=N --epochs=1'`, load {loadavg()} ...",
              flush=True)  # fmt: skip
        baseline = naive_baseline(shims, root, naive_n, tag, ours)
        left = cancel_and_wait(baseline.job_ids, shims)
        print(f"  {baseline.wall:.2f} s ({baseline.per_sbatch * 1000:.1f} ms per sbatch, median "
              f"{statistics.median(baseline.walls) * 1000:.1f} ms, max "
              f"{max(baseline.walls) * 1000:.1f} ms), "
              f"{counts_text(shims.client('naive'))}; cancelled"
              f"{'' if not left else f', STILL LIVE: {left}'}")  # fmt: skip

        # submit
        submit_cmd = [str(GRIDMAN), "grid", GRID, "--backend", "slurm", "--no-monitor"]
        print(f"\nsubmit: {' '.join(['gridman', *submit_cmd[1:]])}, load {loadavg()} ...",
              flush=True)  # fmt: skip
        t_submit = time.time()
        with ForeignLoad() as foreign:
            submit = measure(submit_cmd, root, shims.env("submit"))
        jobs = submitted_jobs(root)
        ours += list(jobs)
        calls_submit = shims.client("submit")
        share = "?" if foreign.share is None else f"{foreign.share:.0%}"
        print(f"  {submit.wall:.2f} s wall, {submit.user:.2f} s user, {submit.sys:.2f} s sys, "
              f"{submit.peak_mib:.0f} MiB; {counts_text(calls_submit)}; arrays "
              f"{', '.join(f'{j} ({n} XPs)' for j, n in jobs.items())}; other CPU load "
              f"during it {share} (this grid's jobs included), load {loadavg()}")  # fmt: skip
        if sum(jobs.values()) != args.xps:
            print(f"  WARNING: intents cover {sum(jobs.values())} XPs, expected {args.xps}")
            code = 1

        # (a) the same grid again: nothing to submit
        again_cmd = [str(GRIDMAN), "grid", GRID, "--no-monitor"]
        again = measure(again_cmd, root, shims.env("again"))
        calls_again = shims.client("again")
        new_jobs = set(submitted_jobs(root)) - set(jobs)
        print(f"\n(a) again: gridman grid {GRID} --no-monitor: {again.wall:.2f} s wall, "
              f"{again.user:.2f} s user; {counts_text(calls_again)}; "
              f"new jobs: {len(new_jobs)}")  # fmt: skip
        if calls_again["sbatch"] or new_jobs:
            print("  WARNING: the second command submitted again")
            code = 1

        # (b) wait for completion
        polls: list[Poll] = []
        completed = False
        if not args.no_wait:
            print(f"\n(b) polling `gridman grid {GRID} --json --no-monitor` every "
                  f"{args.interval:g} s ...", flush=True)  # fmt: skip
            polls, completed = wait_all(shims, root, args.xps, args.interval, args.timeout)
            if not completed:
                print(f"  gave up after {args.timeout:.0f} s")
                code = 1

        # report
        print(f"\nSlurm calls per command ({args.xps:,} XPs, MaxArraySize {max_array}):\n")
        headers = ["command", "wall s", "user s", "sys s", "MiB", *TOOLS]
        rows = [run_row("grid --backend slurm --no-monitor (submit)", submit, calls_submit),
                run_row("grid --no-monitor (again)", again, calls_again)]  # fmt: skip
        print(table(headers, rows))
        if polls:
            walls = [p.wall for p in polls]
            total = Counter[str]()
            for p in polls:
                total.update(p.calls)
            print(f"\n{len(polls)} polls (`grid --json --no-monitor`, every {args.interval:g} s): "
                  f"wall min/median/max {spread([round(w, 2) for w in walls])} s; calls per "
                  f"poll min/median/max: "
                  + "; ".join(f"{t} {spread([float(p.calls[t]) for p in polls])}"
                              for t in TOOLS if total[t])
                  + f"; in all {counts_text(total)}")  # fmt: skip
            starts, ends, states = xp_times(root)
            if ends:
                print(f"XPs: {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}; "
                      f"first start {min(starts) - t_submit:.1f} s after the submit began, "
                      f"last end {max(ends) - t_submit:.1f} s after "
                      f"({args.xps / (max(ends) - t_submit):.2f} XPs/s on the node); completion "
                      f"seen by a poll {len(polls)} polls in")  # fmt: skip
        print(f"Calls from inside the jobs (not gridman's): {counts_text(shims.in_jobs())}")
        if baseline is not None:
            naive_total = baseline.per_sbatch * args.xps
            n_sbatch = max(1, calls_submit["sbatch"])
            print(f"\nNaive one sbatch per XP: {baseline.timed} timed in {baseline.wall:.2f} s "
                  f"-> {args.xps:,} XPs ~ {naive_total:.1f} s and {args.xps:,} sbatch; gridman: "
                  f"{submit.wall:.2f} s and {calls_submit['sbatch']} sbatch -> "
                  f"{args.xps / n_sbatch:.0f}x fewer sbatch; submit wall naive/gridman "
                  f"{naive_total / submit.wall:.2f}x")  # fmt: skip
    finally:
        with contextlib.suppress(OSError, ValueError):
            ours += list(submitted_jobs(root))  # also when a command failed half-way
        left = cancel_and_wait(sorted(set(ours)), shims)
        print(f"\nCleanup: scancel of this run's {len(set(ours))} job ids; "
              f"{'none live' if not left else f'STILL LIVE: {left}'}; queue now: "
              f"{queue_summary(shims.real['squeue'])}; load {loadavg()}")  # fmt: skip
        if not left:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(kept {tmp}: jobs still live)")
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
