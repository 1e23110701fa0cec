"""The project's grids (Dora's layout): ``gridman grid pkggrid``, ``gridman grid paper.table1``."""
