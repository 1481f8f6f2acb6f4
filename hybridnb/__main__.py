"""``python -m hybridnb train | study | recipe | pipeline | miracl``: see :mod:`hybridnb.cli`."""

import sys

from hybridnb.cli import main

if __name__ == "__main__":  # spawned image-text workers import this module: they must not run the command
    sys.exit(main())
