"""Real Dora projects move over (issue 15, items 2, 5, 6): Dora's project layout, its Explorer
and Sheep, and dry runs that need no GPUs.

The fixture project tests/data/dora_layout (written for these tests, copied to a temporary
folder by each) is a Hydra project in Dora's layout: ``main: hproj_pkg.train`` in gridman.yaml,
the main in the package, its config with groups (a nested one, ``model/scale``) and ``dora:``/
``slurm:`` sections, and the grids inside the package: ``hproj_pkg/grids/pkggrid.py`` (relative
imports of the project and of ``_explorers.py``, whose Explorer subclass has Dora's table hooks
and a ``process_sheep`` that reads ``sheep.log``), ``paper/table1.py`` (absolute imports, a
sub-folder helper) and ``paper/big.py`` (8 GPUs per XP). ``main.get_xp_from_sig`` (item 3) is
not used: it does not exist yet.

Grids run for real: ``gridman`` in a subprocess, on the local backend, with no GPU visible.
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
import treetable as tt

from gridman.core.explore import Explorer, Sheep
from gridman.core.grids import find_grids, list_grids, load_grid
from gridman.core.jobs import JobRecord, State
from gridman.core.project import load_project
from gridman.core.resources import Resources
from gridman.results.rows import TABLE_META, Row
from gridman.results.table import Column, grid_style, render
from gridman.testing import chdir, make_project, run_cli
from gridman.testing.grids import stop_pool, write_grid

FIXTURE = Path(__file__).parent / "data" / "dora_layout"
GRIDMAN = Path(sys.executable).parent / "gridman"
GRIDS = ["paper.big", "paper.table1", "pkggrid"]


def has_hydra() -> bool:
    try:
        import hydra  # noqa: F401
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


# Without the [hydra] extra the fixture's main cannot load; CI installs it (a skip fails there).
needs_hydra = pytest.mark.skipif(
    not has_hydra() and not os.environ.get("CI"),
    reason="hydra-core/omegaconf missing: pip install 'gridman[hydra]'",
)


@pytest.fixture
def proj(tmp_path: Path) -> Any:
    root = Path(shutil.copytree(FIXTURE, tmp_path / "dora_layout"))
    yield root
    stop_pool(root / "outputs")


def gridman(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``gridman ARGS`` in a subprocess, on a machine without GPUs (none visible)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDMAN_", "HYDRA_"))}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run([str(GRIDMAN), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


# -- item 2: Dora's layout ------------------------------------------------------------------
def test_grid_without_a_name_lists_dotted_names(proj: Path) -> None:
    """``gridman grid`` lists the package's grids by dotted name (helpers ``_explorers.py``
    and ``paper/_common.py`` left out) and exits 0; ``--json`` gives them as one array."""
    done = gridman(["grid"], proj)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == GRIDS
    as_json = gridman(["grid", "--json"], proj)
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == GRIDS


def test_unknown_grid_lists_the_dotted_names(proj: Path) -> None:
    done = gridman(["grid", "paper.nosuch"], proj)
    assert done.returncode == 2
    assert "grids: paper.big, paper.table1, pkggrid" in done.stderr
    assert "_explorers" not in done.stderr and "_common" not in done.stderr
    assert "Traceback" not in done.stderr


@needs_hydra
def test_package_grid_runs_for_real_and_renders_its_table(proj: Path) -> None:
    """pkggrid (relative imports) runs on the local backend; the table is the Explorer's:
    ``tt.leaf("loss", ".3f")``'s format, and the columns ``process_sheep`` builds from the
    job (``sheep.job.state``, ``job_id``) and the log (``sheep.log``: the main's last line)."""
    done = gridman(["grid", "pkggrid", "--backend", "local", "--interval", "0.5"], proj)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if "COMPLETED " in line]
    assert len(lines) == 2, done.stdout
    # get_grid_meta's columns (index, name, state: no sig) head the CLI's table
    (head,) = [
        line for line in done.stdout.splitlines() if line.split()[:3] == ["index", "name", "state"]
    ]
    assert "sig" not in head.split()
    for line, depth in zip(lines, ("4", "12")):
        assert "COMPLETED" in line and " 0.510 " in line and "0.5100" not in line
        assert f" {depth}  COMPLETED:id" in line
    rows = json.loads(gridman(["grid", "pkggrid", "--backend", "local", "--json"], proj).stdout)
    got = {r["name"]: r["metrics"] for r in rows}
    assert got["model/scale=small"]["log.depth"] == 4
    assert got["model/scale=large"]["log.depth"] == 12
    for metrics in got.values():
        assert metrics["log.job"] == "COMPLETED:id" and metrics["log.nolog"] is False
        assert metrics["train.loss"] == pytest.approx(0.51)
    # a grid of the package's folder is recorded under its name, as a top-level one is
    records = proj / "outputs" / "grids"
    assert sorted(p.name for p in records.iterdir()) == ["pkggrid"]


@needs_hydra
def test_subfolder_grid_is_a_module_of_the_package(proj: Path) -> None:
    """paper.table1 (absolute imports, a relative one of paper/_common.py) loads as
    ``hproj_pkg.grids.paper.table1`` with the project root importable; it is recorded as
    ``paper.table1`` (the project's grids folder, not NAME@hash)."""
    from gridman.api.grid import GridOptions, open_grid

    assert str(proj) not in sys.path
    with chdir(proj):
        project = load_project(proj)
        assert find_grids(project).package == "hproj_pkg.grids"
        session = open_grid(project, GridOptions(name="paper.table1", dry_run=True))
    assert session.grid.package == "hproj_pkg.grids"
    assert session.grid.path == proj / "hproj_pkg" / "grids" / "paper" / "table1.py"
    assert session.record_key == "paper.table1"
    module = sys.modules["hproj_pkg.grids.paper.table1"]
    assert module.__package__ == "hproj_pkg.grids.paper"
    assert sys.modules["hproj_pkg"].__file__ == str(proj / "hproj_pkg" / "__init__.py")
    assert [s.xp.argv for s in session.sheeps] == [
        ["optim.lr=0.001", "dset=studio"], ["optim.lr=0.01", "dset=studio"]]  # fmt: skip
    assert session.sheeps[0].array == session.sheeps[1].array  # one job array


def test_top_level_grids_keep_working_with_sub_folders(tmp_path: Path) -> None:
    """The top-level ``grids/`` layout (here with ``main: pkg.train`` whose package has no
    grids/ folder): sub-folders are named with dots, ``_`` files and folders are helpers."""
    root = make_project(tmp_path / "proj")
    write_grid(root, "alpha", "launcher(lr=0.2)")
    sub = root / "grids" / "sub"
    sub.mkdir()
    (sub / "beta.py").write_text((root / "grids" / "alpha.py").read_text())
    (root / "grids" / "_private").mkdir()
    (root / "grids" / "_private" / "gamma.py").write_text("X = 1\n")
    assert list_grids(root / "grids") == ["alpha", "sub.beta"]
    listing = run_cli(["grid"], root)
    assert listing.exit_code == 0 and listing.stdout.split() == ["alpha", "sub.beta"]
    done = run_cli(["grid", "sub.beta", "--dry-run", "--json"], root)
    assert done.exit_code == 0, done.output
    assert [r["argv"] for r in json.loads(done.stdout)] == [["--lr=0.2"]]
    (root / "pkg").mkdir()  # a package main without grids/ in its package: grids/ still
    with chdir(root):
        assert find_grids(load_project(root), main="pkg.train").path == root / "grids"


def test_helpers_of_another_folder_are_not_reused(tmp_path: Path) -> None:
    """Two projects' ``grids/_explorers.py`` loaded in one process (``gridman.load`` from a
    notebook): each grid gets its own folder's helper, never the first one loaded."""
    values = []
    for label in ("first", "second"):
        root = make_project(tmp_path / label)
        write_grid(root, "_explorers", f"LABEL = {label!r}\n", raw=True)
        write_grid(root, "g", "from ._explorers import LABEL\nimport gridman\n"
                   "@gridman.Explorer\ndef explorer(launcher):\n    launcher()\n",
                   raw=True)  # fmt: skip
        load_grid(root / "grids", "g")
        values.append(vars(sys.modules["_gridman_grids.g"])["LABEL"])
    assert values == ["first", "second"]


# -- item 5: Explorer and Sheep as Dora's ----------------------------------------------------
def test_sheep_as_dora_shows_it(tmp_path: Path) -> None:
    """``process_sheep`` gets ``xp``, ``job`` (``job_id``, ``state``) and ``log``: the latest
    attempt's log path, None when the XP has no job."""
    from gridman.testing.grids import fake_sheep

    sheep: Sheep = fake_sheep(tmp_path, "0123abcd")
    view = sheep.for_explorer()
    assert (view.job, view.log, view.state, view.xp) == (None, None, None, sheep.xp)
    record = JobRecord("0123abcd").with_new_attempt("slurm", State.PENDING, job_id="41")
    sheep.job = record.with_new_attempt("slurm", State.COMPLETED, job_id="42")
    view = sheep.for_explorer()
    assert view.job is not None and (view.job.job_id, view.job.state) == ("42", "COMPLETED")
    assert view.log == sheep.xp.folder / "log" / "2.log" == sheep.log
    assert view.sig == "0123abcd" and isinstance(view.resources, Resources)


class _Styled(Explorer):
    def get_grid_meta(self) -> list[Any]:
        return [tt.leaf("index", align=">"), tt.leaf("state"), tt.leaf("name"), tt.leaf("sid")]

    def get_colors(self) -> list[str]:
        return ["0", "38;5;245"]


def test_grid_meta_and_colors_shape_the_table() -> None:
    """``get_grid_meta`` picks the meta columns (its order and alignment; Dora's ``sid`` has
    no column), ``get_colors`` the rows' colours (cycled; ``"0"``: none), ``tt.leaf``'s
    format the cells."""
    explorer = _Styled(lambda launcher: None)
    meta, colors = grid_style(explorer)
    assert meta == (("index", ">"), ("state", "<"), ("name", "<"))
    assert colors == ("0", "38;5;245")
    assert grid_style(Explorer(lambda launcher: None))[0] == TABLE_META
    rows = [Row(index=i, name=f"lr={i}", sig=f"sig{i}", state="COMPLETED", folder="/x",
                metrics={"loss": 0.5 + i}) for i in range(3)]  # fmt: skip
    columns = [Column(("loss",), ".3f")]
    plain = render(rows, columns, meta=meta, colors=colors).splitlines()
    assert plain[0].split() == ["index", "state", "name", "|", "loss"]
    assert plain[2].split() == ["1", "COMPLETED", "lr=1", "|", "1.500"]
    assert "sig1" not in "\n".join(plain)
    colored = render(rows, columns, color=True, meta=meta, colors=colors).splitlines()
    assert "\033[38;5;245m" not in colored[1] and "\033[38;5;245m" not in colored[3]
    assert "\033[38;5;245m" in colored[2]  # the second row: the second colour
    assert render(rows, columns) == render(rows, columns, meta=TABLE_META)


# -- item 6: a dry run needs no GPUs ---------------------------------------------------------
@needs_hydra
def test_dry_run_of_a_gpu_grid_needs_no_gpus(proj: Path) -> None:
    """paper.big asks for 8 GPUs per XP: on this machine (none visible) the dry run shows
    the plan and exits 0; a real submit is refused clearly (exit 2, nothing created)."""
    dry = gridman(["grid", "paper.big", "--dry-run", "--backend", "local"], proj)
    assert dry.returncode == 0, dry.stderr
    assert "plan for grid paper.big: 2 submit" in dry.stdout
    assert "model/scale=small: new XP" in dry.stdout
    rows = json.loads(gridman(["grid", "paper.big", "--dry-run", "--backend", "local",
                               "--json"], proj).stdout)  # fmt: skip
    assert [r["metrics"]["log.nolog"] for r in rows] == [True, True]  # no job: no log
    assert [r["metrics"].get("log.job") for r in rows] == [None, None]
    real = gridman(["grid", "paper.big", "--backend", "local"], proj)
    assert real.returncode == 2
    assert "XPs ask for 8 GPU(s) but this machine has none" in real.stderr
    assert "Traceback" not in real.stderr
    assert not (proj / "outputs" / "xps").exists()
