"""The API behind each command family (grid, xp, stage, load, table): functions returning data.

The only layer that joins the core, the backends and the results; the CLI renders what it returns.
"""
