"""Records of many XPs (results.py) and their aggregation (aggregate.py)."""

from __future__ import annotations

import csv
import io
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

import gridman
from gridman.api.load import load
from gridman.errors import UnknownXPError, UsageError
from gridman.results import records as results_mod
from gridman.results.aggregate import aggregate, stat_of
from gridman.results.export import aggregation_table, to_csv
from gridman.results.records import Selection, pick
from gridman.testing import make_project, run_cli
from gridman.testing.grids import make_xp_folder, trained_grid_project

HISTORY = [
    {"train": {"loss": 0.9}, "valid": {"acc": 0.50}},
    {"train": {"loss": 0.6}, "valid": {"acc": 0.80}, "lr_now": 0.1},
    {"train": {"loss": 0.4}, "valid": {"acc": 0.70}},
    {"train": {"loss": 0.5}},
]


# -- selecting history entries -------------------------------------------------------------
def test_last_values_merge_sparse_metrics() -> None:
    chosen = pick(HISTORY, Selection())
    assert chosen.epoch == 4
    # the last value of every metric, even one only logged at some epochs
    assert chosen.metrics == {"train.loss": 0.5, "valid.acc": 0.70, "lr_now": 0.1}


def test_best_entry_max_and_min() -> None:
    best = pick(HISTORY, Selection.parse("valid.acc:max"))
    assert best.epoch == 2
    assert best.metrics == {"train.loss": 0.6, "valid.acc": 0.80, "lr_now": 0.1}
    lowest = pick(HISTORY, Selection.parse("train.loss:min"))
    assert lowest.epoch == 3 and lowest.metrics["valid.acc"] == 0.70
    # ties keep the earliest entry; NaN, bools and strings never win
    tied = [{"a": 1.0}, {"a": float("nan")}, {"a": 1.0}, {"a": True}, {"a": "9"}]
    assert pick(tied, Selection.parse("a:max")).epoch == 1
    assert pick(HISTORY, Selection.parse("nope:max")) == results_mod.Pick({}, None)


def test_entry_at_epoch_is_one_based() -> None:
    assert pick(HISTORY, Selection.parse(epoch=1)).metrics == {"train.loss": 0.9,
                                                                "valid.acc": 0.5}  # fmt: skip
    third = pick(HISTORY, Selection.parse(epoch=3))
    assert third.epoch == 3 and third.metrics == {"train.loss": 0.4, "valid.acc": 0.7}
    assert pick(HISTORY, Selection.parse(epoch=5)) == results_mod.Pick({}, None)


def test_selection_parsing() -> None:
    assert Selection.parse("valid.acc") == Selection(best="valid.acc", mode="max")
    assert Selection.parse("train.loss") == Selection(best="train.loss", mode="min")
    assert Selection.parse("a:b:min") == Selection(best="a:b", mode="min")
    for best, epoch in (("x:median", None), (":max", None), (None, 0), ("x:max", 2)):
        with pytest.raises(UsageError):
            Selection.parse(best, epoch)


# -- merged records --------------------------------------------------------------------------
@pytest.fixture
def hetero(tmp_path: Path) -> Path:
    """Three XPs with different parameters and metrics (no main needed: by sig)."""
    root = make_project(tmp_path / "proj")
    dir = root / "outputs"
    make_xp_folder(dir, "aaaa0001", delta=[("lr", 0.1)],
                   history=[{"train": {"loss": 0.5}, "valid": {"acc": 0.8}}])  # fmt: skip
    make_xp_folder(dir, "aaaa0002", delta=[("lr", 0.2), ("dropout", 0.3)],
                   history=[{"train": {"loss": 0.4}, "bleu": 21.5, "lr": 0.02}],
                   stages={"test": {"acc": 0.75}})  # fmt: skip
    make_xp_folder(dir, "aaaa0003", delta=[("tags", ["a", "b"])], history=None, state=None)
    return root


SIGS = ["aaaa0001", "aaaa0002", "aaaa0003"]


def test_merged_csv_with_heterogeneous_keys(hetero: Path) -> None:
    results = load(SIGS, root=hetero)
    assert results.param_keys == ("lr", "dropout", "tags")
    assert results.columns() == [
        "sig", "name", "state", "epoch", "lr", "dropout", "tags",
        "train.loss", "valid.acc", "bleu", "metrics.lr", "test.acc",
    ]  # fmt: skip
    result = run_cli(["export", *[f"--sig={s}" for s in SIGS]], hetero)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["sig"] for r in rows] == SIGS
    first, second, third = rows
    assert first["lr"] == "0.1" and first["dropout"] == "" and first["bleu"] == ""
    assert first["valid.acc"] == "0.8" and first["test.acc"] == "" and first["epoch"] == "1"
    assert second["dropout"] == "0.3" and second["bleu"] == "21.5" and second["valid.acc"] == ""
    assert second["metrics.lr"] == "0.02" and second["lr"] == "0.2"  # a metric named lr
    assert second["test.acc"] == "0.75"  # the stage's metrics, namespaced
    assert third["state"] == "NEW" and third["tags"] == '["a","b"]' and third["epoch"] == ""
    assert all(third[k] == "" for k in ("lr", "train.loss", "test.acc"))
    assert first["name"] == "lr=0.1" and second["name"] == "lr=0.2 dropout=0.3"


def test_records_as_python_objects(hetero: Path) -> None:
    results = gridman.load(SIGS, root=hetero, best="train.loss:min")
    assert gridman.load is load
    assert len(results) == 3 and [r.sig for r in results] == SIGS
    assert results[1].metrics == {"train.loss": 0.4, "bleu": 21.5, "lr": 0.02, "test.acc": 0.75}
    assert results[2].epoch is None  # no history: no best entry
    rows = results.rows()
    assert set(rows[0]) == set(results.columns())
    assert rows[0]["bleu"] is None


def test_unknown_sig_names_recent_xps(hetero: Path) -> None:
    with pytest.raises(UnknownXPError, match="aaaa0001"):
        load(["aaaa0009"], root=hetero)
    result = run_cli(["export", "--sig", "aaaa0009"], hetero)
    assert result.exit_code == 2 and "recent XPs:" in result.output


def test_to_pandas_without_pandas(hetero: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = load(SIGS, root=hetero)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(UsageError, match="pandas") as info:
        results.to_pandas()
    assert "pip install pandas" in str(info.value)


def test_to_pandas(hetero: Path) -> None:
    pytest.importorskip("pandas")
    frame = load(SIGS, root=hetero).to_pandas()
    assert list(frame.columns) == load(SIGS, root=hetero).columns()
    assert len(frame) == 3


# -- aggregation -----------------------------------------------------------------------------
def test_aggregation_matches_a_hand_computation() -> None:
    params = [
        (("lr", 0.1), ("seed", 0)), (("lr", 0.1), ("seed", 1)), (("lr", 0.1), ("seed", 2)),
        (("lr", 0.2), ("seed", 0)), (("lr", 0.2), ("seed", 1)), (("lr", 0.2), ("seed", 2)),
    ]  # fmt: skip
    metrics: list[dict[str, Any]] = [
        {"acc": 0.5, "loss": 2.0}, {"acc": 0.7, "loss": 1.0}, {"acc": 0.9, "loss": 3.0},
        {"acc": 0.1}, {"acc": 0.4, "loss": float("nan")}, {"acc": None, "loss": 5.0},
    ]  # fmt: skip
    agg = aggregate(params, metrics, "seed")
    assert agg.param_keys == ("lr",)
    assert [g.name for g in agg.groups] == ["lr=0.1", "lr=0.2"]
    assert [g.over for g in agg.groups] == [(0, 1, 2), (0, 1, 2)]
    first, second = (g.stats for g in agg.groups)
    # lr=0.1, acc: mean (0.5+0.7+0.9)/3 = 0.7; std sqrt((0.2² + 0 + 0.2²) / (3-1)) = 0.2
    assert first["acc"].mean == pytest.approx(0.7) and first["acc"].std == pytest.approx(0.2)
    assert first["acc"].count == 3
    # loss: mean 2; std sqrt((0 + 1 + 1) / 2) = 1
    assert (first["loss"].mean, first["loss"].std) == (pytest.approx(2.0), pytest.approx(1.0))
    # lr=0.2, acc: two values (None left out): mean 0.25, std sqrt(2 * 0.15²) = 0.2121...
    assert second["acc"].count == 2 and second["acc"].mean == pytest.approx(0.25)
    assert second["acc"].std == pytest.approx(math.sqrt(2 * 0.15**2))
    # loss: NaN left out, one value: no std
    assert (second["loss"].mean, second["loss"].std, second["loss"].count) == (5.0, None, 1)
    assert second["acc"].text(total=3) == "0.250 ± 0.212 (2)"
    rows = list(csv.DictReader(io.StringIO(to_csv(aggregation_table(agg)))))
    assert rows[0]["lr"] == "0.1" and rows[0]["n"] == "3"
    assert float(rows[0]["acc:mean"]) == pytest.approx(0.7)
    assert float(rows[0]["acc:std"]) == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert rows[1]["loss:std"] == "" and rows[1]["loss:count"] == "1"


def test_aggregate_over_an_unknown_parameter() -> None:
    with pytest.raises(UsageError, match="seeds") as info:
        aggregate([(("seed", 0),)], [{}], "seeds")
    assert "seed" in str(info.value.hint)
    assert stat_of(["x", True, None]) == stat_of([])


# -- a real grid -----------------------------------------------------------------------------
GRID = (
    "for lr in [0.2, 0.3]:\n    for seed in [0, 1]:\n        launcher(lr=lr, seed=seed, epochs=3)"
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_grid_project(tmp_path_factory.mktemp("results") / "proj", {"main": GRID})


def test_load_a_grid_with_patterns(trained: Path) -> None:
    results = load("main", ["lr=0.3"], root=trained)
    assert results.grid == "main" and results.base_name == "epochs=3"
    assert [r.name for r in results] == ["lr=0.3 seed=0", "lr=0.3 seed=1"]
    assert results.param_keys == ("lr", "epochs", "seed")  # the parser's order (case 15)
    record = results[0]
    assert record.state == "COMPLETED" and record.epoch == 3
    assert record.params == {"lr": 0.3, "seed": 0, "epochs": 3}
    assert record.metrics["train.loss"] == pytest.approx(1 / (1 + 2 + 0.3))
    at = load("main", root=trained, epoch=1)
    assert at[0].metrics == {"train.loss": pytest.approx(1 / 1.2), "epoch": 0}
    assert at.columns()[-1] == "metrics.epoch"  # the history's own epoch, renamed
    agg = load("main", root=trained).aggregate("seed")
    assert [g.name for g in agg.groups] == ["lr=0.2", "lr=0.3"]
    expected = statistics.fmean([1 / (3 + 0.2), 1 / (4 + 0.2)])
    assert agg.groups[0].stats["train.loss"].mean == pytest.approx(expected)
    with pytest.raises(UsageError, match="patterns"):
        load(["aaaa0001"], ["lr=0.1"], root=trained)
