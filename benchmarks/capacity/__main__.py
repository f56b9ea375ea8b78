"""``python -m benchmarks.capacity``: run it and write results.json, results.md, capacity.png."""

import sys

from .runner import main

sys.exit(main())
