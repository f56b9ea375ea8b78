"""Run one contender in a fresh process and measure it from outside: wall, CPU, memory, server load.

The run is split at the first target request: before it, the process starts, downloads and
decodes volumes and selects targets; after it, it fetches targets and writes its output. The server
answers a spatial search ``L`` (its fixed latency) after it arrives and only then counts it, so the
parent polls the server's counter and dates the first target request ``L`` before the first count
it sees. CPU time of both is sampled at each poll, so it too is split at that moment.

The contender is a tree of processes when it starts a Dask cluster (its workers, multiprocessing's
resource tracker). Its CPU is that of the whole tree: ``wait4`` reports the root's own CPU plus that
of every descendant reaped below it. A descendant that outlives the root (the resource tracker
exits just after it) is orphaned to this process, a child subreaper, and reaped here with
``wait4`` too. The tree is sampled every ``TREE_POLL_S`` in the target phase too, for each
process's peak RSS (``VmHWM``).

A contender that works through processes of its own that outlive it (a Dask cluster it connects
to) names them as ``helpers``: the root of another tree whose CPU during the run is added to its
own, sampled at the same moments.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import procstat
from .server import EmulatorProcess

POLL_S = 0.005
TREE_POLL_S = 0.02
#: How long to wait for a descendant that outlives the contender before using its last sample.
ORPHAN_WAIT_S = 5.0
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class ProcessPeak:
    """One process of the contender's tree, at its last sample before the contender exited."""

    role: str
    peak_rss_mb: float
    #: Its own CPU (not its children's), up to that sample.
    cpu_s: float


@dataclass(frozen=True)
class Measurement:
    """One run of one contender; times are seconds from the moment the process was spawned."""

    wall_s: float
    #: When the first target request reached the server (None if none did).
    first_target_s: float | None
    #: CPU of the whole process tree (see the module doc).
    cpu_s: float
    cpu_at_first_s: float
    #: The largest ``ru_maxrss`` of the tree (``wait4`` reports the largest over reaped processes).
    peak_rss_mb: float
    #: The runner's own high-water mark when it spawned the run: a floor under ``peak_rss_mb``,
    #: since Linux starts a child's ``ru_maxrss`` there (kept far below any contender's).
    parent_peak_rss_mb: float
    #: Target requests the server answered during the run.
    requests: int
    server_cpu_s: float
    server_cpu_at_first_s: float
    exit_code: int
    #: Every process of the tree seen, the root (``client``) first.
    processes: tuple[ProcessPeak, ...] = ()
    #: CPU of descendants that outlived the root, so its ``wait4`` did not count it (in ``cpu_s``).
    orphans_cpu_s: float = 0.0

    @property
    def target_phase_s(self) -> float:
        return self.wall_s - (self.first_target_s or 0.0)


@dataclass(frozen=True)
class _Sample:
    at: float
    cpu: float
    server_cpu: float


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    server: EmulatorProcess,
    latency_s: float,
    timeout_s: float,
    helpers: int | None = None,
) -> Measurement:
    """Spawn ``argv``, watch it until it exits (killed after ``timeout_s``), and measure it."""
    _become_subreaper()
    helper = _Tree(helpers, role="cluster") if helpers is not None else None
    helper_before = helper.sample() if helper is not None else 0.0

    def helped() -> float:
        return helper.sample() - helper_before if helper is not None else 0.0

    served_before = server.target_requests()
    server_cpu_before = server.cpu_seconds()
    parent_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with (cwd / "output.log").open("wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = started + timeout_s
    exited = os.pidfd_open(proc.pid)
    try:
        samples = [_Sample(0.0, 0.0, server_cpu_before)]
        tree = _Tree(proc.pid)
        first_seen = _poll_first_target(
            lambda: tree.sample() + helped(),
            exited,
            server,
            served_before,
            started,
            deadline,
            samples,
        )
        tree.watch(exited, deadline)
        if not _exits(exited, 0.0):
            proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    finally:
        os.close(exited)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above, not by Popen
    first = None if first_seen is None else max(first_seen - latency_s, 0.0)
    at_first = [s for s in samples if s.at <= (wall if first is None else first)][-1]
    orphans = tree.reap_orphans(time.monotonic() + ORPHAN_WAIT_S)
    return Measurement(
        wall_s=wall,
        first_target_s=first,
        cpu_s=usage.ru_utime + usage.ru_stime + orphans + helped(),
        cpu_at_first_s=at_first.cpu,
        peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        parent_peak_rss_mb=parent_peak_rss_mb,
        requests=server.target_requests() - served_before,
        server_cpu_s=server.cpu_seconds() - server_cpu_before,
        server_cpu_at_first_s=at_first.server_cpu - server_cpu_before,
        exit_code=proc.returncode,
        processes=tree.processes() + (helper.processes() if helper is not None else ()),
        orphans_cpu_s=orphans,
    )


class _Tree:
    """What has been seen of the contender's process tree: each process's largest figures."""

    def __init__(self, root: int, role: str = "") -> None:
        self.root = root
        #: Prefixed to each process's role (a helper tree's "cluster scheduler", "cluster worker").
        self.role = role
        self.seen: dict[tuple[int, int], procstat.ProcessSample] = {}

    def sample(self) -> float:
        """Sample every process of the tree now; the CPU seconds of the whole tree so far."""
        now = procstat.tree(self.root)
        for s in now:
            before = self.seen.get((s.pid, s.start))
            if before is not None:  # keep what an exiting process no longer shows
                # Seen between fork and exec ("other", its parent's image and high-water mark),
                # now exec'd as itself: its peak is its own from here (exec starts a new one).
                exec_since = before.role == "other" and s.role != "other"
                s = replace(
                    s,
                    role=before.role if s.role == "other" else s.role,
                    cpu_s=max(s.cpu_s, before.cpu_s),
                    peak_rss_mb=s.peak_rss_mb
                    if exec_since
                    else max(s.peak_rss_mb, before.peak_rss_mb),
                )
            self.seen[s.pid, s.start] = s
        return sum(s.cpu_s + s.reaped_cpu_s for s in now)

    def watch(self, exited: int, deadline: float) -> None:
        """Sample every ``TREE_POLL_S`` until the root exits or the deadline passes."""
        while True:
            self.sample()
            if _exits(exited, min(TREE_POLL_S, max(deadline - time.monotonic(), 0.0))):
                return
            if time.monotonic() > deadline:
                return

    def reap_orphans(self, deadline: float) -> float:
        """Reap the descendants that outlived the root (orphaned to this subreaper) and return
        their CPU; one still running at ``deadline`` counts with its last sample."""
        cpu, pending = 0.0, [s for s in self.seen.values() if s.pid != self.root]
        while pending:
            for s in list(pending):
                try:
                    pid, _, usage = os.wait4(s.pid, os.WNOHANG)
                except ChildProcessError:  # reaped by the root (counted in its wait4) or gone
                    pending.remove(s)
                    continue
                if pid:
                    cpu += usage.ru_utime + usage.ru_stime
                    pending.remove(s)
            if pending and time.monotonic() > deadline:
                return cpu + sum(s.cpu_s + s.reaped_cpu_s for s in pending)
            if pending:
                time.sleep(POLL_S)
        return cpu

    def processes(self) -> tuple[ProcessPeak, ...]:
        ordered = sorted(self.seen.values(), key=lambda s: (s.role != "client", s.start))
        return tuple(ProcessPeak(self._role(s.role), s.peak_rss_mb, s.cpu_s) for s in ordered)

    def _role(self, role: str) -> str:
        if not self.role:
            return role
        # A helper tree's root is no client: a Dask cluster's runs its scheduler and nannies.
        return f"{self.role} {'scheduler' if role == 'client' else role}"


def _poll_first_target(
    cpu: Callable[[], float],
    exited: int,
    server: EmulatorProcess,
    served_before: int,
    started: float,
    deadline: float,
    samples: list[_Sample],
) -> float | None:
    """Sample ``cpu()`` into ``samples`` every ``POLL_S`` until the server has answered a target
    request.

    Returns when that was seen, in seconds from ``started``; None if the process exited first or
    the deadline passed.
    """
    while not _exits(exited, POLL_S):
        now = time.monotonic()
        if now > deadline:
            return None
        samples.append(_Sample(now - started, cpu(), server.cpu_seconds()))
        if server.target_requests() > served_before:
            return now - started
    return None


def _become_subreaper() -> None:
    """Have the contender's orphans reparented to this process, to reap and count them (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _exits(pidfd: int, timeout: float) -> bool:
    """Whether the process of ``pidfd`` exits within ``timeout`` seconds."""
    return bool(select.select([pidfd], [], [], timeout)[0])
