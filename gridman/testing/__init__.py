"""Helpers for testing gridman and projects that use it.

Nothing here is imported by gridman itself, so the helpers cost nothing at run time. They write
small, fast, self-contained projects into a folder (usually pytest's ``tmp_path``) and drive the
command line in-process:

- :func:`make_project` writes ``gridman.yaml`` and an argparse ``train.py`` (see
  :data:`TRAIN_SOURCE` for its options: ``--fail``, ``--exit_code``, ``--sleep``...);
- :func:`make_yaml_project` writes the same with a YAML-configured main and its ``config.yaml``;
- :func:`run_cli` runs ``gridman ARGS...`` with typer's ``CliRunner`` from a given folder, with
  ``GRIDMAN_DIR`` and ``GRIDMAN_MAIN`` cleared so the caller's environment never leaks in;
- :func:`forget_modules` drops the user modules a test imported, so the next test's project
  with a module of the same name is imported afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from typer.testing import Result

#: Source of the ``train.py`` that :func:`make_project` writes. Its options: ``--lr`` (float,
#: 0.1), ``--epochs`` (int, 2), ``--seed`` (int, 0), ``--num_workers`` (int, 2; excluded from the
#: signature by the ``num_*`` glob), ``--fail`` (raise RuntimeError inside main), ``--exit_code``
#: (``sys.exit`` with it when non-zero), ``--sleep`` (seconds to wait after the last epoch; also
#: excluded, so a slow run and a fast rerun are the same XP).
#: Each epoch pushes ``{"train": {"loss": ...}, "epoch": i}``; a rerun resumes after the
#: epochs already in the history.
TRAIN_SOURCE = '''\
"""Training script written by gridman.testing.make_project."""

import argparse
import sys
import time

import gridman

parser = argparse.ArgumentParser(description="gridman test main")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--num_workers", type=int, default=2)
parser.add_argument("--fail", action="store_true")
parser.add_argument("--exit_code", type=int, default=0)
parser.add_argument("--sleep", type=float, default=0.0)


@gridman.argparse_main(parser=parser, dir="outputs", exclude=["num_*", "sleep"])
def main():
    xp = gridman.get_xp()
    cfg = xp.cfg
    print(f"xp {xp.sig} starts", flush=True)
    for epoch in range(len(xp.link.history), cfg.epochs):
        loss = 1.0 / (1.0 + epoch + cfg.lr + cfg.seed)
        xp.link.push_metrics({"train": {"loss": loss}, "epoch": epoch})
        print(f"epoch {epoch}: loss {loss:.4f}", flush=True)
    if cfg.sleep:
        print("sleeping", flush=True)
        time.sleep(cfg.sleep)
    if cfg.fail:
        raise RuntimeError("planned failure")
    if cfg.exit_code:
        sys.exit(cfg.exit_code)
    print("done", flush=True)


if __name__ == "__main__":
    main()
'''

#: Source of the YAML-configured ``train.py`` that :func:`make_yaml_project` writes; it reads
#: ``config.yaml`` (:data:`YAML_CONFIG`) next to it and excludes ``logging.*`` from signatures.
YAML_TRAIN_SOURCE = '''\
"""YAML-configured training script written by gridman.testing.make_yaml_project."""

import gridman


@gridman.yaml_main(config="config.yaml", dir="outputs", exclude=["logging.*"])
def main():
    xp = gridman.get_xp()
    cfg = xp.cfg
    for epoch in range(len(xp.link.history), cfg.epochs):
        loss = 1.0 / (1.0 + epoch + cfg.lr * cfg.model.depth)
        xp.link.push_metrics({"train": {"loss": loss}, "epoch": epoch})
        if cfg.logging.verbose:
            print(f"epoch {epoch}: loss {loss:.4f}", flush=True)
    if cfg.fail:
        raise RuntimeError("planned failure")


if __name__ == "__main__":
    main()
'''

#: The ``config.yaml`` of :func:`make_yaml_project`.
YAML_CONFIG = """\
# config of the test YAML main
lr: 0.1
epochs: 2
seed: 0
fail: false
name: base
extra: null
model:
  depth: 2
  layers: [8, 8]
  activation: relu
logging:
  verbose: false
  every: 10
"""


def line_of(source: str, needle: str) -> int:
    """The 1-based number of the first line of ``source`` containing ``needle``."""
    for number, line in enumerate(source.splitlines(), start=1):
        if needle in line:
            return number
    raise ValueError(f"{needle!r} does not occur in the source")


#: The line of :data:`TRAIN_SOURCE` that raises for ``--fail`` (expected in tracebacks).
FAIL_LINE = line_of(TRAIN_SOURCE, 'raise RuntimeError("planned failure")')


def write_project_file(root: Path, settings: Mapping[str, Any]) -> Path:
    """Write ``root/gridman.yaml`` holding ``settings``; returns its path."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    path = root / "gridman.yaml"
    path.write_text(yaml.safe_dump(dict(settings), sort_keys=False), encoding="utf8")
    return path


def make_project(
    root: Path,
    *,
    main_source: Optional[str] = None,
    settings: Optional[dict[str, Any]] = None,
) -> Path:
    """Write a small argparse project into ``root`` and return ``root``.

    ``gridman.yaml`` says ``main: train.py`` and ``dir: outputs``, updated with ``settings``
    (a key set to None is left out); ``train.py`` holds ``main_source`` (default:
    :data:`TRAIN_SOURCE`).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(
        TRAIN_SOURCE if main_source is None else main_source, encoding="utf8"
    )
    write_project_file(root, _settings(settings))
    return root


def make_yaml_project(
    root: Path,
    *,
    main_source: Optional[str] = None,
    config: Optional[str] = None,
    settings: Optional[dict[str, Any]] = None,
) -> Path:
    """Write a small YAML-main project into ``root`` and return ``root``.

    Like :func:`make_project`, with :data:`YAML_TRAIN_SOURCE` as ``train.py`` and ``config``
    (default: :data:`YAML_CONFIG`) as ``config.yaml``.
    """
    root = make_project(
        root,
        main_source=YAML_TRAIN_SOURCE if main_source is None else main_source,
        settings=settings,
    )
    (root / "config.yaml").write_text(YAML_CONFIG if config is None else config, encoding="utf8")
    return root


def _settings(extra: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    # backend: local, so that a machine with sbatch on PATH (CI) does not send every test
    # grid to Slurm; tests of the Slurm backend or of the default choice override it.
    settings: dict[str, Any] = {"main": "train.py", "dir": "outputs", "backend": "local"}
    settings.update(extra or {})
    return {k: v for k, v in settings.items() if v is not None}


def xps_dir(root: Path) -> Path:
    """``root/outputs/xps``: where a :func:`make_project` project keeps its XP folders."""
    return Path(root) / "outputs" / "xps"


def xp_folders(root: Path) -> list[Path]:
    """The XP folders of a :func:`make_project` project, sorted by signature."""
    folder = xps_dir(root)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir())


def read_json_file(path: Path) -> Any:
    """Load a JSON file (a test's shortcut for job.json, argv.json, history.json)."""
    return json.loads(Path(path).read_text(encoding="utf8"))


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[Path]:
    """Run the ``with`` block in ``path`` (the previous working directory is restored)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(previous)


def run_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Optional[Mapping[str, Optional[str]]] = None,
    input: Optional[str] = None,
    catch_exceptions: bool = True,
) -> Result:
    """Run ``gridman ARGS...`` in-process from ``cwd`` and return typer's ``Result``.

    ``GRIDMAN_DIR`` and ``GRIDMAN_MAIN`` are cleared unless ``env`` sets them (a None value
    clears a variable). ``result.stdout`` and ``result.stderr`` are captured separately.
    """
    from typer.testing import CliRunner

    from ..cli import app

    full_env: dict[str, Optional[str]] = {"GRIDMAN_DIR": None, "GRIDMAN_MAIN": None}
    full_env.update(env or {})
    runner = CliRunner()
    with chdir(cwd):
        return runner.invoke(
            app,
            [str(a) for a in args],
            env=full_env,
            input=input,
            catch_exceptions=catch_exceptions,
        )


def forget_modules(root: Path) -> list[str]:
    """Drop from ``sys.modules`` every module loaded from a file under ``root``.

    In-process tests import user mains (``train``, ``_gridman_main_train``...); forgetting them
    makes the next project's module of the same name load from its own file. Returns the names.
    """
    base = str(Path(root).absolute())
    prefix = base.rstrip(os.sep) + os.sep
    names = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.abspath(file).startswith(prefix):
            del sys.modules[name]
            names.append(name)
    return names


def mpi_runtime_missing() -> str:
    """Why real MPI ranks cannot run here ("" when mpiexec and mpi4py are both there)."""
    if not (Path(sys.executable).parent / "mpiexec").exists():
        return f"no mpiexec beside {sys.executable} (pip install 'gridman[mpi]')"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'gridman[mpi]')"
    return ""


def needs_mpi() -> Any:
    """A pytest skip mark for tests that run real ranks; with GRIDMAN_REQUIRE_MPI set (CI) a
    missing runtime is an error instead, so CI never skips them."""
    import pytest

    missing = mpi_runtime_missing()
    if missing and os.environ.get("GRIDMAN_REQUIRE_MPI"):
        raise RuntimeError(f"GRIDMAN_REQUIRE_MPI is set but {missing}")
    return pytest.mark.skipif(bool(missing), reason=missing)
