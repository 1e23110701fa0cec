"""Demo grid over the example project: 3 learning rates x 2 seeds, 3 epochs each."""

import gridman


@gridman.Explorer
def explorer(launcher):
    launcher.slurm_(gpus=0, time=10)
    sub = launcher.bind(epochs=3)
    for lr in [0.01, 0.1, 1.0]:
        with launcher.job_array():
            for seed in range(2):
                sub(lr=lr, seed=seed)
