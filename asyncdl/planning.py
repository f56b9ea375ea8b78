"""A dry run as a planning step: each data set's targets counted from its volumes, a few of its
target requests really asked, and from them what the whole run will take (``Forecast``).

The volumes come in as concurrently as ``-c`` allows, and are decoded a few at a time (each is
held in memory while its targets are counted). Then ``SAMPLES`` targets of each data set, spread
over its ranks, are asked of the spatial search (``_sample`` says how): their answers give the
latency (the median, not the fastest: a fetch runs at the typical answer's pace), the bytes each
answer adds to data.json, and the client's own CPU per request on this machine. Nothing is written
to OUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from .aio import all_of
from .config import FetchOptions
from .dataset import explain
from .errors import ENDS_THE_RUN, AsyncdlError
from .events import clock, size
from .fetcher import HttpClient, Tally
from .responses import rows
from .results import Survey
from .sources import VolumeSource
from .urls import Endpoints

#: Target requests really asked per data set.
SAMPLES = 3
#: Data sets sampled at once (a server may keep only a few data sets at hand, as a run needs).
SAMPLED_AT_ONCE = 8
#: Sampled requests below which their CPU time says more of fixed costs than of each request.
CPU_SAMPLES = 50
#: Bytes a target's line adds to the journal (lines.ndjson) beyond its answer: rank, index, coord.
JOURNAL_OVERHEAD = 90


def sample_ranks(targets: int, samples: int = SAMPLES) -> list[int]:
    """``samples`` ranks spread evenly over ``targets`` (all of them if there are fewer)."""
    if targets <= samples:
        return list(range(targets))
    return [int((i + 0.5) * targets / samples) for i in range(samples)]


async def survey_data_sets(
    ids: Sequence[int],
    *,
    options: FetchOptions,
    endpoints: Endpoints,
    cache_dir: Path,
    on_survey: Callable[[Survey], None] | None = None,
) -> tuple[list[Survey], Measures]:
    """Count the targets of ``ids`` and sample their requests; ``on_survey`` is told of each data
    set as its targets are counted."""
    decoding = asyncio.Semaphore(max(options.prefetch, os.cpu_count() or 1))
    # Only the coordinates of the targets to sample: a whole atlas's targets would take 100s of MB.
    found: dict[int, list[list[int]]] = {}
    async with HttpClient(options) as client:
        source = VolumeSource(
            client, endpoints, cache_dir, options.volumes, allensdk=options.allensdk_cache
        )

        # What every data set's count needs (the annotation, the structure tree, the tract
        # mask) first: queued behind every data set's grids, no data set could be counted until
        # all of them were in. A failure here is each data set's to report, below.
        with contextlib.suppress(AsyncdlError, OSError):
            await source.prefetch_shared(Tally())

        async def count(data_set: int) -> Survey:
            tally = Tally()
            try:
                # Downloads first, at -c: they need no memory; decoding does.
                await source.download(data_set, tally)
                async with decoding:
                    targets, injection = await source.select(data_set, options, tally)
                await source.note_targets(data_set, options.density_range, len(targets))
            except ENDS_THE_RUN:
                raise
            except (AsyncdlError, OSError) as exc:
                survey = Survey(data_set, error=explain(exc))
            else:
                found[data_set] = [
                    targets.coord[rank].tolist() for rank in sample_ranks(len(targets), SAMPLES + 1)
                ]
                survey = Survey(data_set, len(targets), len(injection))
            if on_survey is not None:
                on_survey(survey)
            return survey

        surveys = await all_of(*(count(data_set) for data_set in ids))
        measures = await _sample(client, endpoints, found, options.max_in_flight)
    return surveys, measures


@dataclass(frozen=True)
class Measures:
    """What the sampled target requests measured."""

    #: Each timed answer's seconds, from its request to its last byte.
    seconds: tuple[float, ...] = ()
    #: Bytes the sampled answers add to data.json, in all.
    data_bytes: int = 0
    #: The client's CPU seconds for the timed ones (this process, so all its threads).
    cpu_seconds: float = 0.0
    #: Wall-clock seconds the timed ones took.
    wall_seconds: float = 0.0
    #: Data sets whose samples failed (their requests are retried in a run).
    failed: int = 0

    @property
    def count(self) -> int:
        return len(self.seconds)

    @property
    def latency(self) -> float | None:
        """The median answer's seconds."""
        return statistics.median(self.seconds) if self.seconds else None


async def _sample(
    client: HttpClient, endpoints: Endpoints, found: dict[int, list[list[int]]], concurrency: int
) -> Measures:
    """Ask ``SAMPLES`` + 1 targets of each data set (``found``: their coordinates), a few data sets at a time in their order, as a
    run works on them: first one of each, untimed (a server may load a data set on its first
    request, which a run of thousands of its requests does not feel, and a server busy loading is
    slow for every request), then the others, timed."""
    slots = asyncio.Semaphore(concurrency)
    seconds: list[float] = []
    data_bytes = failed = 0

    async def ask(data_set: int, coord: list[int], *, timed: bool) -> None:
        nonlocal data_bytes, failed
        url = endpoints.target_spatial(coord, data_set)
        async with slots:
            sent = time.monotonic()
            try:
                records = await client.get_json(url, Tally(), rows)
            except ENDS_THE_RUN:
                raise
            except AsyncdlError:
                failed += 1
                return
            if timed:
                seconds.append(time.monotonic() - sent)
                data_bytes += len(orjson.dumps(records)) - 1  # in data.json: records, commas

    cpu = wall = 0.0
    found_items = list(found.items())
    for start in range(0, len(found_items), SAMPLED_AT_ONCE):
        batch = found_items[start:][:SAMPLED_AT_ONCE]
        await all_of(*(ask(ds, coords[0], timed=False) for ds, coords in batch if coords))
        began, used = time.monotonic(), time.process_time()
        await all_of(*(ask(ds, c, timed=True) for ds, coords in batch for c in coords[1:]))
        cpu += time.process_time() - used
        wall += time.monotonic() - began
    return Measures(tuple(seconds), data_bytes, cpu, wall, failed)


@dataclass(frozen=True)
class Forecast:
    """What a run of the surveyed data sets will take, from a dry run's measures."""

    data_sets: int
    failed: int
    targets: int
    #: Requests a second the run can expect at ``concurrency``: Little's law with the median
    #: latency (``concurrency`` / latency), under --rate, and under what this machine's CPU allows.
    rate: float | None
    #: ``concurrency`` / the median latency alone.
    latency_rate: float | None
    #: Requests a second the client's CPU allows (as the samples cost it), if measured.
    cpu_rate: float | None
    seconds: float | None
    #: data.json of every data set; the journals (lines.ndjson), as much again if they are kept
    #: (--keep-journal: each goes once its data set's data.json is verified).
    data_bytes: int
    journal_bytes: int
    #: What the volume cache holds after the dry run (the run reads its grids from it).
    cache_bytes: int


def forecast(
    surveys: Sequence[Survey],
    measures: Measures,
    *,
    concurrency: int,
    rate: float | None = None,
    cache_bytes: int = 0,
) -> Forecast:
    """What a run of ``surveys`` at ``concurrency`` (and ``rate``) will take."""
    counted = [s for s in surveys if s.error is None]
    targets = sum(s.targets for s in counted)
    latency = measures.latency
    latency_rate = concurrency / latency if latency else None
    cpu_rate = None
    if measures.count >= CPU_SAMPLES and measures.cpu_seconds > 0:
        cpu_rate = measures.count / measures.cpu_seconds
    limits = [r for r in (latency_rate, cpu_rate, rate) if r]
    run_rate = min(limits) if limits else None
    per_answer = measures.data_bytes / measures.count if measures.count else 0.0
    return Forecast(
        data_sets=len(surveys),
        failed=len(surveys) - len(counted),
        targets=targets,
        rate=run_rate,
        latency_rate=latency_rate,
        cpu_rate=cpu_rate,
        seconds=targets / run_rate if run_rate else None,
        data_bytes=round(targets * per_answer),
        journal_bytes=round(targets * (per_answer + JOURNAL_OVERHEAD)),
        cache_bytes=cache_bytes,
    )


def describe_forecast(ahead: Forecast, measures: Measures, at: str) -> list[str]:
    """The dry run's totals: targets and requests, time ``at`` the run's -c (e.g. ``"-c 16"``),
    disk."""
    failed = f" ({ahead.failed:,} could not be counted)" if ahead.failed else ""
    lines = [
        f"dry run: {ahead.data_sets:,} data sets{failed}, {ahead.targets:,} target requests "
        f"(one each; retries come on top)"
    ]
    if ahead.seconds is None or measures.latency is None:
        lines.append("time: unknown (no target request was answered)")
    else:
        why = (
            f"the median of {measures.count:,} sampled answers was {1000 * measures.latency:.0f} "
            f"ms: {ahead.latency_rate:,.0f} requests/s at {at}"
        )
        if ahead.cpu_rate is not None:
            why += f"; this machine's CPU allows about {ahead.cpu_rate:,.0f}/s"
        lines.append(f"time: ~{clock(ahead.seconds)} at {ahead.rate:,.0f} requests/s ({why})")
    lines.append(
        f"disk: ~{size(ahead.data_bytes)} of data.json (~{size(ahead.journal_bytes)} more with "
        f"--keep-journal); the volume cache holds {size(ahead.cache_bytes)}"
    )
    return lines
