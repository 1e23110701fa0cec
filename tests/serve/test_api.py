"""The JSON twin of every view, from a real ``gridman serve`` process on 127.0.0.1 (port 0):
the grids, a grid's rows (those of ``gridman grid NAME --json``), curves downsampled keeping
min and max, live changes (ETag, 304), the XP page, its log, and serving changing nothing."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from gridman.testing.browser import ServeProcess
from gridman.testing.webproject import WebProject, make_web_project, push_metric

FAILED, RUNNING, NEW = 1, 2, 5


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebProject:
    return make_web_project(tmp_path_factory.mktemp("api") / "proj", 3, 2, entries=3000,
                            states={FAILED: "FAILED", RUNNING: "RUNNING", NEW: None},
                            attempts={FAILED: 2}, extra_grids={"other": 2})  # fmt: skip


@pytest.fixture(scope="module")
def server(web: WebProject) -> Iterator[ServeProcess]:
    with ServeProcess(web.root) as process:
        yield process


def get(
    server: ServeProcess, path: str, headers: Optional[dict[str, str]] = None
) -> tuple[int, dict[str, str], bytes]:
    """A raw GET of ``path`` (sent as is), Host 127.0.0.1:PORT."""
    port = int(urllib.parse.urlsplit(server.base).port or 0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def get_json(server: ServeProcess, path: str) -> Any:
    status, _, body = get(server, path)
    assert status == 200, body
    return json.loads(body)


def cli_rows(web: WebProject, grid: str) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDMAN_DIR", "GRIDMAN_MAIN")}
    done = subprocess.run([sys.executable, "-m", "gridman", "grid", grid, "--dry-run", "--json"],
                          cwd=web.root, env=env, capture_output=True, text=True)  # fmt: skip
    rows = json.loads(done.stdout)
    for row in rows:
        row.pop("plan", None)
        row.pop("resources", None)
    return rows


def test_grids_lists_both_grids_with_counts(server: ServeProcess) -> None:
    data = get_json(server, "/api/grids")
    assert data["version"] == 1
    grids = {g["name"]: g for g in data["grids"]}
    assert sorted(grids) == ["other", "sweep"]
    sweep = grids["sweep"]
    assert sweep["xps"] == 6
    assert sweep["states"] == {"COMPLETED": 3, "FAILED": 1, "RUNNING": 1, "NEW": 1}
    assert sweep["progress"] == pytest.approx(0.5)
    assert sweep["main_metric"] == "train.loss" and sweep["error"] is None
    assert grids["other"]["states"] == {"COMPLETED": 2}


def test_grid_rows_are_the_cli_json_rows(server: ServeProcess, web: WebProject) -> None:
    page = get_json(server, "/api/grid/sweep")
    assert page["rows"] == cli_rows(web, "sweep")
    assert [r["sig"] for r in page["rows"]] == list(web.sigs)
    assert page["params"] == ["lr", "seed"]
    assert page["xps"][1]["params"] == {"lr": 0.001, "seed": 1}
    assert "lr=0.001" in page["xps"][1]["parts"]
    columns = {c["key"]: c for c in page["columns"]}
    assert columns["valid.acc"]["best"] == "max" and columns["train.loss"]["best"] == "min"
    assert columns["epoch"]["best"] is None
    assert page["main_metric"] == "train.loss"


def test_curves_downsampled_keep_min_and_max(server: ServeProcess, web: WebProject) -> None:
    data = get_json(server, "/api/grid/sweep/curves?metric=train.loss&points=100")
    assert data["points"] == 100 and "valid.acc" in data["keys"]
    assert [c["sig"] for c in data["curves"]] == list(web.sigs)
    first = data["curves"][0]
    assert first["n"] == 3000 and len(first["x"]) <= 100
    history = json.loads((web.folders[0] / "history.json").read_text())
    losses = [e["train"]["loss"] for e in history]
    assert min(first["y"]) == min(losses) and max(first["y"]) == max(losses)
    assert first["x"][0] == 1 and first["x"] == sorted(first["x"])
    assert data["curves"][NEW]["x"] == []  # never ran: no history
    one = get_json(server, f"/api/xp/{web.sigs[0]}/curves?metric=valid.acc&points=5000")
    assert len(one["curves"][0]["y"]) == 3000  # short enough: every entry
    # No metric asked: the first metric of the histories that is not a counter (epoch)
    plain = get_json(server, "/api/grid/sweep/curves?points=100")
    assert plain["metric"] == "train.loss" and plain["curves"] == data["curves"]
    status, _, _ = get(server, "/api/grid/sweep/curves?metric=nope")
    assert status == 404


def test_pushed_metric_changes_the_etag_and_shows(server: ServeProcess, web: WebProject) -> None:
    path = "/api/grid/sweep"
    status, headers, body = get(server, path)
    tag = headers["etag"]
    status, _, _ = get(server, path, {"If-None-Match": tag})
    assert status == 304
    folder = web.folders[RUNNING]
    count = push_metric(folder, {"train": {"loss": 0.001}, "valid": {"acc": 0.999}, "epoch": 9})
    status, headers, body = get(server, path, {"If-None-Match": tag})
    assert status == 200 and headers["etag"] != tag
    row = json.loads(body)["rows"][RUNNING]
    assert row["metrics"]["valid.acc"] == 0.999 and count == 1501  # half of 3000, + 1
    curves = get_json(server, "/api/grid/sweep/curves?metric=valid.acc&points=5000")
    assert curves["curves"][RUNNING]["y"][-1] == 0.999


def test_xp_page_has_attempts_and_log(server: ServeProcess, web: WebProject) -> None:
    page = get_json(server, f"/api/xp/{web.sigs[FAILED]}")
    assert page["sig"] == web.sigs[FAILED] and page["state"] == "FAILED"
    assert [a["state"] for a in page["attempts_list"]] == ["FAILED", "FAILED"]
    assert page["attempts_list"][1]["exit_code"] == 1 and page["argv"]
    log = get_json(server, f"/api/xp/{web.sigs[FAILED]}/log?bytes=20")
    full = (web.folders[FAILED] / "log" / "2.log").read_bytes()
    assert log["size"] == len(full) and log["text"].encode() == full[-20:]
    assert get_json(server, f"/api/xp/{web.sigs[NEW]}/log")["path"] is None
    get_json(server, "/api/grid/sweep")  # once the grid is opened, the XP page names it
    again = get_json(server, f"/api/xp/{web.sigs[FAILED]}")
    grid = get_json(server, "/api/grid/sweep")
    assert again["grid"] == "sweep" and again["name"] == grid["rows"][FAILED]["name"]


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for here, _, files in os.walk(root):
        for name in files:
            path = Path(here) / name
            if name != "table-cache.json":  # the row cache, as gridman grid keeps it
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_serving_changes_no_file(server: ServeProcess, web: WebProject) -> None:
    before = tree_hashes(web.dir)
    paths = ["/", "/grid/sweep", "/api/grids", "/api/grid/sweep", "/api/grid/other",
             "/api/grid/sweep/curves?metric=valid.acc"]  # fmt: skip
    for sig in web.sigs:
        paths += [f"/xp/{sig}", f"/api/xp/{sig}", f"/api/xp/{sig}/log",
                  f"/api/xp/{sig}/curves?metric=train.loss"]  # fmt: skip
    for _ in range(3):
        for path in paths:
            assert get(server, path)[0] == 200, path
    assert tree_hashes(web.dir) == before


def test_grid_added_while_serving_appears(server: ServeProcess, web: WebProject) -> None:
    (web.root / "grids" / "late.py").write_text(
        "import gridman\n\n\n@gridman.Explorer\ndef explorer(launcher):\n    launcher(lr=0.5)\n"
    )
    try:
        names = [g["name"] for g in get_json(server, "/api/grids")["grids"]]
        assert "late" in names
        assert get_json(server, "/api/grid/late")["rows"][0]["state"] == "NEW"
    finally:
        (web.root / "grids" / "late.py").unlink()
    assert get(server, "/api/grid/late")[0] == 404


def test_downsample_keeps_each_buckets_extremes_and_gaps() -> None:
    from gridman.serve.curves import columns, downsample

    values = [float((i * 37) % 101) for i in range(1000)]
    values[500:520] = [None] * 20
    x, y = downsample(values, 40)
    assert len(x) <= 40 and x == sorted(x)
    for b in range(20):
        seg = [v for v in values[b * 50 : (b + 1) * 50] if v is not None]
        inside = [v for xi, v in zip(x, y) if b * 50 < xi <= (b + 1) * 50]
        assert min(seg) in inside and max(seg) in inside
    gap = [None] * 100
    assert downsample(gap, 10) == ([1, 21, 41, 61, 81], [None] * 5)
    cols = columns([{"a": {"b": 1, "c": {"d": float("nan")}}, "s": "text"}, {"e": 2}])
    assert cols == {"a.b": [1.0, None], "a.c.d": [None, None], "s": [None, None],
                    "e": [None, 2.0]}  # fmt: skip


def test_worker_processes_compute_the_same_curves(web: WebProject) -> None:
    """Many stale histories are read by worker processes: the same entries, in order, as
    this process computes (a damaged and a missing history included)."""
    from gridman.serve.curves import _file_key, compute, compute_all

    folders = list(web.folders) * 6  # 36 jobs, some folders twice
    broken = web.folders[0].parent / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "history.json").write_text("{not json", encoding="utf8")
    folders += [broken, web.folders[0].parent / "absent"]
    jobs = []
    for i, folder in enumerate(folders):
        where = str(folder)
        key = (_file_key(f"{where}/history.json"), _file_key(f"{where}/history.jsonl"))
        jobs.append((f"{i:08x}", where, key, 50 + i))
    pooled = compute_all(jobs, pool_min=2)
    assert pooled == [compute(job) for job in jobs]
    assert pooled[0].size == 3000 and len(pooled[0].texts) == 3  # train.loss, valid.acc, epoch
    assert pooled[-1].size == 0 and pooled[-2].size == 0 and pooled[-2].keys == []
