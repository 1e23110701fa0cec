"""Grids of a paper, named ``paper.NAME``."""
