"""``python -m benchmarks.scaleout``: run both parts and write results.json."""

import sys

from .runner import main

sys.exit(main())
