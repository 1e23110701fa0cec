"""A grid of the Hydra fixture project (top-level grids/ layout): 2 scales x 2 learning rates."""

from gridman import Explorer


@Explorer
def explorer(launcher):
    launcher.bind_({"dset": "field"})
    for scale in ("small", "large"):
        sub = launcher.bind({"model/scale": scale})
        for lr in (0.001, 0.01):
            sub({"optim.lr": lr})
