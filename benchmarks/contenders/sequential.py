"""The seed as written: blocking urllib, one request at a time, lines kept in memory until the end.

``python -m benchmarks.contenders.sequential ID... --base-url URL -o OUT [--sample K]``

The target URLs are produced lazily by the seed's loop and fetched as they come, as in the seed.
One change of order: the injection volume is fetched before the targets, not after, so that a
sampled run times target requests only.
"""

from __future__ import annotations

import itertools
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import seed

#: How a contender fetches the target lines: ``map(fetch, urls)`` or a pool's map.
Mapper = Callable[[Callable[[str], list[Any]], Iterable[str]], Iterator[list[Any]]]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        body: bytes = response.read()
        return body


def fetch_lines(url: str) -> list[Any]:
    return seed.lines_of(get(url))


def run(job: seed.Job, mapper: Mapper) -> None:
    """The seed's steps for each data set, with the target requests made through ``mapper``."""
    base = job.base_url
    fiber: seed.FiberTracts | None = None
    for data_set in job.data_sets:
        density, spacing = seed.decode_nrrd(get(seed.grid_url(base, data_set, "density")))
        injection = seed.injection_coordinates(
            *seed.decode_nrrd(get(seed.grid_url(base, data_set, "injection")))
        )
        if fiber is None:  # the annotation is shared by all data sets: read it once
            labels, fine_spacing = seed.decode_nrrd(get(base + seed.ANNOTATION))
            tract_ids = seed.fiber_tract_ids(get(base + seed.STRUCTURE_GRAPH))
            fiber = seed.FiberTracts(labels, fine_spacing, tract_ids)
        urls = itertools.islice(
            (
                seed.target_url(base, coord, data_set)
                for coord in seed.target_coords(density, spacing, fiber)
            ),
            job.sample,
        )
        lines = [record for answer in mapper(fetch_lines, urls) for record in answer]
        if job.sample is None:
            seed.write_data(job.out, data_set, lines, injection)


def main() -> None:
    run(seed.parse_job(), map)


if __name__ == "__main__":
    main()
