"""The web view in a real headless browser (issue 17, "Must show"): Debian's chromium through
Playwright, against real ``gridman serve`` processes on 127.0.0.1 and a real report file.

Every expectation is computed apart from the page: signatures and values from the server's
JSON API or the project builder, selections from the CLI (``gridman grid NAME PATTERNS
--dry-run --json``), sorts and brush ranges recomputed in Python. The page's hooks are those
of docs/serve.md ("The page's test hooks"). Without chromium or Playwright these tests skip,
except where GRIDMAN_REQUIRE_BROWSER is set (CI), where they fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gridman.testing.browser import (
    SCREENSHOTS,
    ServeProcess,
    get_json,
    needs_browser,
    screenshot_views,
    wait_view,
)
from gridman.testing.grids import png_size
from gridman.testing.webproject import WebProject, make_web_project, push_metric

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = needs_browser()

#: The small grid: 4 learning rates x 3 seeds; XP 4 runs (the live test pushes to it), XP 11
#: failed (the report exits 1), XP 1 has two attempts (the XP page lists both).
N_LR, N_SEED, ENTRIES = 4, 3, 20
RUNNING, FAILED, RETRIED = 4, 11, 1
GRIDMAN = str(Path(sys.executable).parent / "gridman")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebProject:
    states = {RUNNING: "RUNNING", FAILED: "FAILED"}
    return make_web_project(tmp_path_factory.mktemp("web") / "proj", N_LR, N_SEED,
                            entries=ENTRIES, states=states, attempts={RETRIED: 2},
                            extra_grids={"other": 2})  # fmt: skip


@pytest.fixture(scope="module")
def server(web: WebProject) -> Iterator[ServeProcess]:
    with ServeProcess(web.root) as process:
        yield process


def api(server: ServeProcess, path: str) -> Any:
    return get_json(f"{server.base}{path}")


def shown_sigs(page: Page) -> list[str]:
    """The signatures of the table's rows in the DOM, top to bottom."""
    return page.eval_on_selector_all(
        "table#xp-table tbody tr[data-sig]", "rows => rows.map(r => r.dataset.sig)"
    )


def open_grid(page: Page, server: ServeProcess, name: str) -> None:
    page.goto(f"{server.base}/grid/{name}")
    wait_view(page, "grid")
    page.wait_for_selector("table#xp-table tbody tr[data-sig]")


def row_count(page: Page) -> tuple[int, int]:
    """``#row-count`` (``N of M XPs``) as (N, M)."""
    numbers = re.findall(r"\d[\d,]*", page.inner_text("#row-count"))
    assert len(numbers) >= 2, page.inner_text("#row-count")
    shown, total = (int(n.replace(",", "")) for n in numbers[:2])
    return shown, total


def apply_pattern(page: Page, text: str) -> None:
    """Type a pattern and apply it with Enter, then wait until the table follows it."""
    page.fill("input#pattern", text)
    page.press("input#pattern", "Enter")
    page.wait_for_function(
        """() => {
            const rows = [...document.querySelectorAll('table#xp-table tbody tr[data-sig]')];
            const vis = window.gridman.visible;
            return rows.length === vis.length && rows.every((r, i) => r.dataset.sig === vis[i]);
        }"""
    )


def cli_selection(web: WebProject, patterns: list[str]) -> list[str]:
    """The signatures ``gridman grid NAME PATTERNS --dry-run --json`` selects (the CLI)."""
    done = subprocess.run([GRIDMAN, "grid", web.grid, *patterns, "--dry-run", "--json"],
                          cwd=web.root, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: the selection holds the failed XP
    return [row["sig"] for row in json.loads(done.stdout)]


def metric_values(server: ServeProcess, grid: str, key: str) -> dict[str, Any]:
    """Each XP's value of metric ``key`` in the server's JSON rows."""
    rows = api(server, f"/api/grid/{grid}")["rows"]
    return {row["sig"]: row["metrics"].get(key) for row in rows}


def canvas_ink(page: Page) -> int:
    """How many pixels of ``canvas#curves`` differ from its top-left pixel (the background)."""
    return page.evaluate(
        """() => {
            const src = document.querySelector('canvas#curves');
            const copy = document.createElement('canvas');
            copy.width = src.width; copy.height = src.height;
            const ctx = copy.getContext('2d');
            ctx.drawImage(src, 0, 0);
            const d = ctx.getImageData(0, 0, copy.width, copy.height).data;
            let n = 0;
            for (let i = 4; i < d.length; i += 4) {
                for (let k = 0; k < 4; k++) if (d[i + k] !== d[k]) { n++; break; }
            }
            return n;
        }"""
    )


# -- grids view ---------------------------------------------------------------------------------
def test_grids_page_lists_the_grids_and_links_to_each(
    page: Page, server: ServeProcess, web: WebProject
) -> None:
    page.goto(f"{server.base}/")
    wait_view(page, "grids")
    names = page.eval_on_selector_all(
        "table#grids tr[data-grid]", "r => r.map(x => x.dataset.grid)"
    )
    assert (
        sorted(names)
        == sorted(web.grids)
        == sorted(g["name"] for g in api(server, "/api/grids")["grids"])
    )
    for name in web.grids:
        page.goto(f"{server.base}/")
        wait_view(page, "grids")
        page.click(f'table#grids tr[data-grid="{name}"] a[href="/grid/{name}"]')
        page.wait_for_url(f"**/grid/{name}")
        wait_view(page, "grid")
        page.wait_for_selector("table#xp-table tbody tr[data-sig]")
        assert shown_sigs(page) == list(web.grids[name].sigs)


# -- grid view: rows, sort, filter ---------------------------------------------------------------
def test_grid_page_shows_every_xp_row(page: Page, server: ServeProcess, web: WebProject) -> None:
    open_grid(page, server, web.grid)
    api_sigs = [row["sig"] for row in api(server, f"/api/grid/{web.grid}")["rows"]]
    assert shown_sigs(page) == api_sigs == list(web.sigs)
    assert len(api_sigs) == N_LR * N_SEED
    assert row_count(page) == (N_LR * N_SEED, N_LR * N_SEED)
    assert page.evaluate("window.gridman.visible") == api_sigs
    assert page.locator("table#xp-table td.best").count() >= 1  # best values are marked


def test_sorting_by_a_metric_reorders_rows_both_ways(
    page: Page, server: ServeProcess, web: WebProject
) -> None:
    open_grid(page, server, web.grid)
    key = "valid.acc"
    values = metric_values(server, web.grid, key)
    ascending = sorted(values, key=lambda sig: values[sig])
    assert ascending != list(web.sigs) and ascending[::-1] != list(web.sigs)  # a real reorder
    header = f'table#xp-table thead th[data-key="{key}"]'
    page.click(header)
    page.wait_for_function("s => window.gridman.visible.join() !== s", arg=",".join(web.sigs))
    first = shown_sigs(page)
    assert first in (ascending, ascending[::-1]), (first, values)
    page.click(header)
    page.wait_for_function("s => window.gridman.visible.join() !== s", arg=",".join(first))
    assert shown_sigs(page) == first[::-1]


def test_pattern_filter_selects_what_the_cli_selects(
    page: Page, server: ServeProcess, web: WebProject
) -> None:
    open_grid(page, server, web.grid)
    for patterns in (["lr=0.002"], ["!seed=1"], ["lr=0.002", "!seed=1"], ["3"], [web.sigs[7][:5]]):
        expected = cli_selection(web, patterns)
        assert 0 < len(expected) < len(web.sigs), patterns
        apply_pattern(page, " ".join(patterns))
        assert shown_sigs(page) == expected, patterns
        assert row_count(page) == (len(expected), len(web.sigs))
    apply_pattern(page, "")
    assert shown_sigs(page) == list(web.sigs)
    page.fill("input#pattern", "nosuchkey=1")
    page.press("input#pattern", "Enter")
    page.wait_for_function("() => document.querySelector('#pattern-error').textContent.trim()")


# -- curves and parallel coordinates ------------------------------------------------------------
def test_curves_one_line_per_visible_xp_and_bands_when_grouped(
    page: Page, server: ServeProcess, web: WebProject
) -> None:
    open_grid(page, server, web.grid)
    main_metric = api(server, f"/api/grid/{web.grid}")["main_metric"]
    assert main_metric
    page.wait_for_function(f"() => window.gridman.curves.lines === {len(web.sigs)}")
    assert page.evaluate("window.gridman.curves.metric") == main_metric
    assert canvas_ink(page) > 500  # lines were drawn, not only the background
    apply_pattern(page, "seed=0")
    page.wait_for_function(f"() => window.gridman.curves.lines === {N_LR}")
    apply_pattern(page, "")
    page.select_option("select#group-by", "seed")  # bands over seeds: one per learning rate
    page.wait_for_function(f"() => window.gridman.curves.bands === {N_LR}")
    page.select_option("select#group-by", "lr")  # bands over learning rates: one per seed
    page.wait_for_function(f"() => window.gridman.curves.bands === {N_SEED}")
    assert canvas_ink(page) > 500
    page.select_option("select#group-by", "")
    page.wait_for_function(f"() => window.gridman.curves.lines === {len(web.sigs)}")


def test_brush_on_a_parallel_axis_filters_the_table(
    page: Page, server: ServeProcess, web: WebProject
) -> None:
    open_grid(page, server, web.grid)
    key = page.evaluate("window.gridman.curves.metric") or page.input_value("select#metric")
    values = metric_values(server, web.grid, key)
    brush = page.locator(f'svg#parcoords g.axis[data-key="{key}"] rect.brush')
    brush.scroll_into_view_if_needed()  # mouse coordinates are the viewport's
    box = brush.bounding_box()
    assert box and box["height"] > 20, box
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 0.25 * box["height"])
    page.mouse.down()
    page.mouse.move(x, box["y"] + 0.45 * box["height"], steps=5)
    page.mouse.move(x, box["y"] + 0.7 * box["height"], steps=5)
    page.mouse.up()
    page.wait_for_function("k => window.gridman.brushes[k]", arg=key)
    lo, hi = sorted(page.evaluate("k => window.gridman.brushes[k]", key))
    expected = [sig for sig in web.sigs if values[sig] is not None and lo <= values[sig] <= hi]
    assert 0 < len(expected) < len(web.sigs), (lo, hi, values)  # the drag kept some, not all
    page.wait_for_function("n => window.gridman.visible.length === n", arg=len(expected))
    assert sorted(shown_sigs(page)) == sorted(expected)
    assert row_count(page) == (len(expected), len(web.sigs))
    page.wait_for_function(f"() => window.gridman.curves.lines === {len(expected)}")
    brush.dblclick()
    page.wait_for_function(f"() => window.gridman.visible.length === {len(web.sigs)}")


# -- XP view -----------------------------------------------------------------------------------
def test_xp_page_shows_argv_attempts_and_log_tail(
    page: Page, server: ServeProcess, web: WebProject
) -> None:
    sig = web.sigs[RETRIED]
    api(server, "/api/grid/sweep")  # the grid is open in the server: the XP page names it
    data = api(server, f"/api/xp/{sig}")
    assert data["grid"] == "sweep"
    page.goto(f"{server.base}/xp/{sig}")
    wait_view(page, "xp")
    argv = page.inner_text("#xp-argv")
    assert data["argv"] and all(str(arg) in argv for arg in data["argv"]), (argv, data["argv"])
    attempts = page.locator("table#xp-attempts tbody tr")
    assert attempts.count() == len(data["attempts_list"]) == 2
    text = page.inner_text("table#xp-attempts")
    assert "1001" in text and "1002" in text and "FAILED" in text and "COMPLETED" in text
    page.wait_for_function("() => document.querySelector('pre#xp-log').textContent.length > 0")
    log = page.inner_text("pre#xp-log")
    assert f"xp {sig} starts" in log and f"epoch {ENTRIES}: acc" in log
    page.wait_for_function("() => window.gridman.curves.lines === 1")
    assert canvas_ink(page) > 100
    page.click("#crumbs a[href^='/grid/sweep']")  # the way back to its grid
    wait_view(page, "grid")
    assert page.locator(f"tbody tr[data-sig='{sig}']").count() == 1


def test_screenshots_of_every_view(
    page: Page, server: ServeProcess, web: WebProject, tmp_path: Path
) -> None:
    paths = screenshot_views(page, server.base, web.grid, web.sigs[RETRIED], tmp_path)
    assert [p.name for p in paths] == list(SCREENSHOTS)
    for path in paths:
        width, height = png_size(path)
        assert width >= 1000 and height >= (100 if path.name == "serve-grids.png" else 600)


# -- live updates (last: they change the project) ------------------------------------------------
def test_a_pushed_metric_appears_without_reload_keeping_sort_and_filter(
    page: Page, server: ServeProcess, web: WebProject
) -> None:
    open_grid(page, server, web.grid)
    key, sig = "valid.acc", web.sigs[RUNNING]
    page.click(f'table#xp-table thead th[data-key="{key}"]')
    apply_pattern(page, "!seed=2")
    sorted_before = shown_sigs(page)
    selected = cli_selection(web, ["!seed=2"])
    assert sorted(sorted_before) == sorted(selected) and sig in selected
    column = page.eval_on_selector_all(
        "table#xp-table thead th[data-key]",
        "(hs, k) => hs.findIndex(h => h.dataset.key === k)",
        key,
    )
    assert column >= 0
    cell = f'table#xp-table tbody tr[data-sig="{sig}"] td:nth-child({column + 1})'
    old_text = page.inner_text(cell)
    polls = page.evaluate("window.gridman.polls")
    url = page.url
    best = max(v for v in metric_values(server, web.grid, key).values() if v is not None)
    push_metric(web.folders[RUNNING], {"train": {"loss": 0.01}, "valid": {"acc": best + 0.05},
                                       "epoch": ENTRIES})  # fmt: skip
    page.wait_for_function(
        "([s, old]) => { const c = document.querySelector(s); return c && c.textContent !== old }",
        arg=[cell, old_text], timeout=15_000,
    )  # fmt: skip
    assert abs(float(page.inner_text(cell)) - (best + 0.05)) < 1e-3
    assert page.evaluate("window.gridman.polls") > polls
    assert page.url == url  # no reload, no navigation
    assert page.input_value("input#pattern") == "!seed=2"  # the filter stayed
    now = shown_sigs(page)
    assert sorted(now) == sorted(selected)
    assert now[0] == sig or now[-1] == sig  # the sort stayed: the new best moved to an end
    assert [s for s in now if s != sig] == [s for s in sorted_before if s != sig]


# -- the report file -----------------------------------------------------------------------------
def test_report_opens_from_disk_with_no_network(
    browser: Any, server: ServeProcess, web: WebProject, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    done = subprocess.run([GRIDMAN, "report", web.grid, "-o", str(out)], cwd=web.root,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stderr  # the grid holds a failed XP, as export says
    assert out.stat().st_size > 0
    context = browser.new_context()
    requested: list[str] = []

    def only_files(route: Any) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            requested.append(route.request.url)
            route.abort()

    context.route("**/*", only_files)
    page = context.new_page()
    page.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "data:")) else requested.append(r.url),
    )
    try:
        page.goto(out.as_uri())
        wait_view(page, "grid")
        page.wait_for_selector("table#xp-table tbody tr[data-sig]")
        assert shown_sigs(page) == [
            row["sig"] for row in api(server, f"/api/grid/{web.grid}")["rows"]
        ]
        page.wait_for_function(f"() => window.gridman.curves.lines === {len(web.sigs)}")
        assert canvas_ink(page) > 500
    finally:
        context.close()
    assert not requested, requested


# -- 10,000 XPs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebProject, ServeProcess]]:
    project = make_web_project(tmp_path_factory.mktemp("big") / "proj", 100, 100, entries=3,
                               grid="big", logs=False)  # fmt: skip
    with ServeProcess(project.root) as process:
        yield project, process


SCROLL_TO_END = """() => {
    const table = document.querySelector('table#xp-table');
    let el = table.parentElement;
    while (el && !(el.scrollHeight > el.clientHeight + 1 &&
                   /(auto|scroll)/.test(getComputedStyle(el).overflowY))) el = el.parentElement;
    el = el || document.scrollingElement;
    el.scrollTop = el.scrollHeight;
    el.dispatchEvent(new Event('scroll'));
    window.dispatchEvent(new Event('scroll'));
    return document.querySelector('tr[data-index="9999"]') !== null;
}"""


def test_ten_thousand_xps_first_table_then_the_last_row(
    page: Page, big: tuple[WebProject, ServeProcess]
) -> None:
    project, server = big
    open_grid(page, server, project.grid)
    assert page.evaluate("window.gridman.firstTableAt") > 0
    in_dom = page.locator("table#xp-table tbody tr[data-sig]").count()
    assert 0 < in_dom <= 1000, in_dom  # virtualised: not 10,000 rows in the DOM
    assert shown_sigs(page)[0] == project.sigs[0]
    assert row_count(page) == (10_000, 10_000)
    page.wait_for_function(SCROLL_TO_END, polling=200)
    last = page.locator('table#xp-table tbody tr[data-index="9999"]')
    assert last.get_attribute("data-sig") == project.sigs[-1]
    assert last.is_visible()
