"""The tracker: rows from histories, the text table (colours, best values) and JSON rows."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import treetable as tt

from gridman.core.explore import Explorer, Sheep
from gridman.results.format import fmt_value
from gridman.results.rows import Row
from gridman.results.table import (
    Column,
    all_finished,
    build_rows,
    default_columns,
    node_columns,
    render,
    summary,
)
from gridman.testing.grids import fake_sheep

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BEST = "\x1b[1;32m"


def plain_explorer() -> Explorer:
    return Explorer(lambda launcher: None)


def history(losses: list[float], accs: list[float]) -> list[dict[str, Any]]:
    return [{"train": {"loss": loss}, "valid": {"acc": acc}} for loss, acc in zip(losses, accs)]


@pytest.fixture
def sheeps(tmp_path: Path) -> list[Sheep]:
    return [
        fake_sheep(tmp_path, "aaaaaaaa", history([0.9, 0.5], [0.5, 0.7]), state="COMPLETED"),
        fake_sheep(tmp_path, "bbbbbbbb", history([0.8, 0.3], [0.6, 0.9]), state="RUNNING"),
        fake_sheep(tmp_path, "cccccccc", history([0.7, 0.4], [0.6, 0.8]), state="FAILED"),
        fake_sheep(tmp_path, "dddddddd"),  # never ran: no folder
    ]


def make_rows(sheeps: list[Sheep], explorer: Explorer | None = None, **kw: Any) -> list[Row]:
    names = [f"lr=0.{i + 1}" for i in range(len(sheeps))]
    return build_rows(explorer or plain_explorer(), sheeps, range(len(sheeps)), names, **kw)


def table_lines(text: str) -> dict[str, str]:
    """Data lines of a rendered table by signature."""
    return {
        sig: line
        for line in text.splitlines()
        for sig in re.findall(r"\b[0-9a-f]{8}\b", ANSI.sub("", line))
    }


# -- rows -----------------------------------------------------------------------------------
def test_rows_hold_states_names_and_last_metrics(sheeps: list[Sheep]) -> None:
    rows = make_rows(sheeps)
    assert [r.state for r in rows] == ["COMPLETED", "RUNNING", "FAILED", "NEW"]
    assert [r.index for r in rows] == [0, 1, 2, 3]
    assert rows[1].name == "lr=0.2" and rows[1].sig == "bbbbbbbb"
    assert rows[0].metrics == {"epoch": 2, "train": {"loss": 0.5}, "valid": {"acc": 0.7}}
    assert rows[3].metrics == {"epoch": 0} and rows[3].error is None


def test_folders_just_created_are_not_read(sheeps: list[Sheep], monkeypatch: Any) -> None:
    """``empty`` (folders this command created) rows come from an empty history, unread."""
    import gridman.results.table

    monkeypatch.setattr(gridman.results.table, "file_key", None)  # any look at the files would fail
    monkeypatch.setattr(gridman.results.table, "load_history", None)
    rows = make_rows(sheeps, empty={s.sig for s in sheeps})
    assert [r.metrics for r in rows] == [{"epoch": 0}] * 4
    assert [r.error for r in rows] == [None] * 4


def test_process_history_default() -> None:
    explorer = plain_explorer()
    assert explorer.process_history([]) == {"epoch": 0}
    got = explorer.process_history(
        [{"train": {"loss": 1.0, "acc": 0.1}, "lr": 0.1}, {"train": {"loss": 0.5}}, "junk"]
    )
    assert got == {"epoch": 3, "train": {"loss": 0.5, "acc": 0.1}, "lr": 0.1}
    # a metric called epoch wins over the count
    assert explorer.process_history([{"epoch": 7}])["epoch"] == 7


def test_process_history_does_not_alias_the_history() -> None:
    entries = [{"train": {"loss": 1.0}}, {"train": {"loss": 0.5}}]
    plain_explorer().process_history(entries)
    assert entries == [{"train": {"loss": 1.0}}, {"train": {"loss": 0.5}}]


def test_process_sheep_override_wins(sheeps: list[Sheep]) -> None:
    class Custom(Explorer):
        def process_sheep(self, sheep: Sheep, history: list[Any]) -> dict[str, Any]:
            return {"who": sheep.sig, "n": len(history)}

    rows = make_rows(sheeps, Custom(lambda launcher: None))
    assert rows[0].metrics == {"who": "aaaaaaaa", "n": 2}


def test_one_bad_history_marks_only_its_row(sheeps: list[Sheep]) -> None:
    (sheeps[1].xp.folder / "history.json").write_text("[1, 2", encoding="utf8")
    rows = make_rows(sheeps)
    assert rows[1].error and "HistoryError" in rows[1].error and rows[1].metrics == {}
    assert all(r.error is None for i, r in enumerate(rows) if i != 1)
    text = render(rows, default_columns(rows))
    assert "! HistoryError" in table_lines(text)["bbbbbbbb"]
    assert "0.500" in table_lines(text)["aaaaaaaa"]


def test_failing_hook_marks_only_its_row(sheeps: list[Sheep]) -> None:
    class Picky(Explorer):
        def process_history(self, history: list[Any]) -> dict[str, Any]:
            return {"last": history[-1]["train"]["loss"]}  # IndexError without history

    rows = make_rows(sheeps, Picky(lambda launcher: None))
    assert rows[3].error is not None and rows[3].error.startswith("IndexError")
    assert rows[0].metrics == {"last": 0.5}


def test_trim_cuts_histories(sheeps: list[Sheep]) -> None:
    rows = make_rows(sheeps, trim=1)
    assert rows[0].metrics == {"epoch": 1, "train": {"loss": 0.9}, "valid": {"acc": 0.5}}


def test_row_json_is_flat(sheeps: list[Sheep]) -> None:
    data = make_rows(sheeps)[0].to_json()
    assert data["metrics"] == {"epoch": 2, "train.loss": 0.5, "valid.acc": 0.7}
    assert {"index", "name", "sig", "state", "argv", "folder", "metrics", "error"} <= set(data)
    assert data["folder"].endswith("/xps/aaaaaaaa")


# -- columns --------------------------------------------------------------------------------
def test_nested_metrics_become_column_groups(sheeps: list[Sheep]) -> None:
    rows = make_rows(sheeps)
    columns = default_columns(rows)
    assert [c.path for c in columns] == [("epoch",), ("train", "loss"), ("valid", "acc")]
    lines = render(rows, columns).splitlines()
    groups, headers = lines[0], lines[1]
    assert "train" in groups and "valid" in groups
    assert groups.index("train") < groups.index("valid")
    assert headers.split() == [
        "index",
        "name",
        "state",
        "sig",
        "|",
        "epoch",
        "|",
        "loss",
        "|",
        "acc",
    ]


def test_node_columns_keep_formats() -> None:
    nodes = [
        tt.leaf("epoch"),
        tt.group("train", [tt.leaf("loss", ".3f"), tt.leaf("acc", ".1%", align="<")]),
    ]
    columns = node_columns(nodes)
    assert columns == [
        Column(("epoch",), "", ">"),
        Column(("train", "loss"), ".3f", ">"),
        Column(("train", "acc"), ".1%", "<"),
    ]


# -- rendering ------------------------------------------------------------------------------
def test_headers_are_full_words(sheeps: list[Sheep]) -> None:
    rows = make_rows(sheeps)
    text = render(rows, default_columns(rows))
    header = text.splitlines()[1].split()
    for word in ("index", "name", "state", "sig"):
        assert word in header


def test_no_ansi_without_color(sheeps: list[Sheep]) -> None:
    rows = make_rows(sheeps)
    text = render(rows, default_columns(rows), color=False, base_name="epochs=3")
    assert "\x1b" not in text
    assert text.splitlines()[0] == "Base: epochs=3"


def test_ansi_with_color(sheeps: list[Sheep]) -> None:
    rows = make_rows(sheeps)
    text = render(rows, default_columns(rows), color=True)
    assert "\x1b[1m" in text  # bold headers
    lines = table_lines(text)
    assert "\x1b[32mCOMPLETED" in lines["aaaaaaaa"]
    assert "\x1b[31mFAILED" in lines["cccccccc"]
    # without the escapes it is the same table
    assert ANSI.sub("", text) == render(rows, default_columns(rows), color=False)


def test_best_values_are_highlighted(sheeps: list[Sheep]) -> None:
    rows = make_rows(sheeps)
    lines = table_lines(render(rows, default_columns(rows), color=True))
    # lowest loss (row b, 0.3) and highest accuracy (row b, 0.9)
    assert f"{BEST}0.300" in lines["bbbbbbbb"] and f"{BEST}0.900" in lines["bbbbbbbb"]
    assert BEST not in lines["aaaaaaaa"]
    assert BEST not in lines["cccccccc"]
    assert BEST not in lines["dddddddd"]


def test_best_ignores_epochs_nan_bools_and_single_rows(tmp_path: Path) -> None:
    sheeps = [
        fake_sheep(tmp_path, "aaaaaaaa", [{"loss": math.nan, "ok": True}], state="COMPLETED"),
        fake_sheep(tmp_path, "bbbbbbbb", [{"loss": 0.2, "ok": False}], state="COMPLETED"),
        fake_sheep(tmp_path, "cccccccc", [{"loss": 0.4, "ok": True}], state="COMPLETED"),
    ]
    rows = make_rows(sheeps)
    lines = table_lines(render(rows, default_columns(rows), color=True))
    assert f"{BEST}0.200" in lines["bbbbbbbb"]
    assert "nan" in lines["aaaaaaaa"] and BEST not in lines["aaaaaaaa"]
    assert all(BEST + "True" not in line for line in lines.values())
    single = render(rows[:1], default_columns(rows[:1]), color=True)
    assert BEST not in single


def test_render_1000_rows_is_fast(tmp_path: Path) -> None:
    rows = [
        Row(
            index=i,
            name=f"lr={i / 1000} seed={i % 7}",
            sig=f"{i:08x}",
            state="COMPLETED",
            folder=str(tmp_path),
            metrics={
                "epoch": i % 50,
                "train": {"loss": 1 / (i + 1), "acc": i / 1000},
                "valid": {"loss": 2 / (i + 1)},
            },
        )
        for i in range(1000)
    ]
    columns = default_columns(rows)
    start = time.perf_counter()
    text = render(rows, columns, color=True, base_name="epochs=50")
    elapsed = time.perf_counter() - start
    lines = text.splitlines()
    assert len(lines) >= 1000 + 2
    assert elapsed < 2.0, f"rendering 1000 rows took {elapsed:.2f} s"
    widths = {len(ANSI.sub("", line)) for line in lines[3:]}
    assert len(widths) == 1  # aligned columns


def test_error_is_shown_even_without_metric_columns(tmp_path: Path) -> None:
    sheep = fake_sheep(tmp_path, "aaaaaaaa", [], state="COMPLETED")
    (sheep.xp.folder / "history.json").write_text("{", encoding="utf8")
    rows = make_rows([sheep])
    assert rows[0].error
    text = render(rows, default_columns(rows))
    assert "HistoryError" in text


@pytest.mark.parametrize(
    ("value", "spec", "text"),
    [
        (None, "", ""),
        (None, ".3f", ""),
        (3, "", "3"),
        (True, "", "True"),
        (0.5, "", "0.500"),
        (-0.5, "", "-0.500"),
        (0.0, "", "0.000"),
        (123.456, "", "123.5"),
        (12345.6, "", "12346"),
        (1e-5, "", "1.000e-05"),
        (1e7, "", "1.000e+07"),
        (float("nan"), "", "nan"),
        (float("inf"), "", "inf"),
        ("abc", "", "abc"),
        ([1, 2], "", "[1, 2]"),
        (0.1234, ".2%", "12.34%"),
        (0.1234, ".3f", "0.123"),
        ("abc", ".3f", "abc"),  # a format that does not apply is ignored
        (3, ">5", "    3"),
    ],
)
def test_fmt_value(value: Any, spec: str, text: str) -> None:
    assert fmt_value(value, spec) == text


def test_summary_and_all_finished(tmp_path: Path) -> None:
    states = ["COMPLETED", "RUNNING", "PENDING", "UNKNOWN", "FAILED", "VANISHED", "CANCELLED", None]
    sheeps = [fake_sheep(tmp_path, f"{i:08x}", state=s) for i, s in enumerate(states)]
    rows = make_rows(sheeps)
    assert summary(rows) == {
        "done": 1,
        "running": 1,
        "pending": 2,
        "failed": 2,
        "cancelled": 1,
        "new": 1,
    }
    assert not all_finished(rows)
    assert all_finished([r for r in rows if r.state not in ("RUNNING", "PENDING", "UNKNOWN")])
