"""Planning a grid without running it: ``grid G --dry-run --init``, gridman against Dora.

    python bench/grid_plan.py [--sizes 1000 10000] [--runs-1k 5] [--runs-10k 3] [--no-dora]
                              [--xp-root DIR] [--settle 35]

In a temporary copy of the toy project of Dora's baseline (bench/_toy.py: 10 lr x 10 bs x
n_seed XPs, ``big`` = 1,000 XPs, ``huge`` = 10,000), times as whole processes, side by side in
the same run and interleaved (gridman, Dora, gridman, Dora ...), after one warm-up each:

- (a) fresh: ``gridman grid G --dry-run --init`` with ``GRIDMAN_DIR`` a new empty folder, and
  ``dora -P toy grid G --dry_run --init`` with ``TOY_OUT`` a new empty folder (made before the
  clock starts; every run gets its own);
- (b) existing: the same commands again on a folder the command has already initialised.

Both commands build every XP, write each XP's argv file, plan (Dora: look for a job per XP) and
print the table once. Reported: median wall, user and system CPU seconds, peak RSS
(``os.wait4`` ``ru_maxrss``), and Dora/gridman wall. Target: Dora/gridman >= 8x at 10,000 XPs.
Dora is set up by bench/dora_env.sh when its venv is missing; without it, only gridman's figures
are printed.

XP folders go under ``--xp-root`` (default: the temporary folder, on the same file system as
Dora's baseline figures) and are only deleted at the end: on ext4 here, creating inodes soon
after many deletions is slow (see ``_toy.SETTLE_S``); ``--settle`` waits before timing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy import (
    GRID_OF_SIZE,
    SETTLE_S,
    Run,
    Stats,
    dora_cmd,
    dora_env,
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
    tools_to_compare,
    write_toy,
)

TARGET_10K = 8.0


def command(tool: str, grid: str) -> list[str]:
    if tool == "gridman":
        return gridman_cmd("grid", grid, "--dry-run", "--init")
    return dora_cmd("grid", grid, "--dry_run", "--init")


def env_for(tool: str, xp_dir: Path) -> dict[str, str]:
    return gridman_env(xp_dir) if tool == "gridman" else dora_env(xp_dir)


def count_xps(xp_dir: Path) -> int:
    xps = xp_dir / "xps"
    return sum(1 for _ in xps.iterdir()) if xps.is_dir() else 0


def bench_size(
    root: Path, work: Path, size: int, runs: int, warmup: int, tools: tuple[str, ...]
) -> dict[tuple[str, str], Stats]:
    """(case, tool) -> stats for one grid size; case is "fresh" or "existing".

    Every fresh run gets a new folder; none is deleted here (deleting slows later creations)."""
    grid = GRID_OF_SIZE[size]
    fresh: dict[str, list[Run]] = {t: [] for t in tools}
    kept: dict[str, Path] = {}
    for i in range(warmup + runs):
        for tool in tools:
            xp_dir = fresh_dir(work, f"{tool}-{size}")
            run = measure(command(tool, grid), root, env_for(tool, xp_dir))
            if i >= warmup:
                fresh[tool].append(run)
            found = count_xps(xp_dir)
            if found != size:
                raise RuntimeError(f"{tool} initialised {found} XP folders, expected {size}")
            kept[tool] = xp_dir
    existing: dict[str, list[Run]] = {t: [] for t in tools}
    for i in range(warmup + runs):
        for tool in tools:
            run = measure(command(tool, grid), root, env_for(tool, kept[tool]))
            if i >= warmup:
                existing[tool].append(run)
    out = {}
    for tool in tools:
        out[("fresh", tool)] = Stats.of(fresh[tool])
        out[("existing", tool)] = Stats.of(existing[tool])
    return out


def fmt(stats: Optional[Stats]) -> tuple[str, str, str, str]:
    if stats is None:
        return ("-", "-", "-", "-")
    return (f"{stats.wall:.3f}", f"{stats.user:.3f}", f"{stats.sys:.3f}", f"{stats.peak_mib:.0f}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                        choices=sorted(GRID_OF_SIZE), help="grid sizes (XPs)")  # fmt: skip
    parser.add_argument("--runs-1k", type=int, default=5, help="timed runs below 10,000 XPs")
    parser.add_argument("--runs-10k", type=int, default=3, help="timed runs at 10,000 XPs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--no-dora", action="store_true", help="gridman's figures only")
    parser.add_argument("--xp-root", type=Path, default=None,
                        help="where XP folders go (default: the temporary folder)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=SETTLE_S,
                        help="seconds to wait before timing (see _toy.SETTLE_S)")  # fmt: skip
    args = parser.parse_args(argv)

    print(f"Machine: {machine_line()}")
    tools = tools_to_compare(args.no_dora)
    with tempfile.TemporaryDirectory(prefix="gridman-bench-plan-") as tmp:
        root = write_toy(Path(tmp) / "toy-project")
        work = Path(tempfile.mkdtemp(prefix="gridman-bench-plan-", dir=args.xp_root or tmp))
        print(f"Toy project: {root} (cwd of every command)")
        print(f"XP folders under {work} ({fs_type(work)})")
        for tool in tools:
            var = "GRIDMAN_DIR" if tool == "gridman" else "TOY_OUT"
            shown = " ".join(Path(a).name if i == 0 else a
                             for i, a in enumerate(command(tool, "G")))  # fmt: skip
            print(f"  {tool}: {var}=<dir> {shown}")
        rows = []
        ratios: dict[tuple[int, str], float] = {}
        settle(args.settle)
        for size in args.sizes:
            runs = args.runs_10k if size >= 10_000 else args.runs_1k
            before = loadavg()
            print(f"\n{size:,} XPs (grid {GRID_OF_SIZE[size]}), {runs} runs after "
                  f"{args.warmup} warm-up, load {before} ...", flush=True)  # fmt: skip
            result = bench_size(root, work, size, runs, args.warmup, tools)
            print(f"  done, load {loadavg()}")
            for case in ("fresh", "existing"):
                ours = result[(case, "gridman")]
                theirs = result.get((case, "dora"))
                ratio = theirs.wall / ours.wall if theirs else None
                if ratio is not None:
                    ratios[(size, case)] = ratio
                user = f"{theirs.user / ours.user:.1f}x" if theirs else "-"
                rows.append([
                    f"{size:,}", "(a) fresh" if case == "fresh" else "(b) existing",
                    *fmt(ours), *fmt(theirs), f"{ratio:.1f}x" if ratio else "-", user,
                ])  # fmt: skip
                walls = " ".join(f"{w:.2f}" for w in ours.walls)
                extra = f"; dora {' '.join(f'{w:.2f}' for w in theirs.walls)}" if theirs else ""
                print(f"  {case}: gridman walls {walls}{extra}")
        headers = ["XPs", "case", "gridman wall s", "user s", "sys s", "MiB", "Dora wall s",
                   "user s", "sys s", "MiB", "Dora/gridman wall", "user"]  # fmt: skip
        remove(work)
        print("\n`grid G --dry-run --init`, medians (peak RSS: largest of the runs):\n")
        print(table(headers, rows))
        print(f"\nLoad average at the end: {loadavg()}")
        for (size, case), ratio in ratios.items():
            if size >= 10_000:
                verdict = "PASS" if ratio >= TARGET_10K else "MISS"
                print(f"{verdict}: {case} at {size:,} XPs, Dora/gridman {ratio:.1f}x "
                      f"(target >= {TARGET_10K:.0f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
