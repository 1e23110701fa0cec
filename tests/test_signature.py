"""Signatures: golden argv -> sig tables, delta rules, and what counts as a signature.

The GOLDEN tables are hard-coded on purpose: they were computed once and must never change. A
refactor that alters any of them silently re-keys every existing experiment (its folder, its
history, its checkpoints), so a failure here is a bug in the refactor, not in the table.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import importlib.util
import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import gridman
from gridman.core.main import ArgparseMain
from gridman.core.signature import (
    canonical_json,
    canonical_of_delta,
    compute_delta,
    compute_sig,
    delta_from_json,
    is_excluded,
    is_valid_sig,
    jsonable,
)

REPO = Path(__file__).resolve().parents[1]
BASE_SIG = "97d170e1"  # the empty delta: every option at its default


@pytest.fixture(scope="module")
def example_main() -> ArgparseMain:
    """The decorated main of examples/train.py (imported, never run)."""
    spec = importlib.util.spec_from_file_location("_example_train", REPO / "examples" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.main, ArgparseMain)
    return module.main


def _noop() -> None:
    pass


def make_main(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> ArgparseMain:
    return gridman.argparse_main(parser=parser, exclude=list(exclude))(_noop)


@pytest.fixture(scope="module")
def custom_main() -> ArgparseMain:
    """A parser exercising string defaults, flags, paths, lists and an exclude glob."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default="0.1")  # a string default, typed float
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--no_aug", dest="aug", action="store_false")
    parser.add_argument("--data", type=Path, default="data")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--num_threads", type=int, default=4)
    parser.add_argument("--number", type=int, default=1)  # not matched by num_*
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--name", default="base")
    return make_main(parser, exclude=("num_*",))


def sig_of(main: ArgparseMain, argv: list[str], tmp: Path = Path("/nonexistent")) -> str:
    return main.get_xp(argv, dir=tmp).sig


# argv -> (sig, canonical delta) for examples/train.py (defaults: lr 0.1, epochs 5, batch_size
# 16, dim 8, noise 1.0, seed 0, sleep 0.0; num_workers excluded). NEVER edit these values.
GOLDEN_EXAMPLE = [
    ([], BASE_SIG, "[]"),
    (["--lr", "0.1"], BASE_SIG, "[]"),
    (["--lr=0.10"], BASE_SIG, "[]"),
    (["--lr", "0.1", "--epochs", "5", "--seed", "0"], BASE_SIG, "[]"),
    (["--dim=8", "--noise", "1"], BASE_SIG, "[]"),
    (["--num_workers", "8"], BASE_SIG, "[]"),
    (["--lr", "0.5"], "3b45fed1", '[["lr", 0.5]]'),
    (["--lr=0.50"], "3b45fed1", '[["lr", 0.5]]'),
    (["--lr", "0.5", "--num_workers", "8"], "3b45fed1", '[["lr", 0.5]]'),
    (["--lr", "0.5", "--epochs", "2"], "1068bdca", '[["epochs", 2], ["lr", 0.5]]'),
    (["--epochs", "2", "--lr", "0.5"], "1068bdca", '[["epochs", 2], ["lr", 0.5]]'),
    (["--epochs=2", "--lr=0.50", "--seed", "0"], "1068bdca", '[["epochs", 2], ["lr", 0.5]]'),
    (["--seed", "1"], "6c3a68e5", '[["seed", 1]]'),
    (["--seed", "1", "--lr", "0.01"], "00c55775", '[["lr", 0.01], ["seed", 1]]'),
    (["--noise", "0.5", "--dim", "16"], "4071c8ef", '[["dim", 16], ["noise", 0.5]]'),
    (["--batch_size", "32", "--sleep", "0.5"], "ff4fa8e1", '[["batch_size", 32], ["sleep", 0.5]]'),
    (["--lr", "1e-3"], "ed85dd6b", '[["lr", 0.001]]'),
    (["--lr", "0.001"], "ed85dd6b", '[["lr", 0.001]]'),
    (["--lr", "1"], "4c234bbd", '[["lr", 1.0]]'),  # type=float: 1 is 1.0, hashed as "1.0"
]


@pytest.mark.parametrize(("argv", "sig", "delta"), GOLDEN_EXAMPLE, ids=lambda v: repr(v))
def test_golden_example_train(
    example_main: ArgparseMain, argv: list[str], sig: str, delta: str
) -> None:
    xp = example_main.get_xp(argv, dir=Path("/nonexistent"))
    assert canonical_json(xp.delta) == delta
    assert xp.sig == sig
    assert xp.argv == argv  # the argv is kept as given, only the delta is normalised


def test_dora_known_value() -> None:
    """Dora's signature of `--lr 0.5 --epochs 2` (defaults lr=0.1, epochs=3) is 1068bdca."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    main = make_main(parser)
    xp = main.get_xp(["--lr", "0.5", "--epochs", "2"], dir=Path("/x"))
    assert [list(p) for p in xp.delta] == [["epochs", 2], ["lr", 0.5]]
    assert xp.sig == "1068bdca"
    assert sig_of(main, ["--epochs=2", "--lr=0.50", "--seed", "0"]) == "1068bdca"
    # Dora's formula, spelled out: sha1 of json.dumps of the sorted pairs, 8 hex characters.
    text = json.dumps([["epochs", 2], ["lr", 0.5]])
    assert hashlib.sha1(text.encode("utf8")).hexdigest()[:8] == "1068bdca"
    assert canonical_json([("lr", 0.5), ("epochs", 2)]) == text


# argv -> (sig, canonical delta) for custom_main, computed by Dora 0.1.13 (issue 15 item 4; the
# command is in tests/test_dora_main_api.py). Dora compares each value with the parser's RAW
# default, so --lr (type=float, default "0.1") and --data (type=Path, default "data") are in
# every delta: these rows replaced gridman's own, which predated that quirk. NEVER edit them.
CUSTOM_BASE = "c705234b"  # [["data", "data"], ["lr", 0.1]]
GOLDEN_CUSTOM = [
    ([], CUSTOM_BASE, '[["data", "data"], ["lr", 0.1]]'),
    (["--lr", "0.1"], CUSTOM_BASE, '[["data", "data"], ["lr", 0.1]]'),
    (["--lr", "0.5"], "ffd24330", '[["data", "data"], ["lr", 0.5]]'),
    (["--fail"], "3ff3dac6", '[["data", "data"], ["fail", true], ["lr", 0.1]]'),
    (["--no_aug"], "dde96466", '[["aug", false], ["data", "data"], ["lr", 0.1]]'),
    (["--data", "data"], CUSTOM_BASE, '[["data", "data"], ["lr", 0.1]]'),
    (["--data", "./data"], CUSTOM_BASE, '[["data", "data"], ["lr", 0.1]]'),
    (["--data", "other"], "30665765", '[["data", "other"], ["lr", 0.1]]'),
    (["--num_workers", "8", "--num_threads", "1"], CUSTOM_BASE, '[["data", "data"], ["lr", 0.1]]'),
    (["--number", "3"], "aed89039", '[["data", "data"], ["lr", 0.1], ["number", 3]]'),
    (["--sizes", "1", "2"], CUSTOM_BASE, '[["data", "data"], ["lr", 0.1]]'),
    (["--sizes", "3"], "ea3e67fa", '[["data", "data"], ["lr", 0.1], ["sizes", [3]]]'),
    (["--name", "x y"], "887d3e1b", '[["data", "data"], ["lr", 0.1], ["name", "x y"]]'),
    (
        ["--fail", "--no_aug", "--data", "other", "--lr", "0.5"],
        "b5d8c37f",
        '[["aug", false], ["data", "other"], ["fail", true], ["lr", 0.5]]',
    ),
]


@pytest.mark.parametrize(("argv", "sig", "delta"), GOLDEN_CUSTOM, ids=lambda v: repr(v))
def test_golden_custom_parser(
    custom_main: ArgparseMain, argv: list[str], sig: str, delta: str
) -> None:
    xp = custom_main.get_xp(argv, dir=Path("/nonexistent"))
    assert canonical_json(xp.delta) == delta
    assert xp.sig == sig


def test_string_default_with_type_is_converted(custom_main: ArgparseMain) -> None:
    defaults = custom_main.defaults()
    assert defaults["lr"] == 0.1 and isinstance(defaults["lr"], float)
    assert defaults["data"] == Path("data")
    assert custom_main.get_xp([], dir=Path("/x")).cfg.lr == 0.1


@pytest.mark.parametrize(
    "argv",
    [
        ["--num_workers", "16"],
        ["--num_threads", "9"],
        ["--num_workers=0", "--num_threads=0"],
    ],
)
def test_excluded_args_never_change_the_sig(custom_main: ArgparseMain, argv: list[str]) -> None:
    assert sig_of(custom_main, argv) == CUSTOM_BASE
    assert sig_of(custom_main, ["--lr", "0.5", *argv]) == "ffd24330"
    assert sig_of(custom_main, [*argv, "--lr", "0.5"]) == "ffd24330"


def test_excluded_value_still_reaches_the_config(custom_main: ArgparseMain) -> None:
    xp = custom_main.get_xp(["--num_workers", "16"], dir=Path("/x"))
    assert xp.cfg.num_workers == 16
    assert xp.delta == [("data", "data"), ("lr", 0.1)]  # Dora's raw-default quirk, no num_*


def test_argv_order_does_not_matter(example_main: ArgparseMain) -> None:
    argvs = [
        ["--lr", "0.3", "--seed", "4", "--dim", "2"],
        ["--dim", "2", "--lr", "0.3", "--seed", "4"],
        ["--seed=4", "--dim=2", "--lr=0.30"],
    ]
    sigs = {sig_of(example_main, argv) for argv in argvs}
    assert len(sigs) == 1
    assert sigs != {BASE_SIG}


def test_last_value_wins_like_argparse(example_main: ArgparseMain) -> None:
    assert sig_of(example_main, ["--lr", "0.9", "--lr", "0.5"]) == "3b45fed1"


def test_value_to_argv_reproduces_the_sig(custom_main: ArgparseMain) -> None:
    """Grid launchers turn a delta back into argv: the sig must survive the round trip."""
    values: dict[str, Any] = {"lr": 0.5, "fail": True, "aug": False, "data": Path("other")}
    argv = [tok for key, value in values.items() for tok in custom_main.value_to_argv(key, value)]
    assert sig_of(custom_main, argv) == "b5d8c37f"
    assert custom_main.value_to_argv("fail", False) == []
    assert custom_main.value_to_argv("aug", True) == []
    assert sig_of(custom_main, custom_main.value_to_argv("sizes", [3])) == "ea3e67fa"


def test_value_to_argv_unknown_key_suggests(custom_main: ArgparseMain) -> None:
    with pytest.raises(gridman.GridmanError, match="did you mean 'lr'"):
        custom_main.value_to_argv("lrr", 0.5)


def test_explicit_tuple_default_is_in_the_delta_as_in_dora() -> None:
    """Dora compares with `!=`: the list [1, 2] differs from the tuple default (1, 2)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=(1, 2))
    main = make_main(parser)
    assert sig_of(main, []) == BASE_SIG
    assert sig_of(main, ["--sizes", "1", "2"]) == "6f75b88b"  # Dora 0.1.13's


# -- delta rules ----------------------------------------------------------------------------


def test_compute_delta_sorted_and_filtered() -> None:
    values = {"b": 2, "a": 1, "c": 3, "log.every": 5}
    defaults = {"a": 1, "b": 0, "c": 0, "log.every": 1}
    assert compute_delta(values, defaults, exclude=["log.*"]) == [("b", 2), ("c", 3)]


def test_compute_delta_key_without_default_is_kept() -> None:
    assert compute_delta({"new": None}, {}) == [("new", None)]


def test_compute_delta_nan_default() -> None:
    nan = float("nan")
    assert compute_delta({"x": nan}, {"x": nan}) == []
    delta = compute_delta({"x": 1.0}, {"x": nan})
    assert delta == [("x", 1.0)]
    delta = compute_delta({"x": nan}, {"x": 1.0})
    assert len(delta) == 1 and math.isnan(delta[0][1])


def test_compute_delta_bool_is_not_int() -> None:
    assert compute_delta({"x": True}, {"x": 1}) == [("x", True)]
    assert compute_delta({"x": False}, {"x": 0}) == [("x", False)]
    assert compute_delta({"x": 1}, {"x": 1.0}) == []


def test_nested_dict_values_are_order_independent() -> None:
    a = compute_sig([("cfg", {"a": 1, "b": [1, 2]})])
    b = compute_sig([("cfg", {"b": [1, 2], "a": 1})])
    assert a == b == "762109cf"
    assert compute_delta({"cfg": {"b": 2, "a": 1}}, {"cfg": {"a": 1, "b": 2}}) == []


def test_pair_order_does_not_matter() -> None:
    assert compute_sig([("lr", 0.5), ("epochs", 2)]) == compute_sig([("epochs", 2), ("lr", 0.5)])
    assert compute_sig([]) == BASE_SIG


def test_path_values_hash_as_strings() -> None:
    assert compute_sig([("data", Path("other"))]) == "59251e9e"
    assert compute_sig([("data", PurePosixPath("other"))]) == "59251e9e"
    assert compute_sig([("data", "other")]) == "59251e9e"


class Color(enum.Enum):
    RED = "red"


def test_jsonable() -> None:
    assert jsonable(Color.RED) == "red"
    assert jsonable((1, (2, 3))) == [1, [2, 3]]
    assert jsonable({"b", "a"}) == ["a", "b"]
    assert jsonable({1: Path("p")}) == {"1": "p"}
    with pytest.raises(TypeError, match="cannot be part of a signature"):
        jsonable(object())


def test_is_excluded_is_case_sensitive_glob() -> None:
    assert is_excluded("num_workers", ["num_*"])
    assert not is_excluded("number", ["num_*"])
    assert not is_excluded("NUM_workers", ["num_*"])
    assert is_excluded("logging.verbose", ["logging.*"])


def test_delta_from_json() -> None:
    assert delta_from_json([["lr", 0.5], ["tags", [1]]]) == [("lr", 0.5), ("tags", [1])]
    for bad in [{"lr": 0.5}, [["lr"]], [[1, 2]], "x", [("lr", 1)]]:
        with pytest.raises(ValueError):
            delta_from_json(bad)


# -- what a signature is ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["deadbeef", "0123abcd", BASE_SIG])
def test_is_valid_sig_accepts(text: str) -> None:
    assert is_valid_sig(text)


@pytest.mark.parametrize(
    "text",
    ["../..", "..", "", "DEADBEEF", "Deadbeef", "deadbee", "deadbeef0", "deadbeeg", " deadbeef"],
)
def test_is_valid_sig_rejects(text: str) -> None:
    assert not is_valid_sig(text)


def test_is_valid_sig_rejects_trailing_newline() -> None:
    assert not is_valid_sig("deadbeef\n")


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"lr": 0.5, "bs": 32, "name": "x", "flag": True, "none": None},
        {"cfg": {"b": [1, 2], "a": {"z": 1, "y": 2}}, "t": (1, 2), "p": PurePosixPath("/a")},
        {"x": float("inf"), "é": "ü", "A": 1, "a": 2, "_": [None, 1.5]},
        {3: "int keys", 10: "sort as numbers, hashed as strings"},
    ],
)
def test_canonical_of_delta_is_canonical_json(values: dict[Any, Any]) -> None:
    """The herd's shortcut writes exactly the text that the signature is defined on."""
    delta = compute_delta(values, {})
    assert canonical_of_delta(delta) == canonical_json(delta)
