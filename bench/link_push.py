"""Cost of ``Link.push_metrics`` over a long history, against rewriting the JSON list each push.

    python bench/link_push.py [--pushes N] [--baseline-pushes M] [--dir PARENT] [--json]

Pushes N (default 10,000) nested metric dicts through ``gridman.core.link.Link`` into a temporary
folder (journal append per push, snapshot compaction when the journal is as long as the
snapshot, fsync'd snapshots), closes it, checks that ``load_history`` reads every entry back,
and reports the total time, µs per push, per-push percentiles and the final file sizes.

The baseline is Dora's ``Link``: append to the in-memory list, then ``json.dump(history, f,
indent=2)`` to ``history.json.tmp`` and ``os.rename`` it over ``history.json``, on every push (no
fsync). Its cost grows with the history, so the total is quadratic: at 10,000 pushes it takes
minutes. With ``--baseline-pushes M`` < N the baseline runs M pushes and its N-push total is
extrapolated from a linear fit of the per-push time against the history length.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import ForeignLoad, load_line, machine_info, machine_line, markdown_table, ratio_text

from gridman.core.link import HISTORY, JOURNAL, Link, load_history

Push = Callable[[Mapping[str, Any]], None]


def make_entries(count: int) -> list[dict[str, Any]]:
    """Deterministic nested metrics, like a training loop's (about 200 bytes of JSON each)."""
    entries = []
    for i in range(count):
        decay = 1.0 / (1.0 + 0.01 * i)
        entries.append(
            {
                "epoch": i,
                "train": {"loss": 2.3 * decay, "acc": 1.0 - 0.9 * decay, "grad_norm": 5.0 * decay},
                "valid": {"loss": 2.4 * decay, "acc": 1.0 - 0.95 * decay, "best": i % 7 == 0},
                "lr": 0.1 * decay,
                "time": {"epoch_s": 12.5 + (i % 13) * 0.1, "samples_per_s": 4096.0 + i % 97},
            }
        )
    return entries


def timed_pushes(push: Push, entries: Sequence[Mapping[str, Any]], label: str) -> list[float]:
    """Per-push wall seconds (progress on stderr every 10% of the way)."""
    latencies = []
    step = max(1, len(entries) // 10)
    start = time.perf_counter()
    for index, entry in enumerate(entries, 1):
        before = time.perf_counter()
        push(entry)
        latencies.append(time.perf_counter() - before)
        if index % step == 0:
            elapsed = time.perf_counter() - start
            print(f"  {label}: {index} pushes, {elapsed:.1f} s", file=sys.stderr, flush=True)
    return latencies


def bench_link(entries: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, Any]:
    link = Link(folder)
    start, cpu = time.perf_counter(), time.process_time()
    latencies = timed_pushes(link.push_metrics, entries, "gridman Link")
    link.close()  # the final fsync of the journal is part of the cost
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    loaded = load_history(folder)
    if loaded != list(entries):
        sys.exit(f"load_history read back {len(loaded)} entries, not the {len(entries)} pushed")
    return _figures(latencies, total, cpu, folder, [HISTORY, JOURNAL])


def _jsonable(value: Any) -> Any:
    """Dora's ``utils.jsonable``: a recursive copy of the metrics (no tensors here)."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def bench_rewrite(entries: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, Any]:
    """Dora's approach: the whole list dumped to a temporary file and renamed, every push."""
    history: list[Any] = []
    path = folder / HISTORY
    tmp = str(path) + ".tmp"

    def push(metrics: Mapping[str, Any]) -> None:
        history.append(_jsonable(metrics))
        with open(tmp, "w") as handle:
            json.dump(history, handle, indent=2)
        os.rename(tmp, path)

    folder.mkdir(parents=True, exist_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    latencies = timed_pushes(push, entries, "rewrite baseline")
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    return _figures(latencies, total, cpu, folder, [HISTORY])


def _figures(
    latencies: list[float], total: float, cpu: float, folder: Path, files: list[str]
) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "pushes": len(latencies),
        "total_s": round(total, 4),
        "cpu_s": round(cpu, 4),
        "us_per_push": round(total / len(latencies) * 1e6, 1),
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(0.99 * (len(ordered) - 1))] * 1e6, 1),
        "max_ms": round(ordered[-1] * 1e3, 2),
        "bytes": {name: (folder / name).stat().st_size for name in files},
        "_latencies": latencies,
    }


def extrapolate(latencies: Sequence[float], count: int) -> float:
    """Total seconds of ``count`` pushes, fitting per-push time = a + b * history length."""
    xs = range(len(latencies))
    fit = statistics.linear_regression(xs, latencies)
    return count * fit.intercept + fit.slope * count * (count - 1) / 2


def run_benchmark(pushes: int, baseline_pushes: int, parent: Optional[Path]) -> dict[str, Any]:
    machine = machine_info()  # taken before the runs: the date is when they started
    entries = make_entries(max(pushes, baseline_pushes))
    with tempfile.TemporaryDirectory(prefix="gridman-link-", dir=parent) as tmp:
        with ForeignLoad() as link_load:
            link = bench_link(entries[:pushes], Path(tmp) / "link")
        with ForeignLoad() as rewrite_load:
            rewrite = bench_rewrite(entries[:baseline_pushes], Path(tmp) / "rewrite")
    rewrite_total = rewrite["total_s"]
    if baseline_pushes < pushes:
        rewrite_total = round(extrapolate(rewrite["_latencies"], pushes), 1)
    report = {
        "machine": machine,
        "folder_parent": str(parent or tempfile.gettempdir()),
        "entry_bytes": len(json.dumps(entries[-1])),
        "link": link,
        "rewrite": rewrite,
        "rewrite_total_at_pushes_s": rewrite_total,
        "rewrite_extrapolated": baseline_pushes < pushes,
        "speedup": round(rewrite_total / link["total_s"], 1),
        "foreign_load": {"link": link_load.share, "rewrite": rewrite_load.share},
    }
    for part in (link, rewrite):
        del part["_latencies"]
    return report


def _row(name: str, figures: Mapping[str, Any]) -> list[str]:
    sizes = ", ".join(f"{n} {b / 1024:.0f} KiB" for n, b in figures["bytes"].items())
    return [
        name,
        str(figures["pushes"]),
        f"{figures['total_s']:.3f}",
        f"{figures['cpu_s']:.3f}",
        f"{figures['us_per_push']:.1f}",
        f"{figures['p50_us']:.1f}",
        f"{figures['p99_us']:.1f}",
        f"{figures['max_ms']:.2f}",
        sizes,
    ]


def _cpu_line(link: Mapping[str, Any], rewrite: Mapping[str, Any]) -> list[str]:
    if rewrite["pushes"] != link["pushes"]:
        return []  # CPU time is not extrapolated
    ours, theirs = link["cpu_s"], rewrite["cpu_s"]
    return [f"CPU time: {ours:.3f} s vs {theirs:.1f} s = {ratio_text(ours, theirs)}"]


def render(report: Mapping[str, Any]) -> str:
    link, rewrite = report["link"], report["rewrite"]
    pushes, total = link["pushes"], report["rewrite_total_at_pushes_s"]
    how = "extrapolated" if report["rewrite_extrapolated"] else "measured"
    headers = ["approach", "pushes", "total s", "CPU s", "µs/push", "p50 µs", "p99 µs", "max ms"]
    headers.append("files")
    rows = [_row("gridman Link", link), _row("rewrite list (Dora)", rewrite)]
    lines = [
        f"machine: {machine_line(report['machine'])}",
        f"folder: a temporary folder under {report['folder_parent']}; "
        f"one entry is {report['entry_bytes']} bytes of compact JSON",
        "",
        *markdown_table(headers, rows),
        "",
        f"{pushes} pushes: gridman Link {link['total_s']:.3f} s vs rewriting the list "
        f"{total:.1f} s ({how}) = {ratio_text(link['total_s'], total)}",
        *_cpu_line(link, rewrite),
        *(f"{name}: {load_line(share)}" for name, share in report["foreign_load"].items()),
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=10_000, help="pushes through Link")
    parser.add_argument(
        "--baseline-pushes", type=int, default=None, help="pushes of the baseline (default: same)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    pushes = max(1, args.pushes)
    baseline = max(2, min(args.baseline_pushes or pushes, pushes))
    report = run_benchmark(pushes, baseline, args.dir)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
