"""``python -m hybridlab ...``: see :mod:`hybridlab.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
