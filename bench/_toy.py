"""Shared by the grid benchmarks: the toy project of Dora's baseline, a process timer, Dora.

``write_toy(root)`` writes, into ``root``, the toy project of
``/work/shared/notes/dora-anchor.md`` §10 twice, once per tool, with the same parser, the same
explore function and the same table columns:

- for Dora, the package ``toy/`` (``dora -P toy grid G``): ``toy/train.py`` (argparse ``--lr``
  0.1, ``--bs`` 32, ``--epochs`` 3, ``--seed`` 0; ``@argparse_main(dir=$TOY_OUT or ./outputs)``)
  and ``toy/grids/{_explorers,small,big,huge,pool}.py``;
- for gridman, ``gridman.yaml`` (``main: train.py``, ``dir: outputs``, ``backend: local``;
  ``GRIDMAN_DIR`` redirects the XPs), ``train.py`` and ``grids/{_explorers,small,big,huge,pool}.py``
  beside it.

Grids: 10 lr x 10 bs (``sub = launcher.bind(lr=..., bs=...)``) x n_seed (``sub(seed=s)``):
``small`` 100 XPs, ``big`` 1,000, ``huge`` 10,000; ``pool`` is 10 lr x 2 bs x 10 seeds with
``--epochs 1`` (200 short XPs for the local pool benchmark).

``measure(argv)`` runs a command once, its output discarded, from a tiny ``python -S`` launcher
(so that the benchmark's own memory never shows in ``ru_maxrss``) and returns its wall time, CPU
time (user + system, its children included) and peak RSS from ``os.wait4``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
GRIDMAN = REPO / ".venv" / "bin" / "gridman"
DORA_VENV = Path(os.environ.get("DORA_VENV", "/tmp/dora-venv"))

LRS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BSS = (8, 16, 24, 32, 40, 48, 56, 64, 72, 80)
GRIDS = {  # name: (n_lr, n_bs, n_seed, fixed args)
    "small": (10, 10, 1, {}),
    "big": (10, 10, 10, {}),
    "huge": (10, 10, 100, {}),
    "pool": (10, 2, 10, {"epochs": 1}),
}
SIZES = {"small": 100, "big": 1_000, "huge": 10_000, "pool": 200}
GRID_OF_SIZE = {n: g for g, n in SIZES.items() if g != "pool"}

# -- the toy project ---------------------------------------------------------------------
_TRAIN = '''\
"""Toy main of the grid benchmarks (see bench/_toy.py)."""

import argparse
import os

{imports}

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--bs", type=int, default=32)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--seed", type=int, default=0)


@{decorator}
def main():
    xp = get_xp()
    for epoch in range(xp.cfg.epochs):
        loss = xp.cfg.lr / (1 + epoch)
        metrics = {{"train": {{"loss": loss, "epoch": epoch}}, "valid": {{"acc": 1 - loss}}}}
        xp.link.push_metrics(metrics)


if __name__ == "__main__":
    main()
'''
_DORA_TRAIN = _TRAIN.format(
    imports="from dora import argparse_main, get_xp",
    decorator='argparse_main(dir=os.environ.get("TOY_OUT", "./outputs"), parser=parser)',
)
_GRIDMAN_TRAIN = _TRAIN.format(
    imports="import gridman\nfrom gridman import get_xp",
    decorator='gridman.argparse_main(parser=parser, dir="outputs")',
).replace("import os\n", "")

_EXPLORERS = '''\
"""The toy grids: 10 lr x 10 bs x n_seed XPs, and a table with train.epoch / train.loss.

Histories are nested as users push them: ``{{"train": {{"loss": x}}, "valid": {{"acc": y}}}}``.
"""

import treetable as tt
from {package} import Explorer

LRS = {lrs!r}
BSS = {bss!r}


class ToyExplorer(Explorer):
    def get_grid_metrics(self):
        return [tt.group("train", [tt.leaf("epoch"), tt.leaf("loss", ".4f")], align=">")]

    def process_history(self, history):
        # nested metrics, the shape users push (train.loss, valid.acc)
        train = {{"epoch": len(history)}}
        if history:
            train["loss"] = history[-1]["train"]["loss"]
        return {{"train": train}}


def make(n_lr, n_bs, n_seed, **fixed):
    def explore(launcher):
        if fixed:
            launcher = launcher.bind(**fixed)
        for lr in LRS[:n_lr]:
            for bs in BSS[:n_bs]:
                sub = launcher.bind(lr=lr, bs=bs)
                for seed in range(n_seed):
                    sub(seed=seed)

    return ToyExplorer(explore)
'''

_GRID = "from ._explorers import make\n\nexplorer = make({n_lr}, {n_bs}, {n_seed}{fixed})\n"


def _grid_files(folder: Path, package: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_explorers.py").write_text(_EXPLORERS.format(package=package, lrs=LRS, bss=BSS))
    for name, (n_lr, n_bs, n_seed, fixed) in GRIDS.items():
        extra = "".join(f", {k}={v!r}" for k, v in fixed.items())
        text = _GRID.format(n_lr=n_lr, n_bs=n_bs, n_seed=n_seed, fixed=extra)
        (folder / f"{name}.py").write_text(text)


def write_toy(root: Path) -> Path:
    """Write both toy projects into ``root`` (created if needed); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    toy = root / "toy"
    (toy / "grids").mkdir(parents=True, exist_ok=True)
    (toy / "__init__.py").write_text("")
    (toy / "grids" / "__init__.py").write_text("")
    (toy / "train.py").write_text(_DORA_TRAIN)
    _grid_files(toy / "grids", "dora")
    # backend: local, or a machine with sbatch on PATH would send the pool benchmark to Slurm.
    (root / "gridman.yaml").write_text("main: train.py\ndir: outputs\nbackend: local\n")
    (root / "train.py").write_text(_GRIDMAN_TRAIN)
    _grid_files(root / "grids", "gridman")
    return root


def gridman_cmd(*args: str) -> list[str]:
    return [str(GRIDMAN), *args]


def dora_cmd(*args: str) -> list[str]:
    return [str(DORA_VENV / "bin" / "dora"), "-P", "toy", *args]


# Both tools run with their bytecode cached, as after `pip install` (which compiles it): an
# inherited PYTHONDONTWRITEBYTECODE would make every run compile again whatever had no .pyc
# yet (gridman's editable sources, the toy project), ~40 ms per command that no user pays.
_UNFAIR = ("PYTHONDONTWRITEBYTECODE",)


def gridman_env(xp_dir: Path) -> dict[str, str]:
    drop = ("TOY_OUT", "NO_COLOR", *_UNFAIR)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["GRIDMAN_DIR"] = str(xp_dir)
    return env


def dora_env(xp_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GRIDMAN_DIR", *_UNFAIR)}
    env["TOY_OUT"] = str(xp_dir)
    return env


# -- Dora ----------------------------------------------------------------------------------
def ensure_dora(install: bool = True) -> Optional[str]:
    """None when Dora is usable, else why not (runs bench/dora_env.sh if the venv is missing)."""
    dora = DORA_VENV / "bin" / "dora"
    if not dora.exists():
        if not install:
            return f"{dora} does not exist (run bench/dora_env.sh)"
        print(f"Dora: {DORA_VENV} missing, running bench/dora_env.sh", flush=True)
        done = subprocess.run(["bash", str(BENCH / "dora_env.sh"), str(DORA_VENV)])
        if done.returncode != 0:
            return f"bench/dora_env.sh exited with {done.returncode}"
    done = subprocess.run(
        [str(DORA_VENV / "bin" / "python"), "-c", "import dora"], capture_output=True, text=True
    )
    if done.returncode != 0:
        return f"import dora failed in {DORA_VENV}: {done.stderr.strip()[-300:]}"
    return None


# -- timing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run of a command: wall, user and system CPU seconds, peak RSS in MiB."""

    wall: float
    user: float
    sys: float
    peak_mib: float

    @property
    def cpu(self) -> float:
        return self.user + self.sys


@dataclass(frozen=True)
class Stats:
    """Timed runs of one command: medians and the largest peak RSS."""

    wall: float
    user: float
    sys: float
    peak_mib: float
    runs: int
    walls: tuple[float, ...]

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Stats:
        return cls(
            wall=statistics.median(r.wall for r in runs),
            user=statistics.median(r.user for r in runs),
            sys=statistics.median(r.sys for r in runs),
            peak_mib=max(r.peak_mib for r in runs),
            runs=len(runs),
            walls=tuple(r.wall for r in runs),
        )


class CommandFailed(RuntimeError):
    """A timed command exited with a non-zero status."""


# Runs argv[1:] with stdout to /dev/null; prints "wall user sys maxrss_kib exit_code".
_LAUNCHER = """\
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ,
    file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
print(wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def measure(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], ok_codes: Sequence[int] = (0,)
) -> Run:
    """Run ``argv`` once (stdout discarded) and measure it."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, *argv],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    try:
        wall, user, sys_, rss, code = done.stdout.split()
    except ValueError:
        wall, user, sys_, rss, code = "0", "0", "0", "0", "launcher failed"
    if done.returncode != 0 or code not in {str(c) for c in ok_codes}:
        raise CommandFailed(f"{' '.join(argv)} exited with {code}:\n{done.stderr[-2000:]}")
    return Run(float(wall), float(user), float(sys_), int(rss) / 1024)


def loadavg() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def fs_type(path: Path) -> str:
    """The file system ``path`` lies on (from /proc/mounts), e.g. ``ext4 on /``."""
    path = path.resolve()
    best = ("?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind = line.split()[:3]
            if (path == Path(mount) or Path(mount) in path.parents) and len(mount) >= len(best[1]):
                best = (kind, mount)
    except OSError:
        pass
    return f"{best[0]} on {best[1]}"


# On this machine's ext4, creating files or folders within ~30 s of many deletions in the same
# file system is slow (the kernel skips recently deleted inodes: ext4 recently_deleted()); 10,000
# new XP folders then cost several seconds of system time instead of about one. The benchmarks
# therefore never delete XP folders between timed runs (only at the end), can wait this long
# before timing, and report user and system CPU apart (--xp-root /dev/shm avoids ext4).
SETTLE_S = 35.0


def settle(seconds: float) -> None:
    """Let recent deletions age out before timing (see SETTLE_S)."""
    if seconds > 0:
        print(f"(waiting {seconds:.0f} s for recent deletions to age out)", flush=True)
        time.sleep(seconds)


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new, empty folder under ``parent``."""
    path = parent / f"{prefix}-{time.time_ns()}"
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded (numbers right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def numeric(text: str) -> bool:
        try:
            float(text.rstrip("x"))
        except ValueError:
            return False
        return True

    def line(cells: Sequence[str]) -> str:
        cells = [str(c) for c in cells]
        pad = [c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(cells, widths)]
        return "| " + " | ".join(pad) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def revision() -> str:
    """The gridman commit measured, and whether gridman/ had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "gridman")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in gridman/" if dirty else "")


def machine_line() -> str:
    cpu = "?"
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{len(os.sched_getaffinity(0))} CPUs ({cpu}), Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load average {loadavg()}; "
        f"gridman {revision()}"
    )


def tools_to_compare(no_dora: bool) -> tuple[str, ...]:
    """("gridman", "dora"), or gridman alone (saying why) when Dora is off or unusable."""
    if no_dora:
        print("Dora: not available (--no-dora)")
        return ("gridman",)
    reason = ensure_dora()
    if reason:
        print(f"Dora: not available ({reason})")
        return ("gridman",)
    return ("gridman", "dora")
