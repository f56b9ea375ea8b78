"""A Dask cluster that outlives the runs: ``python -m benchmarks.warm_cluster``.

Two worker processes of two threads each, on uvloop, as ``asyncdl fetch --workers 2`` starts them;
it prints the scheduler's address and runs until stdin closes. The ``asyncdl --scheduler``
contender runs against it, so its runs show a Dask run without the cluster's start and close.
"""

from __future__ import annotations

import asyncio
import logging
import select
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from types import TracebackType
from typing import cast

WORKERS, THREADS = 2, 2
_START_TIMEOUT_S = 120.0


class WarmCluster:
    """This module's cluster in a process of its own; use as ``with``. ``address`` and ``pid``
    (the scheduler's process: the workers are its descendants) are set inside."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log, self.env = log, env
        self.address = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> WarmCluster:
        argv = [sys.executable, "-m", __name__]
        with self.log.open("w") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                text=True,
            )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], _START_TIMEOUT_S)
        line = self._proc.stdout.readline().strip() if ready else ""
        if not line.startswith("tcp://"):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the warm Dask cluster did not start; see {self.log}")
        self.address = line
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "the warm cluster is not running"
        return self._proc.pid


async def main() -> None:
    import dask
    import distributed

    with dask.config.set({"distributed.admin.event-loop": "uvloop"}):
        cluster = await distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=THREADS,
            processes=True,
            asynchronous=True,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.CRITICAL,
        )
    try:
        async with distributed.Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(WORKERS)
        print(cluster.scheduler_address, flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the runner closes it
    finally:
        await cast(Awaitable[None], cluster.close())


if __name__ == "__main__":
    from asyncdl.aio import run

    run(main())  # on uvloop, as asyncdl's own client (which runs the scheduler with --workers)
