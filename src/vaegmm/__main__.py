"""``python -m vaegmm``: the command line of :mod:`vaegmm.cli`."""

import sys

from .cli import main

sys.exit(main())
