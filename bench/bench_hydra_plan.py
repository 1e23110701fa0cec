"""Planning a 1,000-XP grid of a Hydra main: ``grid big --dry-run --init``, gridman against Dora.

    python bench/bench_hydra_plan.py [--runs 3] [--dora-runs 3] [--warmup 1] [--no-dora]

Writes, in a temporary folder, one Hydra project twice (same ``conf/``: groups ``dset`` and
``model`` with a nested group ``model/scale``, interpolations, ``dora:`` and ``slurm:`` sections):
for Dora the package ``htoy/`` (``htoy/train.py`` with ``dora.hydra_main``, ``htoy/grids/big.py``),
for gridman ``gridman.yaml``, ``train.py`` with ``gridman.hydra_main`` and ``grids/big.py``. The
grid: 2 dset x 2 model/scale group choices x 10 ``optim.lr`` x 5 ``data.batch_size`` x 5
``seed`` = 1,000 XPs.

Times, as whole processes, in the same run and interleaved (gridman, Dora, gridman, ...), each
with a new empty XP folder: ``gridman grid big --dry-run --init`` (``GRIDMAN_DIR``) and
``dora -P htoy grid big --dry_run --init`` (``TOY_OUT``, read by the config's ``dora.dir``). Both
build every XP (Dora composes each XP's config twice with Hydra, in a pool of 4 processes;
gridman composes once per set of group choices), write each XP's argv file and print the plan.
Reported: median wall, CPU (user + system, children included) and peak RSS, and Dora/gridman.
Target: Dora/gridman >= 5x. Needs hydra-core and omegaconf in both venvs (the Dora venv is made
by bench/dora_env.sh; add them with its pip: hydra-core==1.3.8 omegaconf==2.3.1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy import (
    DORA_VENV,
    GRIDMAN,
    Run,
    Stats,
    ensure_dora,
    fresh_dir,
    loadavg,
    machine_line,
    measure,
    remove,
    table,
)

TARGET = 5.0
XPS = 1000

CONFIG = """\
defaults:
  - dset: studio
  - model: convnet
  - _self_

seed: 0
optim:
  name: adam
  lr: 3e-4
  final_lr: ${optim.lr}
  betas: [0.9, 0.999]
train:
  epochs: 2
  kernels: [3, 3]
data:
  num_workers: 2
  batch_size: 16
  path: ${dset.root}/${dset.name}
dora:
  dir: ${oc.env:TOY_OUT,./outputs}
  exclude: ["data.num_workers"]
slurm:
  gpus: 0
  partition: debug
"""
GROUP_FILES = {
    "dset/studio.yaml": "name: studio\nroot: /data/studio\nrate: 44100\n",
    "dset/field.yaml": "name: field\nroot: /data/field\nrate: 16000\n",
    "model/convnet.yaml": (
        "defaults:\n  - scale: small\n\nname: convnet\nwidth: 32\n"
        'channels: [16, "${model.width}"]\n'
    ),
    "model/scale/small.yaml": "depth: 4\nheads: 2\n",
    "model/scale/large.yaml": "depth: 12\nheads: 8\n",
}
TRAIN = """\
\"\"\"Hydra main of the planning benchmark (see bench/bench_hydra_plan.py).\"\"\"

from {package} import hydra_main


@hydra_main(config_path="{config_path}", config_name="config", version_base="1.1")
def main(cfg):
    pass
"""
GRID = """\
\"\"\"1,000 XPs: 2 dset x 2 model/scale x 10 optim.lr x 5 data.batch_size x 5 seed.\"\"\"

from {package} import Explorer

LRS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BSS = (8, 16, 32, 64, 128)


@Explorer
def explorer(launcher):
    for dset in ("studio", "field"):
        for scale in ("small", "large"):
            sub = launcher.bind({{"dset": dset, "model/scale": scale}})
            for lr in LRS:
                for bs in BSS:
                    xp = sub.bind({{"optim.lr": lr, "data.batch_size": bs}})
                    for seed in range(5):
                        xp({{"seed": seed}})
"""


def write_project(root: Path) -> Path:
    """The Hydra project, once per tool (one conf/ for both); returns ``root``."""
    for name, text in {"config.yaml": CONFIG, **GROUP_FILES}.items():
        path = root / "conf" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "htoy" / "grids").mkdir(parents=True)
    (root / "htoy" / "__init__.py").write_text("")
    (root / "htoy" / "grids" / "__init__.py").write_text("")
    (root / "htoy" / "train.py").write_text(TRAIN.format(package="dora", config_path="../conf"))
    (root / "htoy" / "grids" / "big.py").write_text(GRID.format(package="dora"))
    (root / "gridman.yaml").write_text("main: train.py\nbackend: local\n")
    (root / "train.py").write_text(TRAIN.format(package="gridman", config_path="conf"))
    (root / "grids").mkdir()
    (root / "grids" / "big.py").write_text(GRID.format(package="gridman"))
    return root


def command(tool: str) -> list[str]:
    if tool == "gridman":
        return [str(GRIDMAN), "grid", "big", "--dry-run", "--init"]
    return [str(DORA_VENV / "bin" / "dora"), "-P", "htoy", "grid", "big", "--dry_run", "--init"]


def environment(tool: str, xp_dir: Path) -> dict[str, str]:
    drop = ("GRIDMAN_DIR", "TOY_OUT", "PYTHONDONTWRITEBYTECODE", "NO_COLOR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["GRIDMAN_DIR" if tool == "gridman" else "TOY_OUT"] = str(xp_dir)
    return env


def dora_has_hydra() -> Optional[str]:
    """None when the Dora venv imports hydra and omegaconf, else why not."""
    done = subprocess.run(
        [str(DORA_VENV / "bin" / "python"), "-c", "import hydra, omegaconf"],
        capture_output=True,
        text=True,
    )
    if done.returncode == 0:
        return None
    return f"no hydra-core/omegaconf in {DORA_VENV} (pip install hydra-core omegaconf)"


def versions(tool: str) -> str:
    python = Path(sys.executable) if tool == "gridman" else DORA_VENV / "bin" / "python"
    code = "import hydra, omegaconf; print(hydra.__version__, omegaconf.__version__)"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def tools(no_dora: bool) -> tuple[str, ...]:
    reason = "--no-dora" if no_dora else (ensure_dora() or dora_has_hydra())
    if reason:
        print(f"Dora: not compared ({reason})")
        return ("gridman",)
    return ("gridman", "dora")


def count_xps(xp_dir: Path) -> int:
    xps = xp_dir / "xps"
    return sum(1 for _ in xps.iterdir()) if xps.is_dir() else 0


def bench(root: Path, work: Path, runs: dict[str, int], warmup: int) -> dict[str, Stats]:
    """Interleaved runs, each in a new XP folder; every run must initialise all 1,000 XPs."""
    done: dict[str, list[Run]] = {tool: [] for tool in runs}
    for i in range(warmup + max(runs.values())):
        for tool, wanted in runs.items():
            if i >= warmup + wanted:
                continue
            xp_dir = fresh_dir(work, tool)
            run = measure(command(tool), root, environment(tool, xp_dir))
            found = count_xps(xp_dir)
            if found != XPS:
                raise RuntimeError(f"{tool} initialised {found} XP folders, expected {XPS}")
            if i >= warmup:
                done[tool].append(run)
            print(f"  {tool}: {run.wall:.2f} s{' (warm-up)' if i < warmup else ''}", flush=True)
    return {tool: Stats.of(r) for tool, r in done.items()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed gridman runs")
    parser.add_argument("--dora-runs", type=int, default=3, help="timed Dora runs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    parser.add_argument("--no-dora", action="store_true", help="gridman's figures only")
    args = parser.parse_args(argv)

    print(f"Machine: {machine_line()}")
    compared = tools(args.no_dora)
    runs = {"gridman": args.runs, "dora": args.dora_runs}
    with tempfile.TemporaryDirectory(prefix="gridman-bench-hydra-") as tmp:
        root = write_project(Path(tmp) / "project")
        work = Path(tmp) / "xps"
        for tool in compared:
            shown = " ".join([Path(command(tool)[0]).name, *command(tool)[1:]])
            print(f"  {tool} (hydra-core, omegaconf {versions(tool)}): {shown}")
        print(f"\n{XPS:,} XPs, load {loadavg()} ...", flush=True)
        stats = bench(root, work, {t: runs[t] for t in compared}, args.warmup)
        remove(work)
    rows = [
        [tool, f"{s.wall:.2f}", f"{s.cpu:.2f}", f"{s.peak_mib:.0f}", str(s.runs)]
        for tool, s in stats.items()
    ]
    print("\n`grid big --dry-run --init`, 1,000 XPs of a Hydra main, medians:\n")
    print(table(["tool", "wall s", "CPU s", "peak MiB", "runs"], rows))
    print(f"\nLoad average at the end: {loadavg()}")
    if "dora" in stats:
        ratio = stats["dora"].wall / stats["gridman"].wall
        verdict = "PASS" if ratio >= TARGET else "MISS"
        print(f"{verdict}: Dora/gridman wall {ratio:.1f}x (target >= {TARGET:.0f}x), "
              f"CPU {stats['dora'].cpu / stats['gridman'].cpu:.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
