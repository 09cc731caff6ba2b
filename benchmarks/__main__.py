"""``python -m benchmarks WHAT [options] [key=value ...]`` (the same as ``scaled-ql bench WHAT ...``)."""

import sys

from benchmarks.cli import main

sys.exit(main())
