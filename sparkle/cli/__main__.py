"""``python -m sparkle.cli``: the ``sparkle`` command line."""

from sparkle.cli import main

main()
