"""A grid in a sub-folder: absolute imports of the project, a relative one of its helper."""

from hproj_pkg import train
from hproj_pkg.grids._explorers import MyExplorer

from ._common import LRS

assert callable(train.main)


@MyExplorer
def explorer(launcher):
    with launcher.job_array():
        for lr in LRS:
            launcher({"optim.lr": lr}, {"dset": "studio"})
