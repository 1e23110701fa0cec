"""A grid asking for 8 GPUs per XP, as real Dora grids do (a dry run needs none)."""

from .._explorers import MyExplorer


@MyExplorer
def explorer(launcher):
    launcher.slurm_(gpus=8, mem_per_gpu=40)
    for scale in ("small", "large"):
        launcher({"model/scale": scale})
