"""Hydra mains (``gridman.hydra_main``): Dora's signatures, its ``dora:``/``slurm:`` sections,
planning from cached compositions, and real runs through ``gridman run`` and ``gridman grid``.

The fixture project tests/data/hydra_proj (written for these tests) has config groups ``dset``
and ``model`` with a nested group ``model/scale``, interpolations, a ``dora:`` and a ``slurm:``
section, a Hydra main with ``version_base="1.1"`` (hproj/train.py), one with Hydra's current
defaults (hproj/train13.py) and a grid in the top-level ``grids/`` folder.

These tests need hydra-core and omegaconf (``pip install 'gridman[hydra]'``): without them they
skip, except in CI (``CI`` set), which installs the extra and where a missing one fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

try:
    import hydra  # noqa: F401
    import omegaconf  # noqa: F401
except ImportError:
    if os.environ.get("CI"):
        raise
    pytest.skip("hydra-core/omegaconf missing: pip install 'gridman[hydra]'",
                allow_module_level=True)  # fmt: skip

from omegaconf import OmegaConf

from gridman.core.explore import to_argv
from gridman.core.hydra_main import (
    HydraConfigError,
    HydraMain,
    override_text,
    simplify_argv,
)
from gridman.core.loader import load_main
from gridman.core.project import Project
from gridman.core.resources import Resources
from gridman.errors import ArgvError, UsageError
from gridman.testing import chdir, forget_modules

FIXTURE = Path(__file__).parent / "data" / "hydra_proj"
CASES = json.loads((FIXTURE / "cases.json").read_text())
BIN = Path(sys.executable).parent
GRIDMAN = BIN / "gridman"

# Golden values computed ONCE by Dora 0.1.13 (hydra-core 1.3.8, omegaconf 2.3.1) on this fixture,
# with Dora's own hydra_main, one entry per launcher call of cases.json (same order):
#
#     bench/dora_env.sh && /tmp/dora-venv/bin/pip install hydra-core==1.3.8 omegaconf==2.3.1
#     cd tests/data/hydra_proj && /tmp/dora-venv/bin/python dora_golden.py
#
# (argv, delta sorted by key, sig) as Dora printed them; Dora's delta lists group choices first.
GOLDEN: list[tuple[list[str], list[list[Any]], str]] = [
    ([], [], "97d170e1"),
    (["dset=studio"], [["dset", "studio"]], "13d29a3a"),
    (["dset=field"], [["dset", "field"]], "7f460d0e"),
    (["model/scale=large"], [["model/scale", "large"]], "2d60732e"),
    (["model=convnet"], [["model", "convnet"]], "1076ae2b"),
    (["optim.lr=0.0001"], [["optim.final_lr", 0.0001], ["optim.lr", 0.0001]], "58b87336"),
    (["optim.lr=1e-05"], [["optim.final_lr", 1e-05], ["optim.lr", 1e-05]], "9a2ca814"),
    (["optim.lr=0.0003"], [], "97d170e1"),
    (["train.kernels=[3, 5, 7]"], [["train.kernels", [3, 5, 7]]], "3f827cd2"),
    (["train.amp=true"], [["train.amp", True]], "07a0ef84"),
    (['optim.sched="linear"'], [["optim.sched", "linear"]], "2e27bd95"),
    (["optim.sched=null"], [["optim.sched", None]], "09bcc5e6"),
    (['optim.name="1e-3"'], [["optim.name", "1e-3"]], "12228fdd"),
    (["optim.betas=[0.8, 0.99]"], [["optim.betas", [0.8, 0.99]]], "a9dc6adc"),
    (["data.num_workers=8"], [], "97d170e1"),
    (["slurm.gpus=2", "dora.git_save=true"], [], "97d170e1"),
    (["+train.log_every=10"], [], "97d170e1"),
    (["dset=field", "optim.lr=0.01"],
     [["dset", "field"], ["optim.final_lr", 0.01], ["optim.lr", 0.01]], "23fa8335"),
    (["dset=field", "optim.lr=0.001"],
     [["dset", "field"], ["optim.final_lr", 0.001], ["optim.lr", 0.001]], "11b4a045"),
    (["dset=studio"], [["dset", "studio"]], "13d29a3a"),
    (["+extra.tag=hello"], [["extra", {"tag": "hello"}]], "6c23f90e"),
    (["+extra={a: 1, b: [1, 2]}"], [["extra", {"a": 1, "b": [1, 2]}]], "c5a6c1b7"),
    (["model.width=64"],
     [["model.channels", [16, "${model.width}"]], ["model.width", 64]], "5ba20589"),
    (["optim.final_lr=0.001"], [["optim.final_lr", 0.001]], "598bad4e"),
    (['data.path="/tmp/elsewhere"'], [["data.path", "/tmp/elsewhere"]], "bd0abbcb"),
    (["dset=field", "model/scale=large", "optim.lr=0.001", "train.kernels=[5]"],
     [["dset", "field"], ["model/scale", "large"], ["optim.final_lr", 0.001],
      ["optim.lr", 0.001], ["train.kernels", [5]]], "8fc67752"),
    (["dset=field", "data.batch_size=64"],
     [["data.batch_size", 64], ["dset", "field"]], "73836749"),
    (["seed=43", "data.num_workers=4", "model/scale=small"],
     [["model/scale", "small"], ["seed", 43]], "2854d725"),
    (["dset=field", "model/scale=small", "optim.lr=0.001"],
     [["dset", "field"], ["model/scale", "small"], ["optim.final_lr", 0.001],
      ["optim.lr", 0.001]], "6c66fbfa"),
    (["dset=field", "model/scale=small", "optim.lr=0.01"],
     [["dset", "field"], ["model/scale", "small"], ["optim.final_lr", 0.01],
      ["optim.lr", 0.01]], "b47835cf"),
    (["dset=field", "model/scale=large", "optim.lr=0.001"],
     [["dset", "field"], ["model/scale", "large"], ["optim.final_lr", 0.001],
      ["optim.lr", 0.001]], "d7093e66"),
    (["dset=field", "model/scale=large", "optim.lr=0.01"],
     [["dset", "field"], ["model/scale", "large"], ["optim.final_lr", 0.01],
      ["optim.lr", 0.01]], "40f0714a"),
]  # fmt: skip
#: the sigs of grids/hgrid.py's XPs (the last four launcher calls of cases.json)
GRID_SIGS = [sig for _, _, sig in GOLDEN[-4:]]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A fresh copy of the fixture project (its runs write outputs/ into it)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "hydra_proj"))


def load(root: Path, spec: str = "hproj.train") -> HydraMain:
    main = load_main(Project(root=root), spec)
    assert isinstance(main, HydraMain)
    return main


def launcher_argv(main: HydraMain, parts: list[Any]) -> list[str]:
    """The argv a grid's launcher builds from these arguments (bind/call, in order)."""
    argv: list[str] = []
    for part in parts:
        argv += to_argv(main, part)
    return argv


def test_golden_table_matches_the_cases() -> None:
    assert len(GOLDEN) == len(CASES)


@pytest.mark.parametrize("index", range(len(GOLDEN)))
def test_signature_is_doras(proj: Path, index: int) -> None:
    """argv, delta and signature of each launcher call are the ones Dora 0.1.13 computed."""
    argv, delta, sig = GOLDEN[index]
    main = load(proj)
    xp = main.get_xp(launcher_argv(main, CASES[index]))
    assert xp.argv == argv
    assert [list(p) for p in xp.delta] == sorted(delta, key=lambda p: p[0])
    assert xp.sig == sig
    assert xp.folder.name == sig


def test_cached_planning_gives_what_hydra_composes(proj: Path) -> None:
    """The config of every case, built from a cached composition plus its value overrides,
    is the one Hydra composes from scratch with the whole argv."""
    main = load(proj)
    for parts in CASES:
        argv = simplify_argv(launcher_argv(main, parts))
        planned = main.get_xp(argv).cfg
        composed, _ = main._compose(argv)
        assert OmegaConf.to_container(planned) == OmegaConf.to_container(composed), argv


def test_a_grid_composes_once_per_set_of_group_choices(
    proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """80 XPs over 4 group-choice sets: 4 compositions (+1 without overrides), not 80+."""
    main = load(proj)
    calls: list[list[str]] = []
    real = main._compose

    def counted(overrides: list[str]) -> Any:
        calls.append(list(overrides))
        return real(overrides)

    monkeypatch.setattr(main, "_compose", counted)
    sigs = set()
    for dset in ("studio", "field"):
        for scale in ("small", "large"):
            for lr in (0.001, 0.002, 0.005, 0.01):
                for seed in range(5):
                    parts = [{"dset": dset, "model/scale": scale}, {"optim.lr": lr, "seed": seed}]
                    sigs.add(main.get_xp(launcher_argv(main, parts)).sig)
    assert len(sigs) == 80
    choices = [
        (f"dset={d}", f"model/scale={s}") for d in ("studio", "field") for s in ("small", "large")
    ]
    assert sorted(map(tuple, calls)) == sorted([(), *choices])  # (): the dora section
    # what needs a composition of its own is composed from scratch, with the whole argv
    xp = main.get_xp(["+dset@other=field", "seed=3"])
    assert calls[-1] == ["+dset@other=field", "seed=3"]
    assert xp.cfg.other.name == "field"


def test_dora_section_and_slurm_resources(proj: Path, tmp_path: Path) -> None:
    """dir relative to where gridman runs, exclude globs plus dora.*/slurm.*, resources."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with chdir(elsewhere):
        main = load(proj)
        assert main.dir == elsewhere / "outputs"
        assert main.dora.dir == elsewhere / "outputs"
    assert main.exclude == ["data.num_workers", "train.log_*", "dora.*", "slurm.*"]
    assert main.dora.git_save is False and main.dora.shared is None
    defaults = main.resource_defaults()
    assert defaults == {"gpus": 0, "mem_per_gpu": 4, "cpus_per_gpu": 2, "time": 30,
                        "partition": "debug"}  # fmt: skip
    assert Resources().with_changes(defaults).partition == "debug"


def test_dora_section_errors_are_clear(proj: Path) -> None:
    config = proj / "hproj" / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("  git_save: false", "  gitsave: false"))
    with pytest.raises(HydraConfigError, match=r"unknown key.*gitsave") as info:
        _ = load(proj).dora
    assert "git_save" in (info.value.hint or "")
    config.write_text(config.read_text().replace("  partition: debug", "  partitio: debug"))
    forget_modules(proj)  # a new main reads the config again
    with pytest.raises(HydraConfigError, match="partitio"):
        load(proj).resource_defaults()


def test_value_to_argv_groups_raw_values_through_json(proj: Path) -> None:
    main = load(proj)
    assert main.value_to_argv("dset", "field") == ["dset=field"]
    assert main.value_to_argv("model/scale", "large") == ["model/scale=large"]
    assert main.value_to_argv("optim.lr", 1e-05) == ["optim.lr=1e-05"]
    assert main.value_to_argv("optim.sched", "linear") == ['optim.sched="linear"']
    assert main.value_to_argv("+x", {"a": None, 1: [True, 2.5]}) == ["+x={a: null, 1: [true, 2.5]}"]
    assert override_text(Path("/a b")) == '"/a b"'
    with pytest.raises(UsageError, match="cannot give"):
        main.value_to_argv("seed", object())


def test_repeated_key_keeps_last_value_at_its_place() -> None:
    assert simplify_argv(["a=1", "g=x", "a=2", "b=3"]) == ["g=x", "a=2", "b=3"]
    assert simplify_argv(["+a=1", "a=2"]) == ["+a=1", "a=2"]  # not the same key for Hydra
    with pytest.raises(ArgvError, match="not a Hydra override"):
        simplify_argv(["--lr", "0.1"])


def test_bad_overrides_are_argv_errors(proj: Path) -> None:
    main = load(proj)
    with pytest.raises(ArgvError, match="dset"):
        main.get_xp(["dset=nope"])
    with pytest.raises(ArgvError, match=r"optim\.nope"):
        main.get_xp(["optim.nope=1"])
    with pytest.raises(ArgvError, match="delete"):
        main.get_xp(["~optim.sched"])


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from gridman.core import hydra_main as module

    monkeypatch.setitem(sys.modules, "hydra", None)  # import hydra -> ImportError
    with pytest.raises(HydraConfigError, match="hydra-core") as info:
        module.hydra_main(config_path="conf", config_name="config")(lambda cfg: None)
    assert "gridman[hydra]" in (info.value.hint or "")


def test_import_gridman_does_not_import_hydra() -> None:
    code = (
        "import sys, gridman; gridman.argparse_main; gridman.get_xp\n"
        "assert 'hydra' not in sys.modules and 'omegaconf' not in sys.modules, 'imported'\n"
        "assert callable(gridman.hydra_main) and 'hydra' not in sys.modules, 'at access'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- real runs ------------------------------------------------------------------------------
def gridman(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDMAN_", "HYDRA_"))}
    return subprocess.run([str(GRIDMAN), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def test_gridman_run_runs_the_xp_in_its_folder(proj: Path) -> None:
    """version_base 1.1: main(cfg) gets the composed config, cwd is the XP folder, Hydra's
    .hydra/ and the main's relative files land there; the folder is Dora's <dir>/xps/<sig>."""
    done = gridman(["run", "dset=field", "optim.lr=0.001"], proj)
    assert done.returncode == 0, done.stderr
    folder = proj.resolve() / "outputs" / "xps" / "11b4a045"  # Dora's sig (GOLDEN)
    ran = json.loads((folder / "ran.json").read_text())
    assert ran["cwd"] == str(folder) == ran["folder"]
    assert (ran["sig"], ran["lr"], ran["dset"], ran["path"]) == (
        "11b4a045", 0.001, "field", "/data/field/field")  # fmt: skip
    overrides = (folder / ".hydra" / "overrides.yaml").read_text()
    assert "dset=field" in overrides and "optim.lr=0.001" in overrides
    assert (folder / "train.log").is_file()  # Hydra's job log, named after the script
    history = json.loads((folder / "history.json").read_text())
    assert [h["train"]["epoch"] for h in history] == [0, 1]
    assert json.loads((folder / "job.json").read_text())["state"] == "COMPLETED"


def test_gridman_run_version_base_none_keeps_cwd(proj: Path) -> None:
    done = gridman(["run", "--main", "hproj.train13", "seed=7"], proj)
    assert done.returncode == 0, done.stderr
    # not the project's main (gridman.yaml says hproj.train): an XP root of its own
    assert not (proj / "outputs" / "xps").exists()
    (folder,) = (proj / "outputs" / "mains" / "hproj.train13" / "xps").iterdir()
    assert json.loads((folder / "argv.json").read_text())["main"] == "hproj/train13.py:main"
    ran = json.loads((folder / "ran.json").read_text())
    assert ran["cwd"] == str(proj.resolve())
    assert ran["sig"] == folder.name
    assert (folder / ".hydra" / "config.yaml").is_file()


def test_gridman_run_bad_override_is_a_clear_error(proj: Path) -> None:
    done = gridman(["run", "optim.nope=1"], proj)
    assert done.returncode == 2
    assert "optim.nope" in done.stderr and "Traceback" not in done.stderr
    assert not (proj / "outputs" / "xps").exists()


def test_gridman_grid_runs_the_hydra_grid(proj: Path) -> None:
    """grids/hgrid.py (top-level layout) on the local backend: Dora's sigs, each XP run in
    its folder with its config."""
    done = gridman(["grid", "hgrid", "--backend", "local", "--interval", "0.5"], proj)
    assert done.returncode == 0, done.stdout + done.stderr
    xps = proj.resolve() / "outputs" / "xps"
    assert sorted(p.name for p in xps.iterdir()) == sorted(GRID_SIGS)
    depths = {}
    for sig in GRID_SIGS:
        ran = json.loads((xps / sig / "ran.json").read_text())
        assert ran["cwd"] == str(xps / sig) and ran["dset"] == "field"
        depths[sig] = (ran["depth"], ran["lr"])
    assert sorted(depths.values()) == [(4, 0.001), (4, 0.01), (12, 0.001), (12, 0.01)]
    for sig in GRID_SIGS:
        assert sig in done.stdout


def test_the_configs_slurm_section_gives_the_grids_resources(proj: Path) -> None:
    """The Hydra config's ``slurm:`` section is where every launcher of a grid starts from;
    gridman.yaml's section and the command line's flags override it."""
    from gridman.api.grid import GridOptions, open_grid
    from gridman.core.project import load_project

    forget_modules(proj)
    with chdir(proj):
        session = open_grid(load_project(proj), GridOptions(name="hgrid", dry_run=True))
        res = {s.resources for s in session.sheeps}
        assert len(res) == 1
        (one,) = res
        assert (one.mem_per_gpu, one.cpus_per_gpu, one.time, one.partition) == (4, 2, 30, "debug")
        flags = GridOptions(name="hgrid", dry_run=True, resources=(("time", 5),))
        (changed,) = {s.resources for s in open_grid(load_project(proj), flags).sheeps}
        assert (changed.time, changed.partition) == (5, "debug")
