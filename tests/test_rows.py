"""The one row model: the grid table (and its ``--json``), exports and ``gridman.load`` agree.

The same XP has the same meta values (index, name, sig, state) wherever it shows up; a row's
metrics may be nested (the table's) or flat (records'), and every view reads both.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import gridman
from gridman.results.rows import EXPORT_META, META_FIELDS, TABLE_META, Row, table_meta_cells
from gridman.results.table import default_columns, render
from gridman.testing import run_cli
from gridman.testing.grids import parse_json_rows, trained_grid_project

GRIDS = {
    "main": "for lr in [0.2, 0.3]:\n    for seed in [0, 1]:\n"
    "        launcher(lr=lr, seed=seed, epochs=2)",
    # the XPs of main and one more that never ran (state NEW)
    "more": "for lr in [0.2, 0.3, 0.4]:\n    for seed in [0, 1]:\n"
    "        launcher(lr=lr, seed=seed, epochs=2)",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_grid_project(tmp_path_factory.mktemp("rows") / "proj", GRIDS)


def meta(item: Any, keys: tuple[str, ...] = ("index", "name", "sig", "state")) -> tuple[Any, ...]:
    get = item.get if isinstance(item, dict) else (lambda key: getattr(item, key))
    return tuple(get(key) for key in keys)


@pytest.mark.parametrize("patterns", [[], ["lr=0.3"], ["seed=1"]])
def test_same_meta_in_the_table_export_and_load(trained: Path, patterns: list[str]) -> None:
    """``grid --json``, ``export`` (json and csv) and ``gridman.load`` name the same XPs with
    the same index (its place in the grid), name, sig and state, NEW ones included."""
    table = run_cli(["grid", "more", *patterns, "--dry-run", "--json"], trained)
    assert table.exit_code == 0, table.output
    rows = parse_json_rows(table.stdout)
    exported = json.loads(run_cli(["export", "more", *patterns, "-F", "json"], trained).stdout)
    as_csv = list(csv.DictReader(io.StringIO(run_cli(["export", "more", *patterns],
                                                     trained).stdout)))  # fmt: skip
    records = gridman.load("more", patterns, root=trained)
    assert [meta(r) for r in rows] == [meta(r) for r in records]
    if not patterns:
        assert {r["state"] for r in rows} == {"COMPLETED", "NEW"}
    # exports have no index column (their columns are unchanged): the rest agrees
    three = ("name", "sig", "state")
    assert [meta(r, three) for r in exported] == [meta(r, three) for r in rows]
    assert [meta(r, three) for r in as_csv] == [meta(r, three) for r in rows]
    if patterns == ["lr=0.3"]:
        assert [r["index"] for r in rows] == [2, 3]  # indices in the grid, not in the selection
    for row, record, item in zip(rows, records, exported):
        assert row["folder"] == record.folder and row["argv"] == list(record.argv)
        assert row["metrics"].get("train.loss") == record.metrics.get("train.loss")
        assert item.get("train.loss") == record.metrics.get("train.loss")


def test_same_meta_by_signature(trained: Path) -> None:
    rows = parse_json_rows(run_cli(["grid", "main", "--dry-run", "--json"], trained).stdout)
    sigs = [rows[2]["sig"], rows[0]["sig"]]
    records = gridman.load(sigs, root=trained)
    exported = json.loads(run_cli(["export", "-F", "json", "--sig", sigs[0], "--sig", sigs[1]],
                                  trained).stdout)  # fmt: skip
    assert [r.index for r in records] == [0, 1]  # their place in the list of signatures
    assert [(r.sig, r.state) for r in records] == [(s, "COMPLETED") for s in sigs]
    assert [(r["sig"], r["name"], r["state"]) for r in exported] == [
        (r.sig, r.name, r.state) for r in records
    ]


# -- the model --------------------------------------------------------------------------------
def nested() -> Row:
    metrics = {"epoch": 2, "train": {"loss": 0.5}, "ok": True}
    return Row(index=3, name="lr=0.1", sig="0123abcd", state="COMPLETED", folder="/x/0123abcd",
               argv=("lr=0.1",), metrics=metrics)  # fmt: skip


def test_json_keys_and_order() -> None:
    data = nested().to_json()
    assert list(data) == [*META_FIELDS, "metrics", "error"]
    assert data["argv"] == ["lr=0.1"] and data["index"] == 3
    assert data["metrics"] == {"epoch": 2, "train.loss": 0.5, "ok": True}
    assert json.dumps(data)  # plain JSON


def test_export_values_rename_clashes() -> None:
    row = Row(index=0, name="n", sig="s", state="NEW", folder="f", params={"lr": 0.1, "epoch": 5},
              metrics={"lr": 0.2, "valid.acc": 0.9}, epoch=4)  # fmt: skip
    values = row.export_values()
    assert list(values)[: len(EXPORT_META)] == list(EXPORT_META)
    assert values["epoch"] == 4 and values["params.epoch"] == 5
    assert values["lr"] == 0.1 and values["metrics.lr"] == 0.2 and values["valid.acc"] == 0.9


def test_flat_and_nested_metrics_render_the_same() -> None:
    """A record's flat metrics and the table's nested ones give the same table."""
    row = nested()
    flat = replace(row, metrics=row.flat_metrics())
    other = replace(row, sig="ffff0000", metrics={"train": {"loss": 0.25}})
    columns = default_columns([row, other])
    strip = re.compile(r"\x1b\[[0-9;]*m")
    for color in (False, True):
        a = render([row, other], columns, color=color)
        b = render([flat, other], columns, color=color)
        assert strip.sub("", a) == strip.sub("", b)
        assert a == b


def test_meta_columns_by_name() -> None:
    """The text table's meta columns come from the row's fields, the state coloured."""
    text = render([nested()], default_columns([nested()]), color=True)
    line = next(x for x in text.splitlines() if "0123abcd" in x)
    assert "\x1b[32mCOMPLETED" in line  # the state column, found by name
    plain = render([nested()], default_columns([nested()]))
    header, data = plain.splitlines()[-2:]
    assert header.split()[:4] == ["index", "name", "state", "sig"]
    assert data.split()[:4] == ["3", "lr=0.1", "COMPLETED", "0123abcd"]
    assert data.split()[4] == "|"  # the block of metrics starts after the meta columns
    assert table_meta_cells(nested()) == [str(nested().meta(name)) for name, _ in TABLE_META]
