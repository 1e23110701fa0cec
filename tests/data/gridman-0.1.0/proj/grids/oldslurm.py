import gridman


@gridman.Explorer
def explorer(launcher):
    launcher.slurm_(time=5)
    launcher(lr=0.125, epochs=2)
