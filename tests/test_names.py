"""XP names (what varies across a grid) and pattern selection."""

from __future__ import annotations

from typing import Any

import pytest

from gridman.core.names import grid_items, grid_names, part, select
from gridman.core.signature import Delta
from gridman.errors import UsageError

SIGS = ["aaaa0001", "bbbb0002", "cccc0003", "dddd0004"]
DELTAS: list[Delta] = [
    [("lr", 0.1), ("seed", 0)],
    [("lr", 0.15), ("seed", 0)],
    [("lr", 0.2), ("seed", 1)],
    [("epochs", 5), ("lr", 0.2), ("seed", 1)],
]


def picked(*patterns: str) -> list[int]:
    return select(patterns, DELTAS, SIGS)


# -- names ------------------------------------------------------------------------------
def test_base_name_holds_the_common_parts() -> None:
    base, names = grid_names([[("epochs", 3), ("lr", 0.1)], [("epochs", 3), ("lr", 0.2)]])
    assert base == "epochs=3"
    assert names == ["lr=0.1", "lr=0.2"]


def test_names_show_what_varies_only() -> None:
    base, names = grid_names(DELTAS)
    assert base == ""  # nothing is set identically for every XP
    assert names[0] == "lr=0.1 seed=0"
    assert names[3] == "epochs=5 lr=0.2 seed=1"
    assert len(set(names)) == len(names)


def test_default_valued_key_is_shown_when_params_are_known() -> None:
    deltas: list[Delta] = [[], [("lr", 0.2)], [("lr", 0.5)]]  # the first XP is at the default
    params: list[dict[str, Any]] = [
        {"lr": 0.1, "seed": 0, "epochs": 2},
        {"lr": 0.2, "seed": 0, "epochs": 2},
        {"lr": 0.5, "seed": 0, "epochs": 2},
    ]
    base, names = grid_names(grid_items(deltas, params))
    assert names == ["lr=0.1", "lr=0.2", "lr=0.5"]
    assert base == ""
    assert "seed" not in " ".join(names)  # keys no XP sets stay out of the names
    # without params, the XP at the defaults can only be called the base
    _, plain = grid_names(deltas)
    assert plain == ["(base)", "lr=0.2", "lr=0.5"]


def test_names_edge_cases() -> None:
    assert grid_names([]) == ("", [])
    assert grid_names([[("lr", 0.2)]]) == ("", ["lr=0.2"])  # one XP: its name says it all
    base, names = grid_names([[("lr", 0.2)], [("lr", 0.2)]])
    assert base == "lr=0.2" and names == ["(base)", "(base)"]


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("lr", 0.1, "lr=0.1"),
        ("epochs", 3, "epochs=3"),
        ("fail", True, "fail"),
        ("fail", False, "fail=false"),
        ("name", "base", "name=base"),
        ("tags", ["a", "b"], 'tags=["a","b"]'),
        ("extra", None, "extra=null"),
        ("model.depth", 4, "mod.depth=4"),
        ("optim.adam.beta1", 0.9, "opt.ada.beta1=0.9"),
    ],
)
def test_part(key: str, value: Any, text: str) -> None:
    assert part(key, value) == text


# -- selection --------------------------------------------------------------------------
def test_exact_value_never_matches_a_longer_one() -> None:
    assert picked("lr=0.1") == [0]
    assert picked("lr=0.15") == [1]
    assert picked("lr=0.2") == [2, 3]


def test_globs() -> None:
    assert picked("lr=0.1*") == [0, 1]
    assert picked("lr=*") == [0, 1, 2, 3]
    assert picked("l?=0.2") == [2, 3]
    assert picked("ep*") == [3]


def test_pattern_without_equal_matches_key_value_or_sig_prefix() -> None:
    assert picked("epochs") == [3]  # a key
    assert picked("0.15") == [1]  # a value
    assert picked("cccc") == [2]  # a signature prefix
    assert picked("dddd0004") == [3]
    assert picked("nothing") == []


def test_negation() -> None:
    assert picked("!lr=0.2") == [0, 1]
    assert picked("!epochs") == [0, 1, 2]
    assert picked("!lr=0.1*", "!epochs") == [2]


def test_patterns_combine_with_and() -> None:
    assert picked("lr=0.2", "seed=1") == [2, 3]
    assert picked("lr=0.2", "epochs=5") == [3]
    assert picked("lr=0.1", "seed=1") == []


def test_integer_index() -> None:
    assert picked("2") == [2]
    assert picked("0") == [0]
    assert picked("!0") == [1, 2, 3]
    # an index counts among the XPs the earlier patterns kept
    assert picked("lr=0.2", "1") == [3]


@pytest.mark.parametrize("pattern", ["4", "99", "-1"])
def test_out_of_range_index_is_a_usage_error(pattern: str) -> None:
    with pytest.raises(UsageError, match="out of range") as info:
        picked(pattern)
    assert info.value.exit_code == 2
    assert "4" in str(info.value.hint)  # says how many XPs there are


@pytest.mark.parametrize("pattern", ["", "!"])
def test_empty_pattern_is_a_usage_error(pattern: str) -> None:
    with pytest.raises(UsageError, match="empty pattern"):
        picked(pattern)


def test_no_patterns_select_everything() -> None:
    assert picked() == [0, 1, 2, 3]
    assert select([], [], []) == []


def test_bool_and_nested_parts_are_selectable() -> None:
    deltas: list[Delta] = [[("fail", True)], [("model.depth", 4)], []]
    sigs = ["aaaaaaaa", "bbbbbbbb", "cccccccc"]
    assert select(["fail"], deltas, sigs) == [0]
    assert select(["mod.depth=4"], deltas, sigs) == [1]
    assert select(["!fail", "!mod.depth=4"], deltas, sigs) == [2]


def test_full_dotted_key_selects() -> None:
    deltas: list[Delta] = [[("model.depth", 2)], [("model.depth", 4)]]
    assert select(["model.depth=4"], deltas, ["aaaaaaaa", "bbbbbbbb"]) == [1]


def test_paths_in_names_are_their_text() -> None:
    """A ``type=Path`` argument (in Dora-style deltas) names an XP by its text, never a crash."""
    from pathlib import Path

    from gridman.core.names import _text

    assert _text(Path("data/train")) == "data/train"
    assert _text({"root": Path("x")}) == '{"root":"x"}'
