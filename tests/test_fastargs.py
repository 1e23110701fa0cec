"""The fast argv path must agree with argparse, and step aside whenever argparse must decide."""

from __future__ import annotations

import argparse
import random
from typing import Any, Optional

import pytest

from gridman.core import fastargs
from gridman.core.main import ArgparseMain


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default="0.1")
    parser.add_argument("--batch-size", "--bs", dest="batch_size", type=int, default=32)
    parser.add_argument("--name", default="run")
    parser.add_argument("--opt", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--no_shuffle", dest="shuffle", action="store_false")
    parser.set_defaults(extra=7)
    return parser


def _main(parser: argparse.ArgumentParser) -> ArgparseMain:
    return ArgparseMain(lambda: None, parser=parser, dir="outputs", exclude=())


def _outcome(call: Any, argv: list[str]) -> tuple[str, Optional[dict[str, Any]]]:
    try:
        return "ok", call(argv)[1]
    except Exception as exc:
        return type(exc).__name__, None


TOKENS = [
    "--lr=0.5", "--lr=1e-3", "--lr=abc", "--lr", "0.2", "--batch-size=8", "--bs=16",
    "--batch_size=4", "--name=x=y", "--name=", "--opt=adam", "--opt=rmsprop", "--amp",
    "--amp=1", "--no_shuffle", "--unknown=3", "--l=0.3", "pos", "-h", "--help",
]  # fmt: skip


def test_random_argvs_agree_with_argparse() -> None:
    main = _main(_parser())
    rng = random.Random(0)
    fast_used = 0
    for _ in range(2000):
        argv = rng.sample(TOKENS, rng.randint(0, 4))
        values = fastargs.fast_parse(
            fastargs.option_table(main.parser) or {}, main.defaults(), argv
        )
        assert _outcome(main.parse, argv) == _outcome(main.slow_parse, argv), argv
        fast_used += values is not None
    assert fast_used > 200  # the fast path really is taken for launcher-style argv


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.add_argument("pos"),
        lambda p: p.add_argument("--req", required=True),
        lambda p: p.add_argument("--many", nargs="+"),
        lambda p: p.add_argument("--tag", action="append"),
        lambda p: p.add_argument("-v", action="count"),
        lambda p: p.add_mutually_exclusive_group().add_argument("--x"),
    ],
)
def test_complex_parsers_use_argparse(build: Any) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    build(parser)
    assert fastargs.option_table(parser) is None


def test_string_default_converted_like_argparse() -> None:
    main = _main(_parser())
    assert main.parse([])[1]["lr"] == 0.1
    assert main.parse(["--lr=0.1"])[1] == main.slow_parse(["--lr=0.1"])[1]
