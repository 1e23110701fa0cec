"""The project: gridman.yaml discovery and validation, and finding the decorated main."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import gridman
from gridman.core.loader import load_main
from gridman.core.main import ArgparseMain, DecoratedMain
from gridman.core.project import Project, find_root, load_project, main_spec
from gridman.errors import ConfigError, MainNotFoundError, UserCodeError
from gridman.testing import TRAIN_SOURCE, chdir, make_project, run_cli, write_project_file

GRIDMAN_PKG = str(Path(gridman.__file__).parent)

TWO_MAINS = textwrap.dedent(
    """
    import argparse
    import gridman

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.5)


    @gridman.argparse_main(parser=parser)
    def first():
        pass


    @gridman.argparse_main(parser=parser)
    def other():
        pass
    """
)

# Same options as TRAIN_SOURCE but lr defaults to 0.5: `--lr 0.5` is its base signature.
OTHER_SOURCE = TRAIN_SOURCE.replace("default=0.1", "default=0.5")


def load(root: Path, spec: str) -> DecoratedMain:
    return load_main(load_project(root), spec)


# -- gridman.yaml -----------------------------------------------------------------------------


def test_discovery_from_a_subfolder(project: Path) -> None:
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    found = load_project(deep)
    assert found.root == project
    assert found.file == project / "gridman.yaml"
    assert found.settings == {"main": "train.py", "dir": "outputs", "backend": "local"}
    assert found.dir == project / "outputs"
    assert find_root(deep) == project


def test_no_project_file(tmp_path: Path) -> None:
    if find_root(tmp_path.parent) is not None:
        pytest.skip("the temporary folder is inside a gridman project")
    assert find_root(tmp_path) is None
    found = load_project(tmp_path)
    assert found == Project(root=tmp_path)
    assert found.dir is None and found.main_spec is None


def test_gridman_dir_env_wins(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDMAN_DIR", "elsewhere")
    assert load_project(project).dir == project / "elsewhere"


def test_unknown_key(tmp_path: Path) -> None:
    write_project_file(tmp_path, {"mian": "train.py", "dir": "outputs"})
    with pytest.raises(ConfigError, match="unknown key 'mian'") as info:
        load_project(tmp_path)
    assert info.value.hint is not None and "did you mean 'main'" in info.value.hint
    assert str(tmp_path / "gridman.yaml") in info.value.message


def test_malformed_project_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gridman.yaml"
    path.write_text("main: train.py\ndir: outputs\nbackend: : local\n", encoding="utf8")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ConfigError) as info:
        load_project(tmp_path / "sub")  # found from below, reported with its own path
    assert f"{path}:3" in str(info.value)


def test_project_file_must_be_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "gridman.yaml").write_text("- main\n", encoding="utf8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_project(tmp_path)


def test_empty_project_file(tmp_path: Path) -> None:
    (tmp_path / "gridman.yaml").write_text("# nothing yet\n", encoding="utf8")
    assert load_project(tmp_path).settings == {}


def test_section_must_be_a_mapping(tmp_path: Path) -> None:
    write_project_file(tmp_path, {"slurm": "gpu"})
    with pytest.raises(ConfigError, match="`slurm` must be a mapping"):
        load_project(tmp_path).section("slurm")
    assert load_project(tmp_path).section("local") == {}


# -- finding the main -------------------------------------------------------------------------


def test_main_by_module_name(tmp_path: Path) -> None:
    root = make_project(tmp_path, settings={"main": "mytrain"})
    (root / "train.py").rename(root / "mytrain.py")
    project = load_project(root)
    main = load_main(project, main_spec(project))
    assert isinstance(main, ArgparseMain)
    assert main.source == root / "mytrain.py"
    with chdir(root):  # the XP root comes from the project around the current directory
        assert main.dir == root / "outputs"


def test_main_by_path(tmp_path: Path) -> None:
    root = make_project(tmp_path, settings={"main": "src/train.py"})
    (root / "src").mkdir()
    (root / "train.py").rename(root / "src" / "train.py")
    project = load_project(root)
    main = load_main(project, main_spec(project))
    assert main.source == root / "src" / "train.py"
    assert load_main(project, "src/train.py") is main  # imported once


def test_main_by_path_and_attribute(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(TWO_MAINS, encoding="utf8")
    assert load(tmp_path, "two.py:other").__name__ == "other"
    assert load(tmp_path, "two.py:first").__name__ == "first"
    assert load(tmp_path, "two:other").__name__ == "other"
    with pytest.raises(MainNotFoundError, match="'parser' is not a gridman main"):
        load(tmp_path, "two.py:parser")


def test_two_mains_without_main_attr_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "two.py").write_text(TWO_MAINS, encoding="utf8")
    with pytest.raises(MainNotFoundError, match=r"several gridman mains \(first, other\)") as info:
        load(tmp_path, "two.py")
    assert info.value.hint is not None and "two.py:NAME" in info.value.hint


def test_attribute_named_main_wins(tmp_path: Path) -> None:
    (tmp_path / "three.py").write_text(TWO_MAINS + "\nmain = other\n", encoding="utf8")
    assert load(tmp_path, "three.py").__name__ == "other"


def test_module_without_main(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("x = 1\n", encoding="utf8")
    with pytest.raises(MainNotFoundError, match="defines no gridman main") as info:
        load(tmp_path, "plain.py")
    assert info.value.hint is not None and "@gridman.argparse_main" in info.value.hint


@pytest.mark.parametrize("spec", ["nothere", "nothere.py", "sub/nothere.py", "pkg.nothere"])
def test_missing_main_module(tmp_path: Path, spec: str) -> None:
    with pytest.raises(MainNotFoundError) as info:
        load(tmp_path, spec)
    assert info.value.hint is not None and "gridman.yaml" in info.value.hint


def test_main_spec_precedence(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = load_project(project)
    assert main_spec(found) == "train.py"
    monkeypatch.setenv("GRIDMAN_MAIN", "env.py")
    assert main_spec(found) == "env.py"
    assert main_spec(found, "flag.py") == "flag.py"


def test_no_main_declared_says_how(tmp_path: Path) -> None:
    with pytest.raises(MainNotFoundError, match="no main declared") as info:
        main_spec(load_project(tmp_path))
    hint = info.value.hint or ""
    assert "main: train" in hint and "gridman.yaml" in hint
    assert "--main" in hint and "GRIDMAN_MAIN" in hint
    assert info.value.exit_code == 2


def test_cli_main_flag_and_env_override(project: Path) -> None:
    (project / "other.py").write_text(OTHER_SOURCE, encoding="utf8")
    args = ["info", "--json", "--", "--lr", "0.5"]
    default = run_cli(args, project)
    assert default.exit_code == 0, default.output
    assert json.loads(default.stdout)["sig"] == "3b45fed1"
    for result in (
        run_cli(["info", "--json", "--main", "other.py", "--", "--lr", "0.5"], project),
        run_cli(args, project, env={"GRIDMAN_MAIN": "other.py"}),
    ):
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["sig"] == "97d170e1" and data["delta"] == []


def test_cli_without_any_main(tmp_path: Path) -> None:
    result = run_cli(["info", "--", "--lr", "0.5"], tmp_path)
    assert result.exit_code == 2
    assert "no main declared" in result.stderr
    assert "GRIDMAN_MAIN" in result.stderr


# -- the user's own errors ----------------------------------------------------------------------

BOOM = 'import gridman\n\nx = 1\nraise ValueError("boom at import")\n'


@pytest.mark.parametrize("spec", ["boom.py", "boom"])
def test_user_module_raising_at_import(tmp_path: Path, spec: str) -> None:
    (tmp_path / "boom.py").write_text(BOOM, encoding="utf8")
    with pytest.raises(UserCodeError) as info:
        load(tmp_path, spec)
    message = info.value.message
    assert f'File "{tmp_path / "boom.py"}", line 4' in message
    assert "ValueError: boom at import" in message
    assert GRIDMAN_PKG not in message and "importlib" not in message


def test_user_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "syn.py").write_text("import gridman\ndef f(:\n    pass\n", encoding="utf8")
    with pytest.raises(UserCodeError) as info:
        load(tmp_path, "syn.py")
    assert f'File "{tmp_path / "syn.py"}", line 2' in info.value.message
    assert "SyntaxError" in info.value.message
    assert GRIDMAN_PKG not in info.value.message


def test_user_module_missing_dependency(tmp_path: Path) -> None:
    (tmp_path / "needs.py").write_text("import gridman\nimport gm_no_such_dep\n", encoding="utf8")
    with pytest.raises(UserCodeError, match="No module named 'gm_no_such_dep'") as info:
        load(tmp_path, "needs")
    assert f'File "{tmp_path / "needs.py"}", line 2' in info.value.message


def test_missing_dependency_prefixing_the_main_name(tmp_path: Path) -> None:
    (tmp_path / "gm_nodep_train.py").write_text("import gm_nodep\n", encoding="utf8")
    with pytest.raises(UserCodeError, match="No module named 'gm_nodep'"):
        load(tmp_path, "gm_nodep_train")


def test_cli_reports_user_import_error(project: Path) -> None:
    (project / "train.py").write_text(BOOM, encoding="utf8")
    result = run_cli(["run", "--", "--lr", "0.5"], project)
    assert result.exit_code == 2
    assert f'File "{project / "train.py"}", line 4' in result.stderr
    assert "ValueError: boom at import" in result.stderr
    assert GRIDMAN_PKG not in result.stderr
    assert not (project / "outputs").exists()
