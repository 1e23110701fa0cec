"""GPU packing check: 4 small torch XPs, each asking for one GPU.

With `local: {xps_per_gpu: 4}` in gridman.yaml they share one GPU; with the default (1) they
run one at a time. Run with `--main examples/train_torch.py`.
"""

import gridman


@gridman.Explorer
def explorer(launcher):
    launcher.slurm_(gpus=1)
    for seed in range(4):
        launcher(seed=seed)
