"""gridman.cli.fast: plain option values converted without pydantic, exactly as typer would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup

from gridman.cli import app
from gridman.cli import fast as clifast
from gridman.testing import make_project, run_cli
from gridman.testing.grids import make_grid_project

TOKENS = ["0", "7", "-3", "+4", "007", "2.5", "-0.5", "1e3", " 5", "abc", "", ".5", "5.", "1_000"]


def _commands() -> list[tuple[str, Any, Any]]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    ctx = group.make_context("gridman", ["info"], resilient_parsing=True)
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        for param in command.get_params(ctx):
            found.append((name, param, ctx))
    return found


def _typer_result(param: Any, value: Any, ctx: Any) -> tuple[str, Any]:
    """What typer's own converter makes of ``value``: ('ok', result) or ('error', message)."""
    kept = param._runtime_param
    param._runtime_param = None
    try:
        return "ok", param.get_runtime_param().coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as exc:
        return "error", exc.message
    finally:
        param._runtime_param = kept


def test_every_plain_parameter_converts_as_typer_does() -> None:
    """For every option of every command, the fast path equals typer's own conversion."""
    fast = 0
    for _name, param, ctx in _commands():
        if not isinstance(param._runtime_param, clifast._Plain):
            continue
        fast += 1
        values: list[Any] = [None, param.default]
        values += [[t] for t in TOKENS] if param._runtime_param.multi else TOKENS
        for value in values:
            expected = _typer_result(param, value, ctx)
            try:
                got: tuple[str, Any] = ("ok", param._runtime_param.coerce(value, param, ctx))
            except typer.BadParameter as exc:
                got = ("error", exc.message)
            assert got == expected, (param.name, value)
            assert type(got[1]) is type(expected[1]), (param.name, value)
    assert fast >= 30  # grid alone has about 40 options: the fast path is really installed


def test_sure_and_unsure_tokens() -> None:
    assert clifast._convert(int, "12") == 12
    assert clifast._convert(float, "12") == 12.0
    assert clifast._convert(float, "-0.25") == -0.25
    assert clifast._convert(str, "x y") == "x y"
    for kind, token in [(int, "1e3"), (int, "007"), (int, "2.0"), (float, "1e3"), (int, b"3")]:
        assert clifast._convert(kind, token) is clifast._UNSURE
    assert clifast._convert(int, True) is clifast._UNSURE  # bool is not an int here


def test_bad_value_keeps_typers_message(tmp_path: Path) -> None:
    make_project(tmp_path)
    result = run_cli(["grid", "x", "--workers", "abc"], tmp_path)
    assert result.exit_code == 2
    assert "Invalid value for '--workers'" in result.output
    assert "valid integer" in result.output


def test_a_command_runs_without_importing_pydantic(tmp_path: Path) -> None:
    """A real process: `gridman run` then `gridman info`, neither imports pydantic."""
    make_project(tmp_path)
    code = (
        "import sys\n"
        "from gridman.cli import app\n"
        "runs = ['run', '--', '--lr', '0.5', '--epochs', '2'], ['info', '--', '--lr', '0.5']\n"
        "for argv in runs:\n"
        "    try:\n"
        "        app(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (argv, exc.code)\n"
        "print('PYDANTIC', 'pydantic' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDMAN_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "PYDANTIC False" in done.stdout
    assert "COMPLETED" in done.stdout


@pytest.mark.parametrize("given", [["-i", "1e1", "--workers", "+2"], ["--interval", "0.5"]])
def test_sure_and_unsure_values_both_run(tmp_path: Path, given: list[str]) -> None:
    """'1e1' and '+2' go through typer's converter, '0.5' through the fast one: both plan."""
    make_grid_project(tmp_path, {"g": "launcher(lr=0.5)"})
    result = run_cli(["grid", "g", "--dry-run", "--backend", "local", *given], tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 submit" in result.output


def test_a_parameter_of_another_shape_is_left_to_typer() -> None:
    """A typer whose parameters lack the expected attributes keeps its own conversion."""

    class Odd:
        type_descriptor = None
        _runtime_param = None

    class NoDescriptorInfo:
        type_descriptor = object()
        _runtime_param = None

        def get_runtime_param(self) -> None:
            raise AssertionError("never called")

    odd, other = Odd(), NoDescriptorInfo()
    clifast.install([odd, other])
    assert odd._runtime_param is None and other._runtime_param is None
