"""Reaching the cluster: a local one started for the run or a running one, its workers up, and
every worker seeing the output folder."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import dask
import distributed
from distributed import Client

from ..aio import event_loop_factory
from ..config import FetchOptions
from ..errors import UsageError

#: How long the workers of a cluster started for the run may take to start.
WORKERS_TIMEOUT = 300


@asynccontextmanager
async def connect(
    *, workers: int | None = None, scheduler: str | None = None
) -> AsyncIterator[Client]:
    """A client of an existing cluster (``scheduler``), or of a local one of ``workers`` processes
    started for the run and closed after it. Workers use uvloop when it is installed."""
    if (workers is None) == (scheduler is None):
        raise UsageError("give either --workers N or --scheduler ADDRESS")
    if scheduler is not None:
        try:
            async with Client(scheduler, asynchronous=True, timeout="10s") as client:
                yield client
        except OSError as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
        return
    assert workers is not None
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    loop = "uvloop" if event_loop_factory() is not None else "asyncio"
    with dask.config.set({"distributed.admin.event-loop": loop}):
        cluster = await distributed.LocalCluster(
            n_workers=0,
            # Each task is one data set: a worker runs one while it prepares the next, as a local
            # run does; a worker that is done early takes the next data set, not a fixed half.
            threads_per_worker=FetchOptions().prefetch,
            processes=True,
            asynchronous=True,
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.CRITICAL,
        )
        # The workers start in the background while the run fetches its shared volumes.
        cluster.scale(workers)
    try:
        async with Client(cluster, asynchronous=True) as client:
            yield client
    finally:
        await cast(Awaitable[None], cluster.close())


async def ready(client: Client, out: Path) -> list[str]:
    """The run's workers (addresses), once those of a cluster started for it are up and each has
    been seen to see ``out``."""
    if not getattr(client, "asynchronous", False):
        raise UsageError("fetch(client=...) needs an asynchronous Client (asynchronous=True)")
    workers = await _workers_up(client)
    if not workers:
        raise UsageError("the Dask cluster has no workers")
    await _check_shared(client, out)
    return workers


async def _workers_up(client: Client) -> list[str]:
    """The run's workers (addresses), once those of a cluster started for it are up."""
    cluster = getattr(client, "cluster", None)
    if cluster is not None:
        try:
            # distributed annotates it for its blocking form; an asynchronous client's is awaitable.
            wait: Any = client.wait_for_workers
            await wait(len(cluster.worker_spec), timeout=WORKERS_TIMEOUT)
        except TimeoutError as exc:
            raise UsageError(f"the Dask workers did not start in {WORKERS_TIMEOUT} s") from exc
    assert client.scheduler is not None
    return sorted((await client.scheduler.identity(n_workers=-1))["workers"])


async def _check_shared(client: Client, out: Path) -> None:
    """Fail unless every worker sees ``out``: a sentinel file written here is read there."""
    token = secrets.token_hex(8)
    sentinel = out / f".asyncdl-sentinel-{token}"
    sentinel.write_text(token)
    try:
        seen = await client.run(_sees, str(sentinel), token)
    finally:
        sentinel.unlink(missing_ok=True)
    blind = sorted(address for address, ok in seen.items() if not ok)
    if blind:
        raise UsageError(
            f"{out} is not on a file system every Dask worker can see (not seen by "
            f"{', '.join(blind)}); give -o a shared folder"
        )


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False
