"""Simulated small machines: a process confined to a fraction of a core (cgroup v1 ``cpu``).

A ``CpuQuota`` is a cgroup under ``/sys/fs/cgroup/cpu`` with ``cpu.cfs_quota_us`` over
``cpu.cfs_period_us``: the processes in it get that share of one core in every period, then wait
for the next (which is how a throttled container or a small cloud machine behaves). A process is
put in it before it execs (``command``), so that everything it starts is in it too. Needs root
and the cgroup v1 ``cpu`` controller; removed on exit, once its processes have gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
#: How long ``__exit__`` waits for the processes of a cgroup to go before it moves them out.
_EMPTY_WAIT_S = 10.0


def available() -> str | None:
    """Why cgroup quotas cannot be made here, or None if they can."""
    if not (ROOT / "cpu.cfs_quota_us").exists():
        return f"no cgroup v1 cpu controller at {ROOT}"
    if not os.access(ROOT, os.W_OK):
        return f"{ROOT} is not writable (run as root)"
    return None


class CpuQuota:
    """A cgroup of ``cores`` of one core, named ``name`` (a path under ``ROOT``); use as ``with``."""

    def __init__(self, name: str, cores: float) -> None:
        if not cores > 0:
            raise ValueError(f"cores must be positive, got {cores}")
        self.path = ROOT / name
        self.cores = cores

    def __enter__(self) -> CpuQuota:
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(round(self.cores * PERIOD_US)))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        deadline = time.monotonic() + _EMPTY_WAIT_S
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.pids():  # outlived the wait: back to the root group, so rmdir can work
            (ROOT / "cgroup.procs").write_text(str(pid))
        self.path.rmdir()

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in this cgroup: a shell joins it, then becomes ``argv``, so that the
        process and all it starts are in it from their first instruction."""
        join = f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"'
        return ["sh", "-c", join, "sh", *argv]

    def throttled_s(self) -> float:
        """The time its processes were held back, waiting for the next period, so far."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "throttled_time":
                return int(value) / 1e9
        return 0.0


def pinned(cpus: Sequence[int], argv: Sequence[str]) -> list[str]:
    """``argv`` run on ``cpus`` only, with all it starts (``taskset``, util-linux)."""
    return ["taskset", "-c", ",".join(map(str, cpus)), *argv]


def pin(pid: int, cpus: Sequence[int]) -> None:
    """Move a running process, every thread of it, to ``cpus`` (threads it starts later inherit
    it from theirs)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)
