"""The fixture project's package (Dora's layout: the main, its config and its grids in it)."""
