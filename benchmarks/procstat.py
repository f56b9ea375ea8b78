"""CPU time and memory of other processes, read from ``/proc`` (Linux), so the parent can sample
them mid-run: one process, or a process and all its descendants (asyncdl's Dask workers)."""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, all its threads included (10 ms resolution)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True)
class ProcessSample:
    """One process of a tree at one moment."""

    pid: int
    #: Boot-relative start time in ticks: with ``pid``, names the process even if the pid is reused.
    start: int
    #: What it is: ``client`` (the root), ``worker`` (a multiprocessing child such as a Dask
    #: worker), ``resource_tracker`` (multiprocessing's), or ``other`` (also any process between
    #: fork and exec, or exited: its command line is not its own then).
    role: str
    #: Its own CPU seconds.
    cpu_s: float
    #: CPU seconds of the children it has reaped (``cutime``/``cstime``).
    reaped_cpu_s: float
    #: Its peak resident set so far (``VmHWM``).
    peak_rss_mb: float


def tree(root: int) -> list[ProcessSample]:
    """``root`` and every live descendant (processes that vanish while being read are skipped).

    Summing ``cpu_s + reaped_cpu_s`` over the tree counts every CPU second the tree has used: a
    descendant that has exited and been reaped is in its parent's ``cutime``/``cstime``.
    """
    samples, pending = [], [root]
    while pending:
        pid = pending.pop()
        try:
            samples.append(_sample(pid, root))
            pending += _children(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return samples


def alive(sample: ProcessSample) -> bool:
    """Whether the process of ``sample`` still exists (a zombie counts: it is not reaped yet)."""
    try:
        return int(_stat_fields(sample.pid)[19]) == sample.start
    except (FileNotFoundError, ProcessLookupError):
        return False


def _sample(pid: int, root: int) -> ProcessSample:
    fields = _stat_fields(pid)
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ProcessSample(
        pid=pid,
        start=int(fields[19]),
        role="client" if pid == root else _role(pid),
        cpu_s=(utime + stime) / _TICKS,
        reaped_cpu_s=(cutime + cstime) / _TICKS,
        peak_rss_mb=_peak_rss_kb(pid) / 1024,
    )


def _stat_fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name, which is in parentheses and may
    itself hold spaces: field 3 of proc(5) is at index 0."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    return stat[stat.rindex(b")") + 2 :].split()


def _children(pid: int) -> list[int]:
    """Child pids of every thread of ``pid`` (a child belongs to the thread that forked it)."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found += [int(c) for c in fh.read().split()]
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


def _role(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        cmdline = fh.read()
    if b"multiprocessing.resource_tracker" in cmdline:
        return "resource_tracker"
    if b"multiprocessing.spawn" in cmdline or b"multiprocessing.forkserver" in cmdline:
        return "worker"
    return "other"


def _peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1])
    return 0  # a zombie has no memory left to report
