"""Projects for the web view's tests and benchmarks, built without running any XP.

:func:`make_web_project` writes a :func:`gridman.testing.make_project` project (``train.py``
with ``--lr``, ``--seed``, ``--epochs``) and a grid file sweeping ``lr x seed``, initialises the
XP folders with one ``gridman grid NAME --dry-run --init --json`` process (which also gives the
signatures in grid order), then writes what a finished sweep leaves behind: each XP's
``history.json`` of nested entries ``{"train": {"loss"}, "valid": {"acc"}, "epoch"}``, its
``job.json`` in the chosen state and a log file. Values depend on the XP's learning rate and
seed only (see :func:`final_acc`), so that a sort by a metric has one right answer.

:func:`push_metric` appends one entry the way a running XP does (its metrics journal), and
:func:`add_grid` adds another grid to the same project. 10,000 XPs take a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import make_project

#: The host RUNNING records name: not this machine, so no backend ever settles them as
#: vanished (the local backend polls only its own host's attempts).
RUNNING_HOST = "webtest-node"
#: The XP root of a web project, relative to its root (``dir:`` in gridman.yaml).
XP_DIR = "outputs"


@dataclass(frozen=True)
class WebGrid:
    """One grid of a web project: its XPs in grid order, with their parameters."""

    name: str
    sigs: tuple[str, ...]
    folders: tuple[Path, ...]
    params: tuple[tuple[float, int], ...]  # (lr, seed) of each XP
    states: tuple[Optional[str], ...]  # None: never ran (no job.json)


@dataclass(frozen=True)
class WebProject:
    """A project made by :func:`make_web_project`; ``grid`` is its main grid's name."""

    root: Path
    dir: Path  # the XP root: folders are dir / "xps" / sig
    grid: str
    sigs: tuple[str, ...]
    folders: tuple[Path, ...]
    grids: Mapping[str, WebGrid]

    def folder(self, index: int) -> Path:
        return self.folders[index]


def learning_rates(n_lr: int) -> list[float]:
    """``n_lr`` learning rates, 0.001 apart from 0.001 (short names: ``lr=0.003``)."""
    return [round(0.001 * (i + 1), 6) for i in range(n_lr)]


def final_acc(lr_index: int, n_lr: int, seed: int, n_seed: int) -> float:
    """The last ``valid.acc`` of an XP: best near 37 % of the learning rates (not at an end:
    a sort differs from the grid's order), a seed shifting it a little; no two XPs tie."""
    centre = 0.37 * n_lr + 0.123  # never halfway between two integers: no mirrored ties
    shape = ((lr_index - centre) / max(n_lr, 1)) ** 2
    return 0.9 - 0.4 * shape - 0.05 * seed / max(n_seed, 1) - 1e-7 * lr_index


def history_entries(
    acc: float, entries: int, start: int = 0, stop: Optional[int] = None
) -> list[dict[str, Any]]:
    """Entries ``start``..``stop - 1`` (default: to the end) of the ``entries``-long history
    that ends at ``acc``: accuracy rises to it, the loss falls (lower loss, higher accuracy:
    both columns agree on the best)."""
    out = []
    norm = 1 - math.exp(-3.0)
    for k in range(start, entries if stop is None else stop):
        rise = (1 - math.exp(-3.0 * (k + 1) / entries)) / norm
        loss = (1.1 - acc) * (1 + 2 / (k + 1))
        out.append({"train": {"loss": loss}, "valid": {"acc": acc * rise}, "epoch": k + 1})
    return out


def grid_body(lrs: Sequence[float], n_seed: int, epochs: Optional[int] = None) -> str:
    """A grid file's source: one XP per (lr, seed), lr outer."""
    extra = f", epochs={epochs}" if epochs is not None else ""
    return (
        "import gridman\n\n\n@gridman.Explorer\ndef explorer(launcher):\n"
        f"    for lr in {list(lrs)!r}:\n"
        f"        for seed in range({n_seed}):\n"
        f"            launcher(lr=lr, seed=seed{extra})\n"
    )


def _environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDMAN_DIR", "GRIDMAN_MAIN")}
    env["NO_COLOR"] = "1"
    return env


def init_grid(root: Path, name: str) -> list[dict[str, Any]]:
    """Create the grid's XP folders (``gridman grid NAME --dry-run --init --json``, one
    process); returns its JSON rows, in grid order."""
    cmd = [sys.executable, "-m", "gridman", "grid", name, "--dry-run", "--init", "--json"]
    done = subprocess.run(cmd, cwd=root, env=_environ(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gridman grid {name} --init failed:\n{done.stderr[-3000:]}")
    rows = json.loads(done.stdout)
    assert isinstance(rows, list)
    return rows


def _attempt(n: int, state: str, ended: bool, when: float) -> dict[str, Any]:
    running = state in ("RUNNING", "PENDING")
    return {
        "n": n, "backend": "local", "state": state, "job_id": str(1000 + n),
        "array_index": None, "submitted": when, "started": None if state == "PENDING" else when + 1,
        "ended": None if running or not ended else when + 60,
        "exit_code": None if running else (0 if state == "COMPLETED" else 1),
        "host": RUNNING_HOST if running else None, "pid": None, "log": f"log/{n}.log",
        "extra": {}, "pid_start": None, "boot_id": None,
    }  # fmt: skip


def job_json(sig: str, state: str, attempts: int = 1, when: Optional[float] = None) -> bytes:
    """The bytes of a ``job.json`` whose latest of ``attempts`` attempts is in ``state`` (the
    earlier ones FAILED), as core/jobs.py writes it."""
    start = (time.time() - 3600.0) if when is None else when
    tries = [_attempt(n, "FAILED", True, start + 100 * n) for n in range(1, attempts)]
    tries.append(_attempt(attempts, state, True, start + 100 * attempts))
    latest = tries[-1]
    data = {"version": 1, "sig": sig, "backend": "local", "job_id": latest["job_id"],
            "state": state, "attempts": tries}  # fmt: skip
    return json.dumps(data, indent=2).encode()


def _write_xp(
    folder: Path, acc: float, entries: int, state: Optional[str], attempts: int, log: bool
) -> None:
    if state is None:
        return  # never ran: argv.json only
    count = entries // 2 if state == "RUNNING" else (0 if state == "PENDING" else entries)
    if count:
        text = json.dumps(history_entries(acc, entries, stop=count), separators=(",", ":"))
        (folder / "history.json").write_text(text, encoding="utf8")
    (folder / "job.json").write_bytes(job_json(folder.name, state, attempts))
    if log:
        (folder / "log").mkdir(exist_ok=True)
        lines = [f"xp {folder.name} starts"] + [f"epoch {k + 1}: acc" for k in range(count)]
        (folder / "log" / f"{attempts}.log").write_text("\n".join(lines) + "\n", "utf8")


def add_grid(
    root: Path,
    name: str,
    n_lr: int = 2,
    n_seed: int = 1,
    *,
    entries: int = 5,
    epochs: Optional[int] = 3,
    states: Optional[Mapping[int, Optional[str]]] = None,
    attempts: Optional[Mapping[int, int]] = None,
    logs: bool = True,
) -> WebGrid:
    """Write ``grids/NAME.py`` (``n_lr`` x ``n_seed`` XPs; ``epochs`` makes its XPs differ
    from the main grid's), create its folders and fill them (see :func:`make_web_project`)."""
    root = Path(root)
    lrs = learning_rates(n_lr)
    (root / "grids").mkdir(parents=True, exist_ok=True)
    (root / "grids" / f"{name}.py").write_text(grid_body(lrs, n_seed, epochs), encoding="utf8")
    rows = init_grid(root, name)
    chosen = dict(states or {})
    tries = dict(attempts or {})
    sigs, folders, params, shown = [], [], [], []
    for i, row in enumerate(rows):
        lr_index, seed = divmod(i, n_seed)
        folder = Path(row["folder"])
        state = chosen.get(i, "COMPLETED")
        acc = final_acc(lr_index, n_lr, seed, n_seed)
        _write_xp(folder, acc, entries, state, tries.get(i, 1), logs)
        sigs.append(str(row["sig"]))
        folders.append(folder)
        params.append((lrs[lr_index], seed))
        shown.append(state)
    return WebGrid(name, tuple(sigs), tuple(folders), tuple(params), tuple(shown))


def make_web_project(
    root: Path,
    n_lr: int = 3,
    n_seed: int = 2,
    *,
    entries: int = 5,
    grid: str = "sweep",
    states: Optional[Mapping[int, Optional[str]]] = None,
    attempts: Optional[Mapping[int, int]] = None,
    extra_grids: Optional[Mapping[str, int]] = None,
    logs: bool = True,
) -> WebProject:
    """A project with grid ``grid`` of ``n_lr`` learning rates x ``n_seed`` seeds (lr outer),
    every XP's history ``entries`` entries long.

    ``states``: grid index -> the latest attempt's state (default COMPLETED; ``None``: never
    ran). A RUNNING XP has half its history and runs on :data:`RUNNING_HOST`; a PENDING one
    none. ``attempts``: grid index -> how many attempts (the earlier ones FAILED).
    ``extra_grids``: more grids, name -> number of learning rates (one seed, ``epochs=3``).
    """
    root = make_project(Path(root), settings={"dir": XP_DIR})
    main = add_grid(root, grid, n_lr, n_seed, entries=entries, epochs=None, states=states,
                    attempts=attempts, logs=logs)  # fmt: skip
    grids = {grid: main}
    for name, count in (extra_grids or {}).items():
        grids[name] = add_grid(root, name, count, 1, entries=entries, logs=logs)
    return WebProject(root=root, dir=root / XP_DIR, grid=grid, sigs=main.sigs,
                      folders=main.folders, grids=grids)  # fmt: skip


def push_metric(folder: Path, entry: Mapping[str, Any]) -> int:
    """Append ``entry`` to the XP's history as a running XP does (its metrics journal, through
    :class:`gridman.core.link.Link`); returns the history's new length."""
    from ..core.link import Link

    link = Link(Path(folder))
    try:
        link.push_metrics(entry)
        return len(link.history)
    finally:
        link.close()


def set_state(folder: Path, state: str, attempts: int = 1) -> None:
    """Replace the XP's ``job.json`` with one whose latest attempt is in ``state``."""
    data = job_json(Path(folder).name, state, attempts)
    tmp = Path(folder) / "job.json.tmp-web"
    tmp.write_bytes(data)
    os.replace(tmp, Path(folder) / "job.json")
