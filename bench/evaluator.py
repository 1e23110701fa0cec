"""The evaluator against bare ``concurrent.futures``: 200 trivial and 200 x 10 ms evaluations on
``thread`` and ``process`` with 2 workers (issue 6). Target: gridman <= 1.2x bare.

    .venv/bin/python bench/evaluator.py [--n 200] [--runs 7] [--warmup 1] [--json]

Side by side in the same run, interleaved (bare, gridman, bare, gridman...), two measures:

- **in-process**: from creating the pool (``ThreadPoolExecutor(2)``/``ProcessPoolExecutor(2)``
  vs ``Evaluator.create(run, method, {"num_workers": 2})``) to its shutdown, every result
  gathered (``submit`` of each config then ``result()`` of each future, vs ``submit(configs)``
  then ``gather("ALL")``), imports already done: the evaluator's own overhead;
- **whole process**: ``python bench/evaluator.py --child SYSTEM METHOD WORK`` timed from outside
  (``_timing.time_command``): interpreter start, imports (``concurrent.futures`` vs
  ``gridman.evaluator``), pool start-up and teardown included, the way the issue quotes
  DeepHyper (1.4-1.8 s for 200 trivial evaluations, 1.5 s of it importing).

Medians of ``--runs`` runs after ``--warmup``; the run function is ``x * 2`` (trivial) or
``time.sleep(0.01)`` (10 ms). With 2 workers the ideal for 200 x 10 ms is 1.0 s.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

# A --child run (the whole-process measure) imports only the modules above, then just what its
# system uses (concurrent.futures or gridman.evaluator): the rest is imported inside functions.

WORKS = ("trivial", "sleep10ms")
METHODS = ("thread", "process")
TARGET = 1.2


def bare_trivial(config: dict[str, Any]) -> Any:
    return config["x"] * 2


def bare_sleep(config: dict[str, Any]) -> Any:
    time.sleep(0.01)
    return config["x"]


def run_trivial(job: Any) -> Any:
    return job["x"] * 2


def run_sleep(job: Any) -> Any:
    time.sleep(0.01)
    return job["x"]


def bare(method: str, work: str, n: int) -> float:
    """Seconds from pool creation to shutdown, all n results collected."""
    fn: Callable[[dict[str, Any]], Any] = bare_trivial if work == "trivial" else bare_sleep
    start = time.perf_counter()
    pool: Any
    if method == "thread":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(2)
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(2)
    with pool:
        futures = [pool.submit(fn, {"x": i}) for i in range(n)]
        results = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    assert len(results) == n
    return seconds


def gridman(method: str, work: str, n: int) -> float:
    """The same with the Evaluator."""
    from gridman.evaluator import Evaluator

    fn = run_trivial if work == "trivial" else run_sleep
    start = time.perf_counter()
    with Evaluator.create(fn, method=method, method_kwargs={"num_workers": 2}) as evaluator:
        evaluator.submit([{"x": i} for i in range(n)])
        jobs = evaluator.gather("ALL")
    seconds = time.perf_counter() - start
    assert len(jobs) == n and not any(job.failed for job in jobs)
    return seconds


SYSTEMS = {"bare": bare, "gridman": gridman}


def in_process(n: int, runs: int, warmup: int) -> dict[tuple[str, str, str], float]:
    import statistics

    medians = {}
    for work in WORKS:
        for method in METHODS:
            samples: dict[str, list[float]] = {name: [] for name in SYSTEMS}
            for index in range(warmup + runs):
                for name, measure in SYSTEMS.items():
                    seconds = measure(method, work, n)
                    if index >= warmup:
                        samples[name].append(seconds)
            for name, values in samples.items():
                medians[(work, method, name)] = statistics.median(values)
    return medians


def whole_process(n: int, runs: int, warmup: int) -> dict[tuple[str, str, str], float]:
    from pathlib import Path

    from _timing import bench_command

    medians = {}
    script = str(Path(__file__).resolve())
    for work in WORKS:
        for method in METHODS:
            for name in SYSTEMS:
                argv = [sys.executable, script, "--child", name, method, work, str(n)]
                summary = bench_command(argv, runs, warmup=warmup)
                medians[(work, method, name)] = summary.median
    return medians


def report(n: int, inner: dict[Any, float], outer: dict[Any, float], load: Any) -> list[str]:
    from _timing import load_line, machine_info, machine_line, markdown_table

    rows = []
    verdicts = []
    for work in WORKS:
        for method in METHODS:
            b_in, g_in = inner[(work, method, "bare")], inner[(work, method, "gridman")]
            b_out, g_out = outer[(work, method, "bare")], outer[(work, method, "gridman")]
            rows.append([
                f"{n} x {work}", method,
                f"{1000 * b_in:.1f}", f"{1000 * g_in:.1f}", f"{g_in / b_in:.2f}",
                f"{1000 * b_out:.0f}", f"{1000 * g_out:.0f}", f"{g_out / b_out:.2f}",
            ])  # fmt: skip
            for measure, ratio in (("in-process", g_in / b_in), ("whole process", g_out / b_out)):
                verdict = "PASS" if ratio <= TARGET else "MISS"
                verdicts.append(f"{work} {method} {measure}: {ratio:.2f}x -> {verdict}")
    headers = [
        "work", "method", "bare in-proc ms", "gridman in-proc ms", "ratio",
        "bare whole ms", "gridman whole ms", "ratio",
    ]  # fmt: skip
    lines = [f"Machine: {machine_line(machine_info())}", load_line(load.share), ""]
    lines += markdown_table(headers, rows)
    lines += ["", f"target: gridman <= {TARGET}x bare"] + [f"- {v}" for v in verdicts]
    return lines


def main() -> int:
    import argparse
    import json

    from _timing import ForeignLoad, machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="evaluations per run")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object instead")
    args = parser.parse_args()
    with ForeignLoad() as load:
        inner = in_process(args.n, args.runs, args.warmup)
        outer = whole_process(args.n, args.runs, args.warmup)
    if args.json:
        data = {
            "machine": machine_info(),
            "foreign_load": load.share,
            "in_process_s": {"/".join(k): round(v, 5) for k, v in inner.items()},
            "whole_process_s": {"/".join(k): round(v, 5) for k, v in outer.items()},
        }
        print(json.dumps(data, indent=1))
        return 0
    print("\n".join(report(args.n, inner, outer, load)))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:  # python bench/evaluator.py --child SYSTEM METHOD WORK N
        _, _, name, method, work, count = sys.argv
        SYSTEMS[name](method, work, int(count))
        sys.exit(0)
    sys.path.insert(0, __file__.rsplit("/", 1)[0] if "/" in __file__ else ".")  # for _timing
    sys.exit(main())
