"""A grid of the package: relative imports of its helpers and of the project."""

from .. import train
from ..train import main
from ._explorers import MyExplorer

assert train.main is main


@MyExplorer
def explorer(launcher):
    launcher.bind_({"dset": "field"})
    for scale in ("small", "large"):
        launcher({"model/scale": scale, "optim.lr": 0.01})
