import gridman


@gridman.Explorer
def explorer(launcher):
    launcher(lr=0.25)
    launcher(lr=0.5)
