"""``python -m benchmarks.digest FILE...``: a digest of each data.json's content, however formatted.

It runs in its own process because parsing a 13 MB data.json takes about 100 MB, and on Linux a
child's peak RSS (``ru_maxrss``) starts at its parent's high-water mark: the runner must stay small
for the memory it reports of the contenders it spawns to be theirs.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import orjson

MISSING = "missing"


def digest(path: Path) -> str:
    """SHA-256 of the content re-serialized compactly; ``MISSING`` if unreadable or not JSON."""
    try:
        content = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return MISSING
    return hashlib.sha256(orjson.dumps(content)).hexdigest()


def main() -> None:
    for name in sys.argv[1:]:
        print(digest(Path(name)))


if __name__ == "__main__":
    main()
