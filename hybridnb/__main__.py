"""``python -m hybridnb train | study | pipeline``: see :mod:`hybridnb.cli`."""

import sys

from hybridnb.cli import main

sys.exit(main())
