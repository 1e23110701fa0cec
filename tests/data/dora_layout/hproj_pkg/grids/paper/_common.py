"""A helper of the paper's grids (not a grid)."""

LRS = (0.001, 0.01)
