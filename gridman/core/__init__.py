"""The backend-free core: signatures, mains, XPs and their files, grids, the Shepherd's plan.

Nothing here imports ``backends``, ``results``, ``api`` or ``cli``, prints, prompts or exits;
errors are ``gridman.errors.GridmanError`` raised to the caller.
"""
