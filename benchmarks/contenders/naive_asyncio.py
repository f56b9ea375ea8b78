"""A first asyncio port: volumes fetched one by one, then ``asyncio.gather`` over all targets with
one semaphore of C, stdlib json, lines kept in memory until the end.

``python -m benchmarks.contenders.naive_asyncio ID... --base-url URL -o OUT -c C [--sample K]``

The connector's limit is set to C (aiohttp's default of 100 would otherwise cap it silently).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from . import seed


async def run(job: seed.Job) -> None:
    base = job.base_url
    connector = aiohttp.TCPConnector(limit=job.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(url: str) -> bytes:
            async with session.get(url) as response:
                response.raise_for_status()
                return await response.read()

        semaphore = asyncio.Semaphore(job.concurrency)

        async def fetch_lines(url: str) -> list[Any]:
            async with semaphore:
                return seed.lines_of(await get(url))

        fiber: seed.FiberTracts | None = None
        for data_set in job.data_sets:
            density, spacing = seed.decode_nrrd(await get(seed.grid_url(base, data_set, "density")))
            injection = seed.injection_coordinates(
                *seed.decode_nrrd(await get(seed.grid_url(base, data_set, "injection")))
            )
            if fiber is None:
                labels, fine_spacing = seed.decode_nrrd(await get(base + seed.ANNOTATION))
                tract_ids = seed.fiber_tract_ids(await get(base + seed.STRUCTURE_GRAPH))
                fiber = seed.FiberTracts(labels, fine_spacing, tract_ids)
            urls = [
                seed.target_url(base, coord, data_set)
                for coord in seed.target_coords(density, spacing, fiber)
            ][: job.sample]
            answers = await asyncio.gather(*(fetch_lines(url) for url in urls))
            lines = [record for answer in answers for record in answer]
            if job.sample is None:
                seed.write_data(job.out, data_set, lines, injection)


def main() -> None:
    asyncio.run(run(seed.parse_job()))


if __name__ == "__main__":
    main()
