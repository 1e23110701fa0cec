"""Throughput of the MPI backend: N trivial XPs over ``mpiexec -n 3`` (issue 5).

Compared in the same run with (a) the same XPs on the local pool with 2 workers and (b) a bare
baseline that starts the same N child processes (``python -m gridman.backends.worker ...``,
exactly the command the backends run) from 2 threads, with no scheduling, no job state and no locks.
Target: the MPI backend within 1.3x of (b).

    .venv/bin/python bench/mpi_throughput.py [--xps 1000] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BIN = Path(sys.executable).parent
TRAIN = """import argparse, gridman
parser = argparse.ArgumentParser()
parser.add_argument("--x", type=int, default=0)
@gridman.argparse_main(parser=parser, dir="outputs")
def main():
    gridman.get_xp().link.push_metrics({"y": gridman.get_xp().cfg.x})
"""
GRID = """import gridman
@gridman.Explorer
def explorer(launcher):
    for x in range(%d):
        launcher(x=x)
"""


def make_project(root: Path, xps: int) -> None:
    (root / "grids").mkdir(parents=True)
    (root / "gridman.yaml").write_text("main: train.py\ndir: outputs\n")
    (root / "train.py").write_text(TRAIN)
    (root / "grids" / "trivial.py").write_text(GRID % xps)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env(), check=False, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some XPs failed, still a measurement
        print(f"FAILED ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def run_mpi(root: Path) -> float:
    return timed([str(BIN / "mpiexec"), "-n", "3", str(BIN / "gridman"), "grid", "trivial"], root)


def run_local(root: Path) -> float:
    command = [str(BIN / "gridman"), "grid", "trivial", "--workers", "2", "--interval", "0.2"]
    return timed(command, root)


def run_bare(root: Path, xps: int) -> float:
    out = root / "bare"
    variables = {**env(), "GRIDMAN_DIR": str(out), "PYTHONUNBUFFERED": "1"}

    def one(x: int) -> None:
        command = [
            sys.executable,
            "-m",
            "gridman.backends.worker",
            "train.py",
            str(root),
            "--",
            f"--x={x}",
        ]
        with open(os.devnull, "wb") as sink:
            subprocess.run(command, cwd=root, env=variables, stdout=sink, stderr=sink, check=False)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, range(xps)))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xps", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if not (BIN / "mpiexec").exists():
        print("mpiexec not found beside this python: pip install 'gridman[mpi]'")
        return 1
    results: dict[str, list[float]] = {"mpi -n 3": [], "local pool, 2 workers": [], "bare": []}
    for _ in range(args.runs):
        for name in results:
            root = Path(tempfile.mkdtemp(prefix="gridman-bench-mpi-"))
            make_project(root, args.xps)
            if name == "bare":
                seconds = run_bare(root, args.xps)
            elif name.startswith("mpi"):
                seconds = run_mpi(root)
            else:
                seconds = run_local(root)
            done = sum(1 for _ in (root / ("bare" if name == "bare" else "outputs")).glob(
                "xps/*/history.json*"))  # fmt: skip
            results[name].append(seconds)
            print(f"{name:<24} {seconds:7.2f} s  ({done} XP histories written)", flush=True)
            shutil.rmtree(root, ignore_errors=True)
    bare = statistics.median(results["bare"])
    print(f"\n{args.xps} trivial XPs, median of {args.runs} run(s); load {os.getloadavg()[0]:.2f}")
    print(f"{'system':<24} {'wall s':>8} {'ms/XP':>7} {'vs bare':>8}")
    for name, values in results.items():
        wall = statistics.median(values)
        print(f"{name:<24} {wall:8.2f} {1000 * wall / args.xps:7.1f} {wall / bare:7.2f}x")
    mpi_ratio = statistics.median(results["mpi -n 3"]) / bare
    print(f"target: mpi within 1.3x of bare -> {'PASS' if mpi_ratio <= 1.3 else 'MISS'}"
          f" ({mpi_ratio:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
