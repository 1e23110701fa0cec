"""The command line, in-process (typer's CliRunner), on small projects in tmp_path.

Each ``run`` still starts a real worker process (``python -m gridman.backends.worker``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.main

import gridman
from gridman.cli import app
from gridman.core.fsutil import file_lock
from gridman.core.jobs import RUN_LOCK
from gridman.core.link import Link, load_history
from gridman.core.signature import compute_sig
from gridman.testing import (
    FAIL_LINE,
    TRAIN_SOURCE,
    make_project,
    read_json_file,
    run_cli,
    xp_folders,
    xps_dir,
)

GRIDMAN_PKG = str(Path(gridman.__file__).parent)
SIG_LR05 = "3b45fed1"  # `--lr 0.5` with lr defaulting to 0.1 (see test_signature.py)


def job(folder: Path) -> dict[str, Any]:
    data = read_json_file(folder / "job.json")
    assert isinstance(data, dict)
    return data


def run_ok(project: Path, *args: str) -> Any:
    result = run_cli(["run", *args], project)
    assert result.exit_code == 0, result.output
    return result


def test_run_completes(project: Path) -> None:
    result = run_ok(project, "--", "--lr", "0.5")
    folder = xps_dir(project) / SIG_LR05
    assert xp_folders(project) == [folder]
    data = job(folder)
    assert data["state"] == "COMPLETED" and data["backend"] == "foreground"
    attempt = data["attempts"][-1]
    assert attempt["exit_code"] == 0 and attempt["n"] == 1 and attempt["pid"]
    assert attempt["started"] <= attempt["ended"]
    history = load_history(folder)
    assert [h["epoch"] for h in history] == [0, 1]
    assert set(history[0]["train"]) == {"loss"}
    assert "epoch 1: loss" in result.stdout  # the child's output is echoed...
    assert "epoch 1: loss" in (folder / "log" / "1.log").read_text(encoding="utf8")  # ...and logged
    assert f"XP {SIG_LR05} COMPLETED" in result.stderr
    assert read_json_file(folder / "argv.json")["argv"] == ["--lr", "0.5"]


def test_run_failure_keeps_the_user_traceback(project: Path) -> None:
    result = run_cli(["run", "--", "--fail"], project)
    assert result.exit_code == 1
    (folder,) = xp_folders(project)
    data = job(folder)
    assert data["state"] == "FAILED" and data["attempts"][-1]["exit_code"] == 1
    log = (folder / "log" / "1.log").read_text(encoding="utf8")
    assert f'File "{project / "train.py"}", line {FAIL_LINE}, in main' in log
    assert "RuntimeError: planned failure" in log
    assert GRIDMAN_PKG not in log  # gridman's own frames are hidden
    assert len(load_history(folder)) == 2  # metrics pushed before the failure are kept
    assert "FAILED (exit 1)" in result.stderr


def test_run_exit_code_is_recorded(project: Path) -> None:
    result = run_cli(["run", "--", "--exit_code", "3"], project)
    assert result.exit_code == 1
    (folder,) = xp_folders(project)
    assert job(folder)["state"] == "FAILED"
    assert job(folder)["attempts"][-1]["exit_code"] == 3
    assert "FAILED (exit 3)" in result.stderr


def test_sys_exit_message_reaches_the_log(tmp_path: Path) -> None:
    source = TRAIN_SOURCE.replace(
        'raise RuntimeError("planned failure")', 'sys.exit("bad data: 3 corrupt files")'
    )
    project = make_project(tmp_path / "proj", main_source=source)
    result = run_cli(["run", "--", "--fail"], project)
    assert result.exit_code == 1
    (folder,) = xp_folders(project)
    assert job(folder)["attempts"][-1]["exit_code"] == 1
    assert "bad data: 3 corrupt files" in (folder / "log" / "1.log").read_text(encoding="utf8")


def test_bad_training_args_create_nothing(project: Path) -> None:
    result = run_cli(["run", "--", "--lr", "abc"], project)
    assert result.exit_code == 2
    assert "argument --lr: invalid float value: 'abc'" in result.stderr
    assert "usage:" in result.stderr
    assert not (project / "outputs").exists()
    unknown = run_cli(["run", "--", "--lrr", "0.5"], project)
    assert unknown.exit_code == 2
    assert "unrecognized arguments: --lrr" in unknown.stderr
    assert not (project / "outputs").exists()


def test_training_help_is_not_an_error(project: Path) -> None:
    result = run_cli(["run", "--", "--help"], project)
    assert result.exit_code == 0
    assert "--num_workers" in result.stdout
    assert not (project / "outputs").exists()


def test_run_again_by_sig(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    run_ok(project, "--sig", SIG_LR05)
    folder = xps_dir(project) / SIG_LR05
    data = job(folder)
    assert [a["n"] for a in data["attempts"]] == [1, 2]
    assert data["state"] == "COMPLETED"
    assert len(load_history(folder)) == 2  # the main resumed: no epoch pushed twice
    assert (folder / "log" / "2.log").exists()


def test_run_by_sig_with_overrides(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    result = run_ok(project, "--sig", SIG_LR05, "--", "--epochs", "3")
    sig = compute_sig([("epochs", 3), ("lr", 0.5)])
    folder = xps_dir(project) / sig
    assert f"XP {sig}" in result.stderr
    assert read_json_file(folder / "argv.json")["argv"] == ["--lr", "0.5", "--epochs", "3"]
    assert len(load_history(folder)) == 3
    # a later value overrides the stored one
    run_ok(project, "--sig", SIG_LR05, "--", "--lr", "0.1")
    assert (xps_dir(project) / "97d170e1").is_dir()


def test_info_text_and_json(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    text = run_cli(["info", "--sig", SIG_LR05], project)
    assert text.exit_code == 0, text.output
    lines = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert lines["sig"] == SIG_LR05
    assert lines["folder"] == str(xps_dir(project) / SIG_LR05)
    assert lines["argv"] == "--lr 0.5"
    assert lines["delta"] == "lr=0.5"
    assert lines["state"] == "COMPLETED (attempt 1, exit 0)"
    assert lines["history"] == "2 entries"
    assert "train.loss=" in lines["metrics"] and "epoch=1" in lines["metrics"]

    as_json = run_cli(["info", "--sig", SIG_LR05, "--json"], project)
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    for key in ("sig", "folder", "argv", "delta", "state", "history_len", "last_metrics"):
        assert key in data
    assert data["sig"] == SIG_LR05
    assert data["argv"] == ["--lr", "0.5"]
    assert data["delta"] == [["lr", 0.5]]
    assert data["state"] == "COMPLETED"
    assert data["history_len"] == 2
    assert data["last_metrics"]["epoch"] == 1
    assert data["history_error"] is None

    by_argv = run_cli(["info", "--json", "--", "--lr=0.50"], project)
    assert json.loads(by_argv.stdout)["sig"] == SIG_LR05


def test_info_metrics(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    result = run_cli(["info", "--sig", SIG_LR05, "--metrics"], project)
    assert result.exit_code == 0
    assert "[0] train.loss=" in result.stdout and "[1] train.loss=" in result.stdout
    data = json.loads(run_cli(["info", "-s", SIG_LR05, "-m", "--json"], project).stdout)
    assert [h["epoch"] for h in data["history"]] == [0, 1]


def test_info_of_an_xp_never_run(project: Path) -> None:
    result = run_cli(["info", "--json", "--", "--lr", "0.5"], project)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["sig"] == SIG_LR05 and data["exists"] is False and data["state"] is None
    assert not (project / "outputs").exists()
    text = run_cli(["info", "--", "--lr", "0.5"], project)
    assert "not initialised" in text.stdout


def test_info_needs_an_xp(project: Path) -> None:
    result = run_cli(["info"], project)
    assert result.exit_code == 2
    assert "name an XP" in result.stderr


def test_unknown_sig_lists_recent(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    for command in (["info", "--sig", "3b45fed2"], ["run", "--sig", "3b45fed2"]):
        result = run_cli(command, project)
        assert result.exit_code == 2
        assert "no XP with signature 3b45fed2" in result.stderr
        assert f"recent XPs: {SIG_LR05} (--lr 0.5)" in result.stderr


@pytest.mark.parametrize("command", ["run", "info"])
@pytest.mark.parametrize("bad", ["../..", "..", "3B45FED1", "../../etc/passwd"])
def test_bad_sig_is_rejected_before_any_path(project: Path, command: str, bad: str) -> None:
    (project / "train.py").write_text("raise SystemExit('must not be imported')\n")
    result = run_cli([command, "--sig", bad], project)
    assert result.exit_code == 2
    assert "is not a signature" in result.stderr
    assert not (project / "outputs").exists()


def test_malformed_history_is_reported(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    folder = xps_dir(project) / SIG_LR05
    (folder / "history.json").write_text('[{"epoch": 0}, {"ep', encoding="utf8")
    result = run_cli(["info", "--sig", SIG_LR05, "--json"], project)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert "unreadable history" in data["history_error"]
    assert data["history_len"] == 0 and data["state"] == "COMPLETED"
    text = run_cli(["info", "--sig", SIG_LR05, "--metrics"], project)
    assert text.exit_code == 0
    assert "history!" in text.stdout and "unreadable history" in text.stdout


def test_run_clear_yes_deletes_old_history(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    folder = xps_dir(project) / SIG_LR05
    link = Link(folder)
    link.update_history([{"old": True, "epoch": i} for i in range(5)])
    link.close()
    (folder / "checkpoint.th").write_bytes(b"old")
    run_ok(project, "--clear", "--yes", "--", "--lr", "0.5")
    history = load_history(folder)
    assert [h["epoch"] for h in history] == [0, 1]
    assert not any("old" in h for h in history)
    assert not (folder / "checkpoint.th").exists()
    assert [a["n"] for a in job(folder)["attempts"]] == [1]


def test_clear_without_yes_refuses_when_not_interactive(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    folder = xps_dir(project) / SIG_LR05
    result = run_cli(["run", "--clear", "--", "--lr", "0.5"], project)
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert len(load_history(folder)) == 2
    assert len(job(folder)["attempts"]) == 1  # nothing ran


def test_run_refused_while_running(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    folder = xps_dir(project) / SIG_LR05
    with file_lock(folder / RUN_LOCK) as got:
        assert got
        result = run_cli(["run", "--sig", SIG_LR05], project)
        clear = run_cli(["run", "--clear", "--yes", "--sig", SIG_LR05], project)
    assert result.exit_code == 2 and "already running" in result.stderr
    assert clear.exit_code == 2 and "is running" in clear.stderr
    assert folder.is_dir() and len(job(folder)["attempts"]) == 1


def test_info_log(project: Path) -> None:
    run_ok(project, "--", "--lr", "0.5")
    result = run_cli(["info", "--sig", SIG_LR05, "--log"], project)
    assert result.exit_code == 0
    assert "epoch 0: loss" in result.stdout and "done" in result.stdout
    assert f"log      {xps_dir(project) / SIG_LR05 / 'log' / '1.log'}" in result.stdout


def test_info_log_before_any_attempt(project: Path) -> None:
    result = run_cli(["info", "--log", "--", "--lr", "0.5"], project)
    assert result.exit_code == 2
    assert "has no log yet" in result.stderr


def test_malformed_project_file_exits_2_with_file_and_line(project: Path) -> None:
    path = project / "gridman.yaml"
    path.write_text("main: train.py\ndir: outputs\nlocal: [1, 2\n", encoding="utf8")
    for args in (["info", "--sig", SIG_LR05], ["run", "--", "--lr", "0.5"]):
        result = run_cli(args, project)
        assert result.exit_code == 2
        assert f"{path}:" in result.stderr and "malformed YAML" in result.stderr
        assert f"{path}:3" in result.stderr or f"{path}:4" in result.stderr


def test_unknown_project_key_exits_2(project: Path) -> None:
    (project / "gridman.yaml").write_text("main: train.py\ndri: outputs\n", encoding="utf8")
    result = run_cli(["info", "--sig", SIG_LR05], project)
    assert result.exit_code == 2
    assert "unknown key 'dri'" in result.stderr and "did you mean 'dir'" in result.stderr


def test_run_from_a_subfolder(project: Path) -> None:
    sub = project / "notebooks"
    sub.mkdir()
    run_cli(["run", "--", "--lr", "0.5"], sub)
    assert job(xps_dir(project) / SIG_LR05)["state"] == "COMPLETED"
    assert not (sub / "outputs").exists()


def test_gridman_dir_env(project: Path) -> None:
    result = run_cli(["run", "--", "--lr", "0.5"], project, env={"GRIDMAN_DIR": "runs"})
    assert result.exit_code == 0, result.output
    folder = project / "runs" / "xps" / SIG_LR05
    assert job(folder)["state"] == "COMPLETED"
    assert not (project / "outputs").exists()
    info = run_cli(["info", "--sig", SIG_LR05, "--json"], project, env={"GRIDMAN_DIR": "runs"})
    assert json.loads(info.stdout)["folder"] == str(folder)


def test_relative_gridman_dir_from_a_subfolder(project: Path) -> None:
    sub = project / "sub"
    sub.mkdir()
    env = {"GRIDMAN_DIR": "runs"}
    assert run_cli(["run", "--", "--lr", "0.5"], sub, env=env).exit_code == 0
    info = run_cli(["info", "--sig", SIG_LR05, "--json"], sub, env=env)
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["state"] == "COMPLETED"


def test_yaml_main_run(yaml_project: Path) -> None:
    result = run_cli(["run", "--", "model.depth=4", "logging.verbose=true"], yaml_project)
    assert result.exit_code == 0, result.output
    sig = compute_sig([("model.depth", 4)])
    folder = xps_dir(yaml_project) / sig
    assert job(folder)["state"] == "COMPLETED"
    assert len(load_history(folder)) == 2
    assert "epoch 1: loss" in result.stdout  # logging.verbose reached the config
    bad = run_cli(["run", "--", "model.dept=4"], yaml_project)
    assert bad.exit_code == 2
    assert "unknown config key 'model.dept'" in bad.stderr and "model.depth" in bad.stderr
    assert xp_folders(yaml_project) == [folder]


def test_version(tmp_path: Path) -> None:
    result = run_cli(["--version"], tmp_path)
    assert result.exit_code == 0
    assert result.stdout.strip() == f"gridman {gridman.__version__}"


def _command_names() -> list[str]:
    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_every_command_is_covered() -> None:
    assert {"run", "info"} <= set(_command_names())


@pytest.mark.parametrize("command", _command_names())
def test_help_has_examples(tmp_path: Path, command: str) -> None:
    result = run_cli([command, "--help"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "Examples" in result.stdout
    assert not list(tmp_path.iterdir())  # asking for help writes nothing


def test_root_help_lists_commands(tmp_path: Path) -> None:
    result = run_cli(["--help"], tmp_path)
    assert result.exit_code == 0
    for name in _command_names():
        assert f"  {name} " in result.stdout
    assert run_cli([], tmp_path).exit_code in (0, 2)  # no args: the help, not a crash


def test_root_help_has_examples(tmp_path: Path) -> None:
    result = run_cli(["--help"], tmp_path)
    assert result.exit_code == 0
    assert "Examples" in result.stdout
