"""``python -m trellis``: the same as the ``trellis`` command."""

from trellis.cli.main import main

main()
