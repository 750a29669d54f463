"""``python -m minnet``: the same as the ``minnet`` command (see :mod:`minnet.cli`)."""

import sys

from minnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
