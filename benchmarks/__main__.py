"""``python -m benchmarks``: run the suite and write results.json, results.md and throughput.png."""

import sys

from .runner import main

sys.exit(main())
