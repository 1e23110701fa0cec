"""Issue 15, items 3 and 4: Dora's main and XP API, and argparse signatures byte-identical to
Dora's, quirks included.

Golden values were computed ONCE with Dora 0.1.13 (Python 3.11, torch installed as Dora's
``jsonable`` imports it) and are written here; never edit them. The command that made them runs
:data:`DORA_SCRIPT` (the very parsers below, given to ``dora.argparse_main``; it prints
each argv's ``xp.sig`` as JSON) after ``ARGVS = {...}`` (the argvs of the tables below)::

    /tmp/dora-venv/bin/python -c "ARGVS = {...}
    <DORA_SCRIPT>"

:func:`test_dora_itself_agrees` runs exactly that wherever that Dora venv exists.

Dora's delta compares each parsed value with ``parser.get_default(key)``, the RAW default: an
option with ``type=Path`` (or ``type=int``) and a string default is in every delta, a list
value differs from a tuple default. The project test runs ``python train.py`` and ``gridman
grid --init`` for real, then finds the XPs again with ``main.get_xp_from_sig``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gridman
from gridman.core.main import ArgparseMain, DecoratedMain, DoraConfig
from gridman.errors import ArgvError, GridmanError, UsageError
from gridman.testing import chdir, forget_modules, write_project_file

GRIDMAN = Path(sys.executable).parent / "gridman"

PARSER_SOURCE = """\
import argparse
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--batch_size", type=int, default=16)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--ckpt", type=Path, default="checkpoints")  # str default, type=Path
parser.add_argument("--root", type=Path, default=Path("data"))
parser.add_argument("--epochs", type=int, default="5")  # str default, type=int
parser.add_argument("--flag", action="store_true")
parser.add_argument("--scale", type=int, default=1)
parser.add_argument("--shape", type=int, nargs="+", default=(2, 3))
parser.add_argument("--num_workers", type=int, default=2)
"""

TRAIN_SOURCE = (
    "import gridman\n"
    + PARSER_SOURCE
    + """

@gridman.argparse_main(parser=parser, exclude=["num_workers"], use_underscore=True)
def main():
    xp = gridman.get_xp()
    (xp.folder / "ran.txt").write_text(str(xp.cfg.batch_size))


if __name__ == "__main__":
    main()
"""
)

#: Dora 0.1.13's (argv, sig, canonical delta) for PARSER_SOURCE, exclude ["num_workers"].
GOLDEN_DORA = [
    ([], "0bf14b63", '[["ckpt", "checkpoints"], ["epochs", 5]]'),
    (["--batch_size=32"], "6581e688",
     '[["batch_size", 32], ["ckpt", "checkpoints"], ["epochs", 5]]'),
    (["--ckpt=checkpoints"], "0bf14b63", '[["ckpt", "checkpoints"], ["epochs", 5]]'),
    (["--ckpt=other"], "7adc411f", '[["ckpt", "other"], ["epochs", 5]]'),
    (["--root=data"], "0bf14b63", '[["ckpt", "checkpoints"], ["epochs", 5]]'),
    (["--root=other"], "9f6dd68c", '[["ckpt", "checkpoints"], ["epochs", 5], ["root", "other"]]'),
    (["--epochs=5"], "0bf14b63", '[["ckpt", "checkpoints"], ["epochs", 5]]'),
    (["--epochs=7"], "a44cfa75", '[["ckpt", "checkpoints"], ["epochs", 7]]'),
    (["--flag"], "b268525d", '[["ckpt", "checkpoints"], ["epochs", 5], ["flag", true]]'),
    (["--scale=1"], "0bf14b63", '[["ckpt", "checkpoints"], ["epochs", 5]]'),
    (["--shape", "2", "3"], "50627026",
     '[["ckpt", "checkpoints"], ["epochs", 5], ["shape", [2, 3]]]'),
    (["--shape", "4"], "67f5f42e", '[["ckpt", "checkpoints"], ["epochs", 5], ["shape", [4]]]'),
    (["--num_workers=9"], "0bf14b63", '[["ckpt", "checkpoints"], ["epochs", 5]]'),
    (["--batch_size=32", "--lr=0.5", "--flag", "--ckpt=x"], "0017877d",
     '[["batch_size", 32], ["ckpt", "x"], ["epochs", 5], ["flag", true], ["lr", 0.5]]'),
]  # fmt: skip

#: Dora 0.1.13's values for tests/test_signature.py's custom parser (exclude ["num_*"]): its
#: ``--lr`` (type=float, default "0.1") and ``--data`` (type=Path, default "data") are in
#: every delta. These replace that file's GOLDEN_CUSTOM, which predates the quirk.
GOLDEN_CUSTOM_DORA = [
    ([], "c705234b"),
    (["--lr", "0.1"], "c705234b"),
    (["--lr", "0.5"], "ffd24330"),
    (["--fail"], "3ff3dac6"),
    (["--no_aug"], "dde96466"),
    (["--data", "./data"], "c705234b"),
    (["--data", "other"], "30665765"),
    (["--num_workers", "8", "--num_threads", "1"], "c705234b"),
    (["--number", "3"], "aed89039"),
    (["--sizes", "1", "2"], "c705234b"),
    (["--sizes", "3"], "ea3e67fa"),
    (["--name", "x y"], "887d3e1b"),
    (["--fail", "--no_aug", "--data", "other", "--lr", "0.5"], "b5d8c37f"),
]


#: A parser with typed string defaults, a Path, a negative flag and list defaults (both sides).
CUSTOM_SOURCE = """
custom = argparse.ArgumentParser()
custom.add_argument("--lr", type=float, default="0.1")
custom.add_argument("--fail", action="store_true")
custom.add_argument("--no_aug", dest="aug", action="store_false")
custom.add_argument("--data", type=Path, default="data")
custom.add_argument("--num_workers", type=int, default=2)
custom.add_argument("--num_threads", type=int, default=4)
custom.add_argument("--number", type=int, default=1)
custom.add_argument("--sizes", type=int, nargs="+", default=[1, 2])
custom.add_argument("--name", default="base")
"""

#: What computed the golden values, run by Dora 0.1.13 (see the module docstring).
DORA_SCRIPT = (
    "import argparse, json, warnings\n"
    "from pathlib import Path\n"
    "warnings.filterwarnings('ignore')\n"
    "from dora import argparse_main\n"
    + PARSER_SOURCE
    + CUSTOM_SOURCE
    + """
tup = argparse.ArgumentParser()
tup.add_argument("--sizes", type=int, nargs="+", default=(1, 2))
out = {}
for name, parser, exclude in [("dora", parser, ["num_workers"]), ("custom", custom, ["num_*"]),
                              ("tuple", tup, [])]:
    main = argparse_main(parser=parser, exclude=exclude, dir="/tmp/dora_golden")(lambda: None)
    out[name] = {json.dumps(a): main.get_xp(a).sig for a in ARGVS[name]}
keys = {"batch_size": 32, "flag": True}
mains = [argparse_main(parser=parser, use_underscore=u)(lambda: None) for u in (True, False)]
out["underscore"] = [m.value_to_argv(keys) for m in mains]
print(json.dumps(out))
"""
)


def _noop() -> None:
    pass


def dora_parser() -> argparse.ArgumentParser:
    scope: dict[str, Any] = {}
    exec(PARSER_SOURCE, scope)
    parser = scope["parser"]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def custom_parser() -> argparse.ArgumentParser:
    scope: dict[str, Any] = {"argparse": argparse, "Path": Path}
    exec(CUSTOM_SOURCE, scope)
    parser = scope["custom"]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


def make(parser: argparse.ArgumentParser, **kwargs: Any) -> ArgparseMain:
    return gridman.argparse_main(parser=parser, **kwargs)(_noop)


@pytest.mark.parametrize(("argv", "sig", "delta"), GOLDEN_DORA, ids=lambda v: repr(v))
def test_golden_signatures_by_dora(argv: list[str], sig: str, delta: str) -> None:
    """The delta and signature Dora gives, byte for byte (both parse paths)."""
    main = make(dora_parser(), exclude=["num_workers"])
    xp = main.get_xp(argv, dir=Path("/nonexistent"))
    assert xp.canonical == delta
    assert xp.sig == sig
    _, values, defaults = main.slow_parse(argv)  # argparse itself agrees with the fast path
    assert main.compute_delta(values, defaults) == xp.delta


@pytest.mark.parametrize(("argv", "sig"), GOLDEN_CUSTOM_DORA, ids=lambda v: repr(v))
def test_golden_custom_parser_by_dora(argv: list[str], sig: str) -> None:
    assert make(custom_parser(), exclude=["num_*"]).get_xp(argv, dir=Path("/x")).sig == sig


def test_tuple_default_and_list_value_differ_as_in_dora() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=(1, 2))
    main = make(parser)
    assert main.get_xp([], dir=Path("/x")).sig == "97d170e1"  # Dora: the empty delta
    assert main.get_xp(["--sizes", "1", "2"], dir=Path("/x")).sig == "6f75b88b"  # Dora's


def test_path_quirk_never_splits_xps() -> None:
    """The raw-default quirk only changes the hash: equal values still give one XP."""
    main = make(dora_parser(), exclude=["num_workers"])
    argvs = ([], ["--ckpt", "checkpoints"], ["--ckpt=./checkpoints"], ["--epochs", "5"])
    sigs = {main.get_xp(a, dir=Path("/x")).sig for a in argvs}
    assert sigs == {"0bf14b63"}


def test_use_underscore_as_dora() -> None:
    """True: keys as written (Dora's default); False: `_` -> `-`; not given: either finds."""
    values = {"batch_size": 32, "flag": True}
    keep = make(dora_parser(), use_underscore=True)
    assert [t for k, v in values.items() for t in keep.value_to_argv(k, v)] == [
        "--batch_size=32",
        "--flag",
    ]  # Dora's output (see the module docstring)
    dashed = argparse.ArgumentParser()
    dashed.add_argument("--batch-size", type=int, default=16)
    dashed.add_argument("--flag", action="store_true")
    dash = make(dashed, use_underscore=False)
    assert [t for k, v in values.items() for t in dash.value_to_argv(k, v)] == [
        "--batch-size=32", "--flag"]  # fmt: skip
    assert dash.get_xp(dash.value_to_argv("batch_size", 32), dir=Path("/x")).cfg.batch_size == 32
    with pytest.raises(ArgvError, match=r"no option --batch_size.*use_underscore=True"):
        make(dashed, use_underscore=True).value_to_argv("batch_size", 32)
    with pytest.raises(ArgvError, match=r"no option --batch-size.*use_underscore=False"):
        make(dora_parser(), use_underscore=False).value_to_argv("batch_size", 32)
    # not given: today's matching, an underscore key finds its dashed flag (old grids work)
    assert make(dashed).value_to_argv("batch_size", 32) == ["--batch-size=32"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"local_code": True}, "local_code=True.*not supported"),
        ({"post_git_save_commands": ["make"]}, "post_git_save_commands.*not supported"),
        ({"grid_package": "pkg.grids"}, "grid_package.*grids_dir"),
        ({"xps": "runs"}, "xps='runs'.*not supported"),
        ({"history": "h.json"}, "history.*not supported"),
        ({"use_rendezvous": True}, "use_rendezvous.*not supported"),
        ({"shep": object()}, "shep=.*not supported"),
        ({"dirr": "x"}, "unknown keyword 'dirr'"),
        ({"git_save": "yes"}, "git_save='yes'"),
        ({"slurm": {"gpu": 2}}, "unknown key.*gpu"),
        ({"slurm": 3}, "slurm=3"),
    ],
)
def test_unsupported_dora_keywords_refused_at_decoration(
    kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        gridman.argparse_main(parser=dora_parser(), **kwargs)


def test_dora_keywords_accepted(tmp_path: Path) -> None:
    """Dora's defaults pass; git_save, shared, slurm and exclude reach ``main.dora``."""
    from dataclasses import dataclass, field

    @dataclass
    class SlurmConfig:  # the shape of Dora's: every field counts, unused ones are dropped
        gpus: int = 2
        partition: str = "debug"
        setup: list[str] = field(default_factory=list)
        dependents: int = 0
        qos: Any = None

    write_project_file(tmp_path, {"dir": "outputs"})
    with chdir(tmp_path):
        main = make(dora_parser(), exclude=["num_*"], git_save=True, shared="shared",
                    slurm=SlurmConfig(), local_code=False, xps="xps", history="history.json",
                    post_git_save_commands=[], use_rendezvous=False, grid_package=None)  # fmt: skip
        dora = main.dora
        assert isinstance(dora, DoraConfig)
        assert dora.dir == main.dir == tmp_path / "outputs"
        assert dora.exclude == ("num_*",)
        assert dora.git_save is True and dora.shared == tmp_path / "shared"
    assert main.resource_defaults() == {"gpus": 2, "partition": "debug", "setup": []}
    assert make(dora_parser(), slurm={"gpus": 4}).resource_defaults() == {"gpus": 4}
    assert make(dora_parser()).dora.git_save is False
    # a Hydra main's dora object is the same class (tests/test_hydra_main.py reads its fields)
    from gridman.core import hydra_main

    assert hydra_main.DoraSection is DoraConfig
    assert isinstance(DecoratedMain.__dict__["dora"], property)


def _load_train(project: Path) -> ArgparseMain:
    forget_modules(project)
    spec = importlib.util.spec_from_file_location("_dora_api_train", project / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.main, ArgparseMain)
    return module.main


def _run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    return subprocess.run([*args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.skipif(not GRIDMAN.exists(), reason=f"{GRIDMAN} is not installed")
def test_get_xp_from_sig_after_a_real_run_and_a_grid_init(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text(TRAIN_SOURCE)
    write_project_file(project, {"main": "train.py", "dir": "outputs"})
    (project / "grids").mkdir()
    (project / "grids" / "under.py").write_text(
        "import gridman\n\n\n@gridman.Explorer\ndef explorer(launcher):\n"
        "    launcher(batch_size=32)\n    launcher(flag=True)\n"
    )
    ran = _run(project, sys.executable, "train.py", "--batch_size=32", "--lr=0.5", "--flag",
               "--ckpt=x")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    init = _run(project, str(GRIDMAN), "grid", "under", "--init")
    assert init.returncode == 0, init.stdout + init.stderr
    with chdir(project):
        main = _load_train(project)
        xp = main.get_xp_from_sig("0017877d")  # Dora's signature of that argv
        assert xp.argv == ["--batch_size=32", "--lr=0.5", "--flag", "--ckpt=x"]
        assert (xp.folder / "ran.txt").read_text() == "32"
        # the grid's launcher keys, as written (use_underscore=True), gave Dora's signatures
        assert main.get_xp_from_sig("6581e688").argv == ["--batch_size=32"]
        assert main.get_xp_from_sig("b268525d").argv == ["--flag"]
        with pytest.raises(UsageError, match="no initialised XP") as info:
            main.get_xp_from_sig("0bf14b63")  # the defaults' XP: never initialised
        assert "gridman grid NAME --init" in str(info.value)
        with pytest.raises(UsageError, match="not a signature"):
            main.get_xp_from_sig("../etc")
        # a parser whose defaults changed since: the recorded argv gives another signature
        argv_file = xp.folder.parent / "6581e688" / "argv.json"
        data = json.loads(argv_file.read_text())
        argv_file.write_text(json.dumps({**data, "argv": ["--batch_size=64"]}))
        with pytest.raises(GridmanError, match="now gives signature"):
            main.get_xp_from_sig("6581e688")


def test_get_xp_from_sig_reads_doras_shared_repository(tmp_path: Path) -> None:
    """With ``shared=``, an XP recorded by Dora there (``xps/<sig>/.argv.json``) is found."""
    write_project_file(tmp_path, {"dir": "outputs"})
    shared = tmp_path / "shared" / "xps" / "6581e688"
    shared.mkdir(parents=True)
    (shared / ".argv.json").write_text(json.dumps(["--batch_size=32"]))
    with chdir(tmp_path):
        main = make(dora_parser(), exclude=["num_workers"], shared=tmp_path / "shared")
        assert main.get_xp_from_sig("6581e688").argv == ["--batch_size=32"]


def check_against_dora(python: Path, folder: Path) -> None:
    """Rerun DORA_SCRIPT with Dora 0.1.13's interpreter ``python``: the tables above are its.

    Not a test (CI has no Dora): run it by hand where a Dora venv exists (bench/dora_env.sh):
    ``python tests/test_dora_main_api.py /tmp/dora-venv/bin/python``.
    """
    argvs = {
        "dora": [a for a, _, _ in GOLDEN_DORA],
        "custom": [a for a, _ in GOLDEN_CUSTOM_DORA],
        "tuple": [[], ["--sizes", "1", "2"]],
    }
    code = f"ARGVS = {argvs!r}\n{DORA_SCRIPT}"
    done = subprocess.run([str(python), "-c", code], cwd=folder, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["dora"] == {json.dumps(a): sig for a, sig, _ in GOLDEN_DORA}
    assert out["custom"] == {json.dumps(a): sig for a, sig in GOLDEN_CUSTOM_DORA}
    assert out["tuple"] == {"[]": "97d170e1", json.dumps(["--sizes", "1", "2"]): "6f75b88b"}
    assert out["underscore"] == [["--batch_size=32", "--flag"], ["--batch-size=32", "--flag"]]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        check_against_dora(Path(sys.argv[1]), Path(scratch))
    print("the golden signatures are Dora's")
