"""``python -m scaled_ql.cli`` (what ``torchrun`` and ``accelerate launch`` start)."""

import sys

from scaled_ql.cli import main

sys.exit(main())
