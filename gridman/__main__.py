"""``python -m gridman`` is the ``gridman`` command."""

from gridman.cli import main

main()
