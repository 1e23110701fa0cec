import gridman


@gridman.Explorer
def explorer(launcher):
    launcher(lr=0.5)
