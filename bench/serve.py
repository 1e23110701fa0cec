"""The web view at scale: time to the first table in a real browser, the server's memory, curves.

    python bench/serve.py [--sizes 1000 10000] [--runs 5] [--curves-xps 1000]
                          [--curves-entries 10000] [--no-curves] [--json] [--work DIR]

For each size, a project of that many XPs (lr x seed, 10-entry histories, every XP completed;
gridman/testing/webproject.py) is served by a real ``gridman serve`` child process on
127.0.0.1, and headless chromium (Debian's, through Playwright) opens ``/grid/NAME`` ``--runs``
times, a fresh browser context each (no cache, no cookie). The first load, which fills the
server's row cache, is reported apart; of the following loads the median of:

- ``firstTableAt``: the page's own ``performance.now()`` when its first table was in the DOM,
  i.e. milliseconds since the navigation started (``performance.timeOrigin``);
- wall: from just before ``page.goto`` to the moment the benchmark saw that table (polled at
  every animation frame), which adds the browser's IPC.

Then the server's peak RSS (``VmHWM`` in /proc) after those loads. With curves (default), a
project of ``--curves-xps`` XPs whose histories hold ``--curves-entries`` entries each is
served; the benchmark opens its grid page (every XP's curve of the main metric, downsampled by
the server) once on the fresh server (with what its two JSON requests took, from the page's
resource timings: the rows, then the curves), then again in a fresh context (the server's
caches warm), switches the chart's metric back and forth (fetch + draw, median; and the page's
own ``drawMs`` of the canvas draw alone), groups the curves by seed (mean ± std bands, computed
in the page) and reads the server's peak RSS. Targets (issue 17): first table of 10,000 XPs <= 2
s, server <= 200 MiB. Prints a Markdown table (or one JSON object with ``--json``), exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine_info, machine_line, markdown_table

from gridman.testing.browser import ServeProcess, launch_browser, peak_rss_mib, wait_view
from gridman.testing.webproject import WebProject, make_web_project

FIRST_TABLE_TARGET_S = 2.0
SERVER_TARGET_MIB = 200.0
FIRST_TABLE = "() => window.gridman && window.gridman.firstTableAt > 0"


def grid_shape(xps: int) -> tuple[int, int]:
    """(learning rates, seeds) whose product is ``xps``, as square as divides evenly."""
    seeds = max(d for d in range(1, int(xps**0.5) + 1) if xps % d == 0)
    return xps // seeds, seeds


def build(work: Path, xps: int, entries: int, name: str) -> tuple[WebProject, float]:
    n_lr, n_seed = grid_shape(xps)
    start = time.perf_counter()
    project = make_web_project(work / name, n_lr, n_seed, entries=entries, grid=name, logs=False)
    return project, time.perf_counter() - start


def load_once(browser: Any, url: str) -> tuple[float, float]:
    """Open ``url`` in a fresh context: (firstTableAt in s, benchmark-side wall time in s)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_function(FIRST_TABLE, polling="raf", timeout=120_000)
        wall = time.perf_counter() - start
        return page.evaluate("window.gridman.firstTableAt") / 1000, wall
    finally:
        context.close()


def bench_size(browser: Any, work: Path, xps: int, runs: int) -> dict[str, Any]:
    project, built = build(work, xps, 10, f"g{xps}")
    with ServeProcess(project.root) as server:
        url = f"{server.base}/grid/{project.grid}"
        first = load_once(browser, url)
        samples = [load_once(browser, url) for _ in range(runs)]
        peak = peak_rss_mib(server.pid)
    return {
        "xps": xps,
        "build_s": round(built, 2),
        "first_load": {"first_table_s": round(first[0], 3), "wall_s": round(first[1], 3)},
        "first_table_s": round(statistics.median(s[0] for s in samples), 3),
        "wall_s": round(statistics.median(s[1] for s in samples), 3),
        "runs": runs,
        "server_peak_mib": round(peak, 1),
    }


def switch_metric(page: Any, metric: str, lines: int) -> float:
    """Choose ``metric`` in the chart and wait until every line is drawn: seconds."""
    start = time.perf_counter()
    page.select_option("select#metric", metric)
    page.wait_for_function(
        "([m, n]) => window.gridman.curves.metric === m && window.gridman.curves.lines === n",
        arg=[metric, lines], polling="raf", timeout=300_000,
    )  # fmt: skip
    return time.perf_counter() - start


def open_curves_page(browser: Any, url: str, xps: int) -> tuple[Any, float]:
    """Open the grid page in a fresh context and wait for every XP's line: (page, seconds)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url, timeout=600_000)
    wait_view(page, "grid", timeout_ms=600_000)
    page.wait_for_function(f"() => window.gridman.curves.lines === {xps}", timeout=600_000)
    return page, time.perf_counter() - start


#: The page's own timings of its JSON requests: (path and query, seconds, bytes).
API_TIMINGS = """() => performance.getEntriesByType('resource')
    .filter(e => e.name.includes('/api/'))
    .map(e => [new URL(e.name).pathname + new URL(e.name).search, e.duration / 1000,
               e.encodedBodySize])"""


def bench_curves(browser: Any, work: Path, xps: int, entries: int) -> dict[str, Any]:
    """Curves of ``xps`` XPs x ``entries`` entries: the first (cold) page open and what its
    JSON requests took, a second open (the server's caches warm), metric and group switches."""
    project, built = build(work, xps, entries, "long")
    with ServeProcess(project.root) as server:
        url = f"{server.base}/grid/{project.grid}"
        page, cold = open_curves_page(browser, url, xps)
        requests = page.evaluate(API_TIMINGS)
        page.context.close()
        page, warm = open_curves_page(browser, url, xps)
        main = page.evaluate("window.gridman.curves.metric")
        other = "train.loss" if main != "train.loss" else "valid.acc"
        switches, draws = [], []
        for metric in [other, main] * 2:
            switches.append(switch_metric(page, metric, xps))
            draws.append(page.evaluate("window.gridman.drawMs || 0") / 1000)  # canvas only
        start = time.perf_counter()
        page.select_option("select#group-by", "seed")
        page.wait_for_function("() => window.gridman.curves.bands > 0", polling="raf")
        grouped = time.perf_counter() - start
        page.context.close()
        peak = peak_rss_mib(server.pid)
    rows = [r for r in requests if "/curves?" not in r[0]]
    curves = [r for r in requests if "/curves?" in r[0]]
    return {
        "xps": xps,
        "entries": entries,
        "build_s": round(built, 2),
        "open_cold_s": round(cold, 3),
        "rows_cold_s": round(rows[0][1], 3) if rows else None,
        "curves_cold_s": round(curves[0][1], 3) if curves else None,
        "curves_mib": round(curves[0][2] / 2**20, 1) if curves else None,
        "open_warm_s": round(warm, 3),
        "switch_s": round(statistics.median(switches), 3),
        "switches": [round(s, 3) for s in switches],
        "draw_s": round(statistics.median(draws), 3),
        "group_s": round(grouped, 3),
        "server_peak_mib": round(peak, 1),
    }


def verdicts(result: dict[str, Any]) -> list[str]:
    lines = []
    for size in result["sizes"]:
        ok = size["first_table_s"] <= FIRST_TABLE_TARGET_S
        verdict = "PASS" if ok else "MISS"
        lines.append(f"first table, {size['xps']:,} XPs: {size['first_table_s']:.3f} s "
                     f"(target <= {FIRST_TABLE_TARGET_S} s): {verdict}")  # fmt: skip
    peaks = [s["server_peak_mib"] for s in result["sizes"]]
    if result.get("curves"):
        peaks.append(result["curves"]["server_peak_mib"])
    ok = max(peaks) <= SERVER_TARGET_MIB
    lines.append(f"server peak RSS: {max(peaks):.1f} MiB (target <= {SERVER_TARGET_MIB:.0f} "
                 f"MiB): {'PASS' if ok else 'MISS'}")  # fmt: skip
    return lines


def markdown(result: dict[str, Any]) -> list[str]:
    rows = [
        [f"{s['xps']:,} XPs", f"{s['first_load']['first_table_s']:.3f}",
         f"{s['first_table_s']:.3f}", f"{s['wall_s']:.3f}", f"{s['server_peak_mib']:.1f}"]
        for s in result["sizes"]
    ]  # fmt: skip
    out = [f"machine: {machine_line(result['machine'])}", ""]
    out += markdown_table(["grid page", "first load: first table (s)",
                           f"median of {result['runs']}: first table (s)", "median wall (s)",
                           "server peak RSS (MiB)"], rows)  # fmt: skip
    curves = result.get("curves")
    if curves:
        out += ["", *markdown_table(
            ["curves", "first open (s)", "of which rows / curves JSON (s)", "curves JSON (MiB)",
             "second open (s)", "metric switch (s)", "of which draw (s)", "group by seed (s)",
             "server peak (MiB)"],
            [[f"{curves['xps']:,} XPs x {curves['entries']:,} entries",
              f"{curves['open_cold_s']:.3f}",
              f"{curves['rows_cold_s']} / {curves['curves_cold_s']}", f"{curves['curves_mib']}",
              f"{curves['open_warm_s']:.3f}", f"{curves['switch_s']:.3f}",
              f"{curves['draw_s']:.3f}",
              f"{curves['group_s']:.3f}", f"{curves['server_peak_mib']:.1f}"]],
        )]  # fmt: skip
    return [*out, "", *verdicts(result)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--curves-xps", type=int, default=1000)
    parser.add_argument("--curves-entries", type=int, default=10000)
    parser.add_argument("--no-curves", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--work", type=Path, help="where projects go (default: a temp folder)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {"machine": machine_info(), "runs": args.runs, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="gridman-serve-bench-", dir=args.work) as tmp:
        work = Path(tmp)
        with sync_playwright() as playwright:
            browser = launch_browser(playwright)
            result["browser"] = browser.version
            for xps in args.sizes:
                result["sizes"].append(bench_size(browser, work, xps, args.runs))
            if not args.no_curves:
                result["curves"] = bench_curves(browser, work, args.curves_xps,
                                                args.curves_entries)  # fmt: skip
            browser.close()
    result["verdicts"] = verdicts(result)
    print(json.dumps(result, indent=2) if args.json else "\n".join(markdown(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
