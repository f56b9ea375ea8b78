"""``python -m asyncdl``."""

import sys

from .cli import main

sys.exit(main())
