"""The grid table with metrics: 10,000 XPs with 100-entry histories, gridman against Dora.

    python bench/grid_table.py [--xps 10000] [--entries 100] [--runs 3] [--no-dora]
                               [--xp-root DIR] [--settle 0] [--cold]

In a temporary copy of the toy project of Dora's baseline (bench/_toy.py), each tool first
initialises the grid's XP folders (``grid G --dry-run --init``, untimed; both give the same
signatures, which is checked), then every XP folder gets the same ``history.json``: a JSON list
of ``--entries`` nested entries ``{"train": {"loss": x}, "valid": {"acc": y}}``, the shape users
push, written with ``indent=2`` (byte-identical for both tools, values derived from the
signature). gridman reads ``history.json`` as its snapshot
(no journal). Then, side by side and interleaved after one warm-up (whose output is checked):

- ``gridman grid G --dry-run --no-monitor`` (``GRIDMAN_DIR`` = its folder)
- ``dora -P toy grid G --dry_run`` (``TOY_OUT`` = its folder)

each of which loads every history and prints the table (epoch and last loss per XP) once.
Reported: median wall, user and system CPU seconds, peak RSS. Targets: gridman >= 6x faster
than Dora and <= 150 MiB. XP folders go under ``--xp-root`` (default: the temporary folder).

gridman keeps the rows of unchanged histories in ``<dir>/grids/G/table-cache.json`` (see
gridman/results/rowcache.py), written by the warm-up, so the timed runs show the table of a grid
whose histories did not change since the last look. ``--cold`` deletes that file before every timed
gridman run (untimed): the table of a grid whose every history changed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy import (
    GRID_OF_SIZE,
    Run,
    Stats,
    dora_cmd,
    dora_env,
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

TARGET_RATIO = 6.0
TARGET_MIB = 150.0


def init_command(tool: str, grid: str) -> list[str]:
    if tool == "gridman":
        return gridman_cmd("grid", grid, "--dry-run", "--init")
    return dora_cmd("grid", grid, "--dry_run", "--init")


def table_command(tool: str, grid: str) -> list[str]:
    if tool == "gridman":
        return gridman_cmd("grid", grid, "--dry-run", "--no-monitor")
    return dora_cmd("grid", grid, "--dry_run")


def env_for(tool: str, xp_dir: Path) -> dict[str, str]:
    return gridman_env(xp_dir) if tool == "gridman" else dora_env(xp_dir)


def history_bytes(sig: str, entries: int) -> bytes:
    """The same history for the same XP, whichever tool reads it."""
    base = 0.1 + (int(sig, 16) % 1000) / 1000
    # nested, the shape users push (bench/_toy.py's explorer reads train.loss)
    history = [
        {"train": {"loss": base / (1 + k)}, "valid": {"acc": 1 - base / (1 + k)}}
        for k in range(entries)
    ]
    return json.dumps(history, indent=2).encode()


def prepare(root: Path, xp_dir: Path, tool: str, grid: str, entries: int) -> list[str]:
    """Initialise the XP folders, write every history; returns the sorted signatures."""
    done = subprocess.run(init_command(tool, grid), cwd=root, env=env_for(tool, xp_dir),
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{tool} --init failed:\n{done.stderr[-2000:]}")
    sigs = sorted(p.name for p in (xp_dir / "xps").iterdir())
    for sig in sigs:
        (xp_dir / "xps" / sig / "history.json").write_bytes(history_bytes(sig, entries))
    return sigs


def check_output(tool: str, root: Path, xp_dir: Path, grid: str, sigs: list[str]) -> str:
    """Run the table once (the warm-up) and check that it shows every XP with its metrics."""
    done = subprocess.run(table_command(tool, grid), cwd=root, env=env_for(tool, xp_dir),
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{tool} table failed:\n{done.stderr[-2000:]}")
    wanted = set(sigs[:50])
    lines = [
        line
        for line in done.stdout.splitlines()
        if "|" in line and any(word in wanted for word in line.split())
    ]
    if len(lines) < min(50, len(sigs)):
        raise RuntimeError(f"{tool}: table rows missing:\n{done.stdout[-2000:]}")
    return lines[0]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xps", type=int, default=10000, choices=sorted(GRID_OF_SIZE),
                        help="grid size")  # fmt: skip
    parser.add_argument("--entries", type=int, default=100, help="history entries per XP")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--no-dora", action="store_true", help="gridman's figures only")
    parser.add_argument("--xp-root", type=Path, default=None,
                        help="where XP folders go (default: the temporary folder)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to wait before timing (see _toy.SETTLE_S)")  # fmt: skip
    parser.add_argument("--cold", action="store_true",
                        help="delete gridman's row cache before each timed run")  # fmt: skip
    args = parser.parse_args(argv)

    print(f"Machine: {machine_line()}")
    tools = tools_to_compare(args.no_dora)
    grid = GRID_OF_SIZE[args.xps]
    with tempfile.TemporaryDirectory(prefix="gridman-bench-table-") as tmp:
        root = write_toy(Path(tmp) / "toy-project")
        work = Path(tempfile.mkdtemp(prefix="gridman-bench-table-", dir=args.xp_root or tmp))
        dirs = {tool: work / f"xps-{tool}" for tool in tools}
        print(f"XP folders under {work} ({fs_type(work)})")
        print(f"Toy project: {root}; grid {grid} ({args.xps:,} XPs), "
              f"{args.entries} history entries per XP")  # fmt: skip
        sigs = {}
        for tool in tools:
            dirs[tool].mkdir()
            sigs[tool] = prepare(root, dirs[tool], tool, grid, args.entries)
            print(f"  {tool}: {len(sigs[tool]):,} XP folders with history.json in {dirs[tool]}")
        if len(tools) == 2:
            same = sigs["gridman"] == sigs["dora"]
            print(f"  same signatures for both tools: {'yes' if same else 'NO'}")
        for tool in tools:
            var = "GRIDMAN_DIR" if tool == "gridman" else "TOY_OUT"
            shown = " ".join([Path(table_command(tool, grid)[0]).name,
                              *table_command(tool, grid)[1:]])  # fmt: skip
            row = check_output(tool, root, dirs[tool], grid, sigs[tool])
            print(f"  {tool}: {var}=<dir> {shown}\n    e.g. row: {row.strip()!r}")
        settle(args.settle)
        print(f"\n{args.runs} runs after 1 warm-up, load {loadavg()} ...", flush=True)
        runs: dict[str, list[Run]] = {t: [] for t in tools}
        cache = dirs["gridman"] / "grids" / grid / "table-cache.json"
        print(f"  gridman row cache: {'deleted before each run' if args.cold else cache}")
        for _ in range(args.runs):
            for tool in tools:
                if args.cold and tool == "gridman":
                    cache.unlink(missing_ok=True)
                runs[tool].append(measure(table_command(tool, grid), root,
                                          env_for(tool, dirs[tool])))  # fmt: skip
        print(f"  done, load {loadavg()}")
        stats = {t: Stats.of(r) for t, r in runs.items()}
        for tool in tools:
            print(f"  {tool} walls: {' '.join(f'{w:.2f}' for w in stats[tool].walls)}")
        rows = []
        for tool in tools:
            s = stats[tool]
            rows.append([tool, f"{s.wall:.3f}", f"{s.user:.3f}", f"{s.sys:.3f}",
                         f"{s.peak_mib:.0f}"])  # fmt: skip
        remove(work)
        print(f"\nTable of {args.xps:,} XPs x {args.entries} entries, medians:\n")
        print(table(["tool", "wall s", "user s", "sys s", "peak MiB"], rows))
        ours = stats["gridman"]
        print(f"\nLoad average at the end: {loadavg()}")
        if "dora" in stats:
            ratio = stats["dora"].wall / ours.wall
            verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
            print(f"{verdict}: Dora/gridman wall {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x); "
                  f"cpu {stats['dora'].cpu / ours.cpu:.1f}x")  # fmt: skip
        verdict = "PASS" if ours.peak_mib <= TARGET_MIB else "MISS"
        print(f"{verdict}: gridman peak {ours.peak_mib:.0f} MiB (target <= {TARGET_MIB:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
