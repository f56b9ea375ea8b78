"""CPU time of another process, read from ``/proc`` (Linux), so the parent can sample it mid-run."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, all its threads included (10 ms resolution)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    # Fields after the command name, which is in parentheses and may itself hold spaces.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS
