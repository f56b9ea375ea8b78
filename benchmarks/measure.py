"""Run one contender in a fresh process and measure it from outside: wall, CPU, memory, server load.

The run is split at the first target request: before it, the process starts, downloads and
decodes volumes and selects targets; after it, it fetches targets and writes its output. The server
answers a spatial search ``L`` (its fixed latency) after it arrives and only then counts it, so the
parent polls the server's counter and dates the first target request ``L`` before the first count
it sees. CPU time of both processes is sampled at each poll, so it too is split at that moment.
"""

from __future__ import annotations

import os
import resource
import select
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .procstat import cpu_seconds
from .server import EmulatorProcess

POLL_S = 0.005


@dataclass(frozen=True)
class Measurement:
    """One run of one contender; times are seconds from the moment the process was spawned."""

    wall_s: float
    #: When the first target request reached the server (None if none did).
    first_target_s: float | None
    cpu_s: float
    cpu_at_first_s: float
    peak_rss_mb: float
    #: The runner's own high-water mark when it spawned the run: a floor under ``peak_rss_mb``,
    #: since Linux starts a child's ``ru_maxrss`` there (kept far below any contender's).
    parent_peak_rss_mb: float
    #: Target requests the server answered during the run.
    requests: int
    server_cpu_s: float
    server_cpu_at_first_s: float
    exit_code: int

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
) -> Measurement:
    """Spawn ``argv``, watch it until it exits (killed after ``timeout_s``), and measure it."""
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
        first_seen = _poll_first_target(
            proc.pid, exited, server, served_before, started, deadline, samples
        )
        if not _exits(exited, max(deadline - time.monotonic(), 0.0)):
            proc.kill()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
    finally:
        os.close(exited)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above, not by Popen
    first = None if first_seen is None else max(first_seen - latency_s, 0.0)
    at_first = [s for s in samples if s.at <= (wall if first is None else first)][-1]
    return Measurement(
        wall_s=wall,
        first_target_s=first,
        cpu_s=usage.ru_utime + usage.ru_stime,
        cpu_at_first_s=at_first.cpu,
        peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        parent_peak_rss_mb=parent_peak_rss_mb,
        requests=server.target_requests() - served_before,
        server_cpu_s=server.cpu_seconds() - server_cpu_before,
        server_cpu_at_first_s=at_first.server_cpu - server_cpu_before,
        exit_code=proc.returncode,
    )


def _poll_first_target(
    pid: int,
    exited: int,
    server: EmulatorProcess,
    served_before: int,
    started: float,
    deadline: float,
    samples: list[_Sample],
) -> float | None:
    """Sample CPU into ``samples`` every ``POLL_S`` until the server has answered a target request.

    Returns when that was seen, in seconds from ``started``; None if the process exited first or
    the deadline passed.
    """
    while not _exits(exited, POLL_S):
        now = time.monotonic()
        if now > deadline:
            return None
        samples.append(_Sample(now - started, cpu_seconds(pid), server.cpu_seconds()))
        if server.target_requests() > served_before:
            return now - started
    return None


def _exits(pidfd: int, timeout: float) -> bool:
    """Whether the process of ``pidfd`` exits within ``timeout`` seconds."""
    return bool(select.select([pidfd], [], [], timeout)[0])
