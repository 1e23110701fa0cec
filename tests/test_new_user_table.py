"""What a new user hit in the grid table (issue 14, items 3, 4 and 6), driven as a user would.

- 3: a pattern, a ``--best`` or a ``--spark`` metric that matches nothing exits 2, naming it,
  the keys or metrics that exist and a close one (``lr=1`` when the values are ``1.0``);
- 4: XPs without history (failed at start) take no part in ``-L`` nor in the ``epoch`` of
  ``--aggregate`` (and their exported epoch is empty, not 0);
- 6: the index the table shows is the one ``-l/-t/-f/-T IDX`` and integer patterns take.

Each runs in-process (typer's CliRunner) and, for the main cases, as a real ``gridman``
process. The XPs run for real (inline backend: in the command's own process tree).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gridman.testing import run_cli
from gridman.testing.grids import make_grid_project, parse_json_rows

#: 3 learning rates x 3 seeds, a float-valued key (``lr=1`` is not ``lr=1.0``).
SWEEP = "for lr in [0.01, 0.1, 1.0]:\n    for seed in range(3):\n        launcher(lr=lr, seed=seed)"

#: A main whose seed 2 fails before its first epoch: an XP without history.
EARLY_FAIL_MAIN = """\
import argparse

import gridman

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int, default=3)


@gridman.argparse_main(parser=parser, dir="outputs")
def main():
    xp = gridman.get_xp()
    if xp.cfg.seed == 2:
        raise RuntimeError("fails at start")
    for epoch in range(len(xp.link.history), xp.cfg.epochs + xp.cfg.seed):
        xp.link.push_metrics({"epoch": epoch + 1, "acc": 0.5 + 0.1 * epoch})


if __name__ == "__main__":
    main()
"""
EARLY = "for seed in range(3):\n    launcher(lr=0.1, seed=seed)"
INLINE = ("--backend", "inline")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_grid_project(tmp_path_factory.mktemp("sweep") / "proj", {"sweep": SWEEP})
    result = run_cli(["grid", "sweep", *INLINE], root)
    assert result.exit_code == 0, result.output
    return root


def gridman(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gridman ARGS`` as a real process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    return subprocess.run([sys.executable, "-m", "gridman", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


# -- 3: patterns and metrics that match nothing ------------------------------------------
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["grid", "sweep", "nosuchkey"], ["'nosuchkey' matches no XP", "lr, seed"]),
        (["grid", "sweep", "lr=1"], ["'lr=1' matches no XP", "did you mean lr=1.0?"]),
        (["grid", "sweep", "lrr=0.1"], ["no key 'lrr'", "did you mean lr=0.1?"]),
        (["grid", "sweep", "lr=0.1", "seed=7"], ["'seed=7' matches no XP", "values of seed"]),
        (["grid", "sweep", "-C", "lr=2"], ["'lr=2' matches no XP"]),
        (["export", "sweep", "lr=1"], ["did you mean lr=1.0?"]),
        (["plot", "sweep", "lr=1", "-m", "train.loss"], ["did you mean lr=1.0?"]),
        (["export", "sweep", "--best", "nosuch:max"], ["--best 'nosuch'", "train.loss"]),
        (["export", "sweep", "--best", "train.los:min"], ["did you mean 'train.loss'?"]),
        (["grid", "sweep", "--spark", "nosuch"], ["--spark 'nosuch'", "train.loss"]),
        (["plot", "sweep", "-m", "nosuch"], ["'nosuch'", "train.loss"]),
    ],
)
def test_matching_nothing_exits_2_and_says_what_exists(
    sweep: Path, args: list[str], said: list[str]
) -> None:
    result = run_cli(args, sweep)
    assert result.exit_code == 2, result.output
    for text in said:
        assert text in result.stderr, result.stderr
    assert "plan for grid" not in result.output  # nothing planned, nothing scheduled


def test_matching_nothing_as_a_real_process(sweep: Path) -> None:
    done = gridman(sweep, "grid", "sweep", "lr=1")
    assert done.returncode == 2, done.stderr
    assert "did you mean lr=1.0?" in done.stderr and "Traceback" not in done.stderr
    done = gridman(sweep, "export", "sweep", "--best", "nosuch:max")
    assert done.returncode == 2 and "metrics in their histories" in done.stderr, done.stderr
    assert done.stdout == ""  # no blank table


def test_a_good_spark_and_best_still_work(sweep: Path) -> None:
    result = run_cli(["grid", "sweep", "--spark", "train.loss", "lr=0.1"], sweep)
    assert result.exit_code == 0, result.output
    result = run_cli(["export", "sweep", "--best", "train.loss:min"], sweep)
    assert result.exit_code == 0, result.output


# -- 4: XPs without history take no part ------------------------------------------------
@pytest.fixture(scope="module")
def early(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_grid_project(tmp_path_factory.mktemp("early") / "proj", {"early": EARLY},
                             main_source=EARLY_FAIL_MAIN)  # fmt: skip
    result = run_cli(["grid", "early", *INLINE], root)
    assert result.exit_code == 1, result.output  # seed 2 failed
    return root


def test_trim_last_ignores_xps_without_history(early: Path) -> None:
    rows = parse_json_rows(run_cli(["grid", "early", "-L", "--json"], early).stdout)
    epochs = [r["metrics"].get("epoch") for r in rows]
    assert epochs[:2] == [3, 3]  # cut to the shortest history (3 and 4 entries), not to 0
    text = gridman(early, "grid", "early", "-L")
    assert text.returncode == 1, text.stderr
    assert "0.700" in text.stdout  # acc after 3 epochs, in both trained rows


def test_trim_to_an_xp_without_history_is_refused(early: Path) -> None:
    result = run_cli(["grid", "early", "-T", "2"], early)
    assert result.exit_code == 2 and "XP 2 has no history" in result.stderr, result.output


def test_aggregate_epoch_leaves_out_xps_without_history(early: Path) -> None:
    result = run_cli(["grid", "early", "--aggregate", "seed"], early)
    assert result.exit_code == 1, result.output
    group = [line for line in result.stdout.splitlines() if line.lstrip().startswith("0 ")]
    assert group and "3.500 ± 0.707 (2)" in group[0], result.stdout  # not 2.333 ± 2.08
    exported = run_cli(["export", "early"], early)
    records = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["epoch"] for r in records] == ["3", "4", ""], exported.stdout  # never 0
    agg = run_cli(["export", "early", "--aggregate", "seed", "-F", "json"], early)
    assert '"epoch:count": 2' in agg.stdout, agg.stdout


# -- 6: one index for every flag ---------------------------------------------------------
def test_indices_are_the_tables(sweep: Path) -> None:
    shown = parse_json_rows(run_cli(["grid", "sweep", "lr=0.1", "--json"], sweep).stdout)
    assert [r["index"] for r in shown] == [3, 4, 5]
    folder = run_cli(["grid", "sweep", "lr=0.1", "-f", "4"], sweep)
    assert folder.exit_code == 0 and folder.stdout.strip() == shown[1]["folder"], folder.output
    outside = run_cli(["grid", "sweep", "lr=0.1", "-f", "0"], sweep)
    assert outside.exit_code == 2 and "selected: 3, 4, 5" in outside.stderr, outside.output
    picked = parse_json_rows(run_cli(["grid", "sweep", "lr=0.1", "5", "--json"], sweep).stdout)
    assert [r["index"] for r in picked] == [5]
    dropped = parse_json_rows(run_cli(["grid", "sweep", "lr=0.1", "!4", "--json"], sweep).stdout)
    assert [r["index"] for r in dropped] == [3, 5]
    log = run_cli(["grid", "sweep", "lr=0.1", "-l", "5"], sweep)
    assert log.exit_code == 0 and f"xp {shown[2]['sig']} starts" in log.stdout, log.output
    trimmed = run_cli(["grid", "sweep", "lr=0.1", "-T", "3", "--json"], sweep)
    assert trimmed.exit_code == 0, trimmed.output
    out_of_range = run_cli(["grid", "sweep", "-f", "9"], sweep)
    assert out_of_range.exit_code == 2 and "0 to 8" in out_of_range.stderr


def test_indices_as_a_real_process(sweep: Path) -> None:
    done = gridman(sweep, "grid", "sweep", "lr=0.1", "-f", "6")
    assert done.returncode == 2 and "selected: 3, 4, 5" in done.stderr, done.stderr
    done = gridman(sweep, "grid", "sweep", "lr=1.0", "-f", "6")
    assert done.returncode == 0 and done.stdout.strip().endswith(
        parse_json_rows(run_cli(["grid", "sweep", "6", "--json"], sweep).stdout)[0]["sig"]
    ), done.stderr
