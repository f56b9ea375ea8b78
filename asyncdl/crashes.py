"""A bug's details go to a crash log; the command line says in one line where, and how to report it.

The log goes to the user's log folder (``platformdirs.user_log_dir``: ``~/.local/state/asyncdl/log``
on Linux, ``~/Library/Logs/asyncdl`` on macOS), not to the temp folder: it outlives the run and a
reboot (a cluster job's private ``/tmp`` is wiped when the job ends, before anyone reads it) and it
is the user's alone (a traceback names paths and URLs). Where that folder cannot be written (a
read-only home), the system temp folder takes it.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from platformdirs import user_log_dir

from ._version import __version__

#: Whom to report a crash to.
REPORT_TO = "the asyncdl maintainers"
#: The distributions whose versions a crash log lists.
PACKAGES = (
    "aiohttp",
    "numpy",
    "pynrrd",
    "orjson",
    "tenacity",
    "rich",
    "platformdirs",
    "uvloop",
    "distributed",
)


def log_folders() -> list[Path]:
    """Where a crash log may go, first choice first."""
    return [Path(user_log_dir("asyncdl", appauthor=False)), Path(tempfile.gettempdir())]


def crash_line(exc: BaseException, argv: Sequence[str]) -> str:
    """Write the crash log of ``exc`` and return the one line to show."""
    what = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    if len(what) > 200:
        what = what[:197] + "..."
    log = write_crash_log(exc, argv)
    head = f"asyncdl: internal error ({what})"
    if log is None:
        return f"{head}; no crash log could be written; please report it to {REPORT_TO}"
    return f"{head}; details in {log}; please report it to {REPORT_TO} with that file"


def write_crash_log(exc: BaseException, argv: Sequence[str]) -> Path | None:
    """The crash log's path once written, or None if no folder would take it."""
    text = crash_report(exc, argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in log_folders():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                prefix=f"asyncdl-crash-{stamp}-{os.getpid()}-", suffix=".log", dir=folder
            )
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            continue
        return Path(name)
    return None


def crash_report(exc: BaseException, argv: Sequence[str]) -> str:
    """What a maintainer needs: the command, the versions, the whole traceback."""
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"  {name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"  {name} (not installed)")
    return "\n".join(
        [
            f"asyncdl {__version__} crashed at {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
            f"command: {' '.join(['asyncdl', *argv])}",
            f"python: {sys.version.splitlines()[0]} ({sys.executable})",
            f"platform: {platform.platform()}",
            "packages:",
            *versions,
            "",
            "".join(traceback.format_exception(exc)),
        ]
    )
