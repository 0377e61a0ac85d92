"""``python -m trailguard``."""

import sys

from trailguard.cli import main

sys.exit(main())
