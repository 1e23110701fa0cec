"""Explore functions: Launcher API, herds and job arrays, and loading grid files (Dora-style)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from gridman.core.explore import GridFileError, Herd, Launcher
from gridman.core.grids import load_grid
from gridman.core.loader import load_main
from gridman.core.main import DecoratedMain
from gridman.core.project import load_project
from gridman.core.resources import FIELD_NAMES, Resources
from gridman.errors import GridmanError, UsageError
from gridman.testing import line_of, make_yaml_project, run_cli, xps_dir
from gridman.testing.grids import GRID_TRAIN_SOURCE, make_grid_project, write_grid

HERE = str(Path(__file__))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = make_grid_project(tmp_path / "proj")
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def main(root: Path) -> DecoratedMain:
    return load_main(load_project(root), "train.py")


def new_launcher(main: DecoratedMain) -> tuple[Launcher, Herd]:
    herd = Herd()
    return Launcher(main, herd), herd


def argvs(herd: Herd) -> list[list[str]]:
    return [s.xp.argv for s in herd.sheeps.values()]


# -- bind / slurm -----------------------------------------------------------------------
def test_bind_returns_a_new_launcher(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    sub = base.bind(epochs=3)
    assert sub is not base
    base(lr=0.2)
    sub(lr=0.2)
    sub.bind(seed=1)(lr=0.2)
    assert argvs(herd) == [
        ["--lr=0.2"],
        ["--epochs=3", "--lr=0.2"],
        ["--epochs=3", "--seed=1", "--lr=0.2"],
    ]


def test_bind_in_place(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    assert base.bind_(seed=1) is base
    assert base.bind_({"epochs": 4}, "--lr=0.3") is base
    base()
    assert argvs(herd) == [["--seed=1", "--epochs=4", "--lr=0.3"]]
    sheep = next(iter(herd.sheeps.values()))
    assert dict(sheep.xp.delta) == {"epochs": 4, "lr": 0.3, "seed": 1}


def test_slurm_returns_a_new_launcher(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    gpu = base.slurm(gpus=2, time=60)
    assert gpu is not base
    base(seed=1)
    gpu(seed=2)
    one, two = herd.sheeps.values()
    assert one.resources.gpus == 0 and one.resources.time is None
    assert two.resources.gpus == 2 and two.resources.time == 60
    assert base.slurm_(partition="dev") is base
    base(seed=3)
    assert list(herd.sheeps.values())[2].resources.partition == "dev"


def test_gpus_default_to_zero(main: DecoratedMain) -> None:
    assert Resources().gpus == 0
    base, herd = new_launcher(main)
    base()
    assert next(iter(herd.sheeps.values())).resources.gpus == 0
    assert base.slurm(gpus=None)._resources.gpus == 0


DORA_KEYS: dict[str, Any] = {
    "gpus": 1,
    "mem_per_gpu": 16,
    "cpus_per_gpu": 4,
    "cpus_per_task": 8,
    "time": 60,
    "partition": "learnfair",
    "comment": "deadline",
    "constraint": "volta32gb",
    "exclude": "node[1-3]",
    "qos": "high",
    "account": "research",
    "setup": ["module load cuda"],
    "max_num_timeout": 5,
    "one_task_per_node": True,
    "array_parallelism": 16,
}


@pytest.mark.parametrize(("key", "value"), DORA_KEYS.items(), ids=list(DORA_KEYS))
def test_every_dora_key_is_valid(main: DecoratedMain, key: str, value: Any) -> None:
    base, herd = new_launcher(main)
    base.slurm_(**{key: value})
    base()
    resources = next(iter(herd.sheeps.values())).resources
    expected = tuple(value) if isinstance(value, list) else value
    assert getattr(resources, key) == expected
    assert key in FIELD_NAMES


def test_all_dora_keys_at_once(main: DecoratedMain) -> None:
    base, _ = new_launcher(main)
    resources = base.slurm(**DORA_KEYS)._resources
    assert resources.setup == ("module load cuda",)
    assert Resources.from_json(resources.to_json()) == resources


def test_unknown_resource_lists_valid_keys_with_a_close_match(main: DecoratedMain) -> None:
    base, _ = new_launcher(main)
    with pytest.raises(UsageError) as info:
        base.slurm_(gpu=1)
    error = info.value
    assert isinstance(error, GridFileError)
    assert "unknown resource 'gpu'" in error.message
    assert error.message.startswith(f"{HERE}:")  # where the launcher was called
    assert "did you mean 'gpus'?" in str(error.hint)
    for key in DORA_KEYS:
        assert key in str(error.hint)
    with pytest.raises(UsageError, match="unknown resource 'partitoin'") as typo:
        base.slurm(partitoin="x")
    assert "did you mean 'partition'?" in str(typo.value.hint)


@pytest.mark.parametrize("gpus", [-1, "2", 1.5])
def test_bad_gpu_counts(main: DecoratedMain, gpus: Any) -> None:
    base, _ = new_launcher(main)
    with pytest.raises(UsageError, match="gpus must be a non-negative integer"):
        base.slurm_(gpus=gpus)


# -- launcher arguments -----------------------------------------------------------------
def test_argument_forms_give_the_same_xp(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    base({"lr": 0.2, "seed": 1})
    base("--lr=0.2", "--seed=1")
    base(["--lr", "0.2", ["--seed", "1"]])
    base("--seed", "1", lr=0.2)
    base({"seed": 1}, lr=0.20)
    assert len(herd.sheeps) == 1
    assert herd.duplicates == 4
    assert argvs(herd) == [["--lr=0.2", "--seed=1"]]  # the first call's argv is kept


def test_bad_argument_type(main: DecoratedMain) -> None:
    base, _ = new_launcher(main)
    with pytest.raises(UsageError, match="must be str, dict or list, got float"):
        base(0.5)


def test_dict_key_uses_the_dashed_option_the_parser_declares(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    base(batch_size=32)  # declared as --batch-size
    base({"batch-size": 64})
    assert argvs(herd) == [["--batch-size=32"], ["--batch-size=64"]]
    assert [dict(s.xp.delta) for s in herd.sheeps.values()] == [
        {"batch_size": 32},
        {"batch_size": 64},
    ]


def test_dict_key_uses_the_underscored_option_the_parser_declares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = GRID_TRAIN_SOURCE.replace('"--batch-size"', '"--batch_size"')
    root = make_grid_project(tmp_path / "other", main_source=source)
    monkeypatch.chdir(root)
    base, herd = new_launcher(load_main(load_project(root), "train.py"))
    base(batch_size=32)
    base(num_workers=8)
    assert argvs(herd) == [["--batch_size=32"], ["--num_workers=8"]]


def test_bool_and_list_values(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    base(fail=True)
    base(fail=False, lr=0.3)
    base(tags=["a", "b"])
    assert argvs(herd) == [["--fail"], ["--lr=0.3"], ["--tags", "a", "b"]]
    with pytest.raises(UsageError, match="is a flag"):
        base(fail="yes")


def test_unknown_key_suggests_the_close_option(main: DecoratedMain) -> None:
    base, _ = new_launcher(main)
    with pytest.raises(UsageError, match="no option for 'seeds'") as info:
        base(seeds=1)
    assert "did you mean 'seed'?" in info.value.message
    assert info.value.message.startswith(f"{HERE}:")


def test_bad_value_is_reported_with_the_parser_message(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    with pytest.raises(UsageError, match="invalid float value: 'abc'"):
        base(lr="abc")
    assert not herd.sheeps


def test_yaml_main_gets_key_value_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_yaml_project(tmp_path / "yaml")
    monkeypatch.chdir(root)
    base, herd = new_launcher(load_main(load_project(root), "train.py"))
    base({"model.depth": 4, "lr": 0.5})
    base(name="other", epochs=3)
    base({"new_key": 1})
    assert argvs(herd) == [
        ["model.depth=4", "lr=0.5"],
        ["name=other", "epochs=3"],
        ["+new_key=1"],
    ]
    deltas = [dict(s.xp.delta) for s in herd.sheeps.values()]
    assert deltas[0] == {"model.depth": 4, "lr": 0.5}
    assert deltas[2] == {"new_key": 1}


# -- herds and job arrays -----------------------------------------------------------------
def test_job_arrays_group_xps(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    base(lr=0.5)
    with base.job_array():
        for seed in range(3):
            base(seed=seed + 1)
    with base.job_array():
        base(lr=0.3)
        base(lr=0.4)
    base(lr=0.6)
    groups = [[herd.sheeps[sig].xp.argv[0] for sig in a] for a in herd.job_arrays if a]
    assert groups == [
        ["--lr=0.5"],
        ["--seed=1", "--seed=2", "--seed=3"],
        ["--lr=0.3", "--lr=0.4"],
        ["--lr=0.6"],
    ]
    for sheep in herd.sheeps.values():
        assert sheep.sig in herd.job_arrays[sheep.array]
    assert herd.array_resources is None  # closed again


def test_job_arrays_cannot_nest_or_change_resources(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    with pytest.raises(GridFileError, match="cannot be nested"):
        with base.job_array():
            with base.job_array():
                pass
    assert herd.array_resources is None
    with pytest.raises(UsageError, match="cannot change resources inside a job array"):
        with base.job_array():
            base.slurm(gpus=1)(seed=1)
    assert herd.array_resources is None
    with base.job_array():
        base.slurm(gpus=0)(seed=1)  # the same resources are fine
    assert len(herd.sheeps) == 1


def test_duplicates_are_counted_once(main: DecoratedMain) -> None:
    base, herd = new_launcher(main)
    with base.job_array():
        base(lr=0.2)
        base(lr=0.2)
    base(lr=0.2)
    base("--lr=0.20")
    base(lr=0.1)  # the default: the same XP as base()
    base()
    base(num_workers=7)  # excluded from the signature
    assert len(herd.sheeps) == 2
    assert herd.duplicates == 5


# -- grid files through `gridman grid` ------------------------------------------------------
BAD_CALLS = {
    "value": 'launcher(lr="abc")  # <- here',
    "key": "launcher(bogus_key=1)  # <- here",
    "resource": "launcher.slurm_(gpu=1)  # <- here",
    "argtype": "launcher(0.5)  # <- here",
    "nested": "with launcher.job_array():\n    with launcher.job_array():  # <- here\n        pass",
}


@pytest.mark.parametrize("kind", list(BAD_CALLS))
def test_bad_launcher_call_aborts_the_grid_with_file_and_line(root: Path, kind: str) -> None:
    body = f"launcher(lr=0.2)\nlauncher(seed=3)\n{BAD_CALLS[kind]}\nlauncher(lr=0.4)"
    path = write_grid(root, "bad", body)
    line = line_of(path.read_text(), "# <- here")
    result = run_cli(["grid", "bad"], root)
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}:" in result.stderr
    assert not xps_dir(root).exists()  # nothing scheduled, no XP folder
    assert not (root / "outputs" / ".pool").exists()
    assert result.stdout == ""


def test_exception_in_explore_function_names_file_and_line(root: Path) -> None:
    path = write_grid(root, "boom", "launcher(lr=0.2)\nvalue = {}['missing']\nlauncher(lr=0.3)")
    result = run_cli(["grid", "boom"], root)
    assert result.exit_code == 2
    line = line_of(path.read_text(), "['missing']")
    assert f'File "{path}", line {line}, in explorer' in result.stderr
    assert "KeyError: 'missing'" in result.stderr
    assert not xps_dir(root).exists()


def test_exception_at_import_names_file_and_line(root: Path) -> None:
    path = write_grid(
        root, "boom", "import gridman\nx = 1\nraise ValueError('at import')\n", raw=True
    )
    result = run_cli(["grid", "boom"], root)
    assert result.exit_code == 2
    assert f'File "{path}", line 3, in <module>' in result.stderr
    assert "ValueError: at import" in result.stderr
    # a broken grid file is not left half-imported
    assert "_gridman_grids.boom" not in sys.modules


def test_grid_file_without_explorer(root: Path) -> None:
    path = write_grid(root, "plain", "import gridman\n\nX = 1\n", raw=True)
    result = run_cli(["grid", "plain"], root)
    assert result.exit_code == 2
    assert f"{path} defines no Explorer" in result.stderr


def test_grid_file_with_several_explorers(root: Path) -> None:
    two = """\
        import gridman

        @gridman.Explorer
        def first(launcher):
            launcher(lr=0.2)

        @gridman.Explorer
        def second(launcher):
            launcher(lr=0.3)
        """
    write_grid(root, "two", two, raw=True)
    result = run_cli(["grid", "two", "--dry-run"], root)
    assert result.exit_code == 2
    assert "several Explorers (first, second)" in result.stderr
    # one named `explorer` wins
    write_grid(root, "two", two.replace("def second", "def explorer"), raw=True)
    grid = load_grid(root / "grids", "two")
    assert grid.explorer.explore.__name__ == "explorer"


@pytest.mark.parametrize("args", [["grid"], ["grid", "nosuch"], ["grid", "../etc"]])
def test_missing_or_unknown_grid_lists_the_grids(root: Path, args: list[str]) -> None:
    write_grid(root, "alpha", "launcher()")
    write_grid(root, "beta", "launcher()")
    write_grid(root, "_helpers", "X = 1\n", raw=True)
    result = run_cli(args, root)
    if len(args) == 1:  # no name: the grids, one a line, on stdout (exit 0)
        assert result.exit_code == 0, result.output
        assert result.stdout.split() == ["alpha", "beta"]
        return
    assert result.exit_code == 2
    assert "grids: alpha, beta" in result.stderr
    assert "_helpers" not in result.stderr
    assert repr(args[1]) in result.stderr


def test_no_grids_folder(root: Path) -> None:
    result = run_cli(["grid", "x"], root)
    assert result.exit_code == 2
    assert "has no grid files" in result.stderr


def test_grid_named_test_loads(root: Path) -> None:
    write_grid(root, "test", "launcher(lr=0.2)\nlauncher(lr=0.3)")
    result = run_cli(["grid", "test", "--dry-run"], root)
    assert result.exit_code == 0, result.output
    assert "plan for grid test: 2 submit" in result.stdout
    test_pkg = sys.modules.get("test")
    assert test_pkg is None or "grids" not in str(getattr(test_pkg, "__file__", ""))


def test_relative_import_between_grid_files(root: Path) -> None:
    write_grid(
        root,
        "_explorers",
        """\
        import gridman

        class MyExplorer(gridman.Explorer):
            def process_history(self, history):
                return {"final": {"loss": history[-1]["train"]["loss"] if history else None}}

        def seeds(launcher, n):
            for seed in range(n):
                launcher(seed=seed)
        """,
        raw=True,
    )
    write_grid(
        root,
        "rel",
        """\
        from ._explorers import MyExplorer, seeds

        @MyExplorer
        def explorer(launcher):
            seeds(launcher.bind(lr=0.5), 2)
        """,
        raw=True,
    )
    assert load_grid(root / "grids", "rel").explorer.__class__.__name__ == "MyExplorer"
    result = run_cli(["grid", "rel", "--backend", "inline"], root)
    assert result.exit_code == 0, result.output
    assert "final" in result.stdout
    assert "2/2 done" in result.stdout


DORA_GRID = """\
    import treetable as tt

    from gridman import Explorer, Launcher


    class MyExplorer(Explorer):
        def get_grid_metrics(self):
            return [tt.group("train", [tt.leaf("epoch"), tt.leaf("loss", ".3f")], align=">")]

        def process_history(self, history):
            train = {"epoch": len(history)}
            for metrics in history:
                train.update(metrics["train"])
            return {"train": train}


    @MyExplorer
    def explorer(launcher: Launcher):
        launcher.slurm_(gpus=0, partition="x")
        launcher.bind_({"lr": 0.1})
        with launcher.job_array():
            for seed in range(2):
                launcher({"seed": seed})
        sub = launcher.bind(epochs=3)
        sub.slurm_(time=10)
        sub(seed=5)
    """


def test_dora_style_grid_runs_and_shows_its_columns(root: Path) -> None:
    write_grid(root, "dora", DORA_GRID, raw=True)
    result = run_cli(["grid", "dora", "--backend", "inline"], root)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("index"))
    assert "train" in lines[header - 1]  # the group above its columns
    assert lines[header].split()[-2:] == ["epoch", "loss"]
    rows = [line.split() for line in lines[header + 1 :] if "COMPLETED" in line]
    assert len(rows) == 3
    # loss = 1 / (1 + last epoch + lr + seed) with the ".3f" format of the grid
    assert rows[0][-2:] == ["2", f"{1 / (1 + 1 + 0.1 + 0):.3f}"]
    assert rows[2][-2:] == ["3", f"{1 / (1 + 2 + 0.1 + 5):.3f}"]
    assert "3/3 done" in result.stdout


def test_edited_grid_file_is_reloaded_even_within_the_same_second(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on most machines
    path = write_grid(root, "edit", "launcher(lr=0.1)")
    stamp = int(time.time()) + 5  # both versions carry the same whole-second mtime
    os.utime(path, (stamp, stamp))
    grid = load_grid(root / "grids", "edit")
    main = load_main(load_project(root), "train.py")
    herd = Herd()
    grid.explorer(Launcher(main, herd))
    assert argvs(herd) == [["--lr=0.1"]]
    path.write_text(path.read_text().replace("0.1", "0.2"), encoding="utf8")
    os.utime(path, (stamp, stamp))
    herd = Herd()
    load_grid(root / "grids", "edit").explorer(Launcher(main, herd))
    assert argvs(herd) == [["--lr=0.2"]]


def test_no_explorer_hint_has_no_literal_backslash(root: Path) -> None:
    write_grid(root, "plain", "X = 1\n", raw=True)
    with pytest.raises(GridmanError) as info:
        load_grid(root / "grids", "plain")
    assert "\\n" not in str(info.value.hint)


def test_grid_source_helper_roundtrip(root: Path) -> None:
    # the helper used throughout these tests writes a loadable explore function
    path = write_grid(root, "helper", "for lr in [0.2, 0.3]:\n    launcher(lr=lr)")
    assert textwrap.dedent(path.read_text()).startswith("import gridman")
    herd = Herd()
    load_grid(root / "grids", "helper").explorer(
        Launcher(load_main(load_project(root), "train.py"), herd)
    )
    assert argvs(herd) == [["--lr=0.2"], ["--lr=0.3"]]


def test_every_listed_grid_loads(root: Path) -> None:
    write_grid(root, "my-grid", "launcher(lr=0.2)")
    listing = run_cli(["grid"], root)
    assert "my-grid" in listing.stdout.split()  # it is offered...
    result = run_cli(["grid", "my-grid", "--dry-run"], root)
    assert result.exit_code == 0, result.output  # ...so it must load
