"""The Allen API emulator: an aiohttp.web server on loopback with the real API's URLs and formats.

Routes (all GET):
    /grid_data/download_file/{id}?image=projection_density|injection_fraction&resolution=100   NRRD
    /grid_data/download/{id}?include=density|injection                 zip of {name}.mhd + .raw
    /api/v2/well_known_file_download/197646984                         zip of annotationFiber.mhd/.raw
    /informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_25.nrrd
    /api/v2/structure_graph_download/1.json                            nested structure tree
    /api/v2/data/query.json?criteria=service::mouse_connectivity_target_spatial[...]
    /api/v2/data/query.json?criteria=service::mouse_connectivity_injection_structure[...]  (paged)
    /__emulator__/stats                                     counters and faults (not an Allen route)

Queries are read decoded, so ``[`` and ``%5B`` mean the same, as on the real server: AllenSDK
sends criteria percent-encoded, the 2013 script sent raw brackets.

Every route can be made to misbehave, reproducibly, with a ``FaultPlan`` (see ``faults``): random
faults at a rate, and hostile modes (drip, a maintenance window, redirects, endless answers, volumes
of another grid). The server can be given a capacity: K handlers and a queue, shedding load if
asked (see ``capacity``).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from ..errors import UsageError
from . import catalog, formats, synthetic
from .capacity import Capacity, QueueStats, Shed
from .envelope import failure, success
from .faults import FaultPlan, respond_hostile, respond_with_fault
from .ontology import FIBER_TRACT_IDS, structure_tree

FIBER_FILE_ID = 197646984
_TARGET_SPATIAL = re.compile(
    r"^service::mouse_connectivity_target_spatial"
    r"\[seed_point\$eq(-?\d+),(-?\d+),(-?\d+)\]\[section_data_set\$eq(\d+)\]$"
)
_EXPERIMENTS_KEPT = 16
_JSON_ROUTES = frozenset({"query", "structure_graph"})
_GRID_IMAGES = {"projection_density": "density", "injection_fraction": "injection"}


@dataclass
class Stats:
    """What the server has seen: requests per route (answered, sheds not included), and the peak
    number in flight at once (queued included); with a capacity, its queue."""

    requests: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    #: TLS handshakes begun (https only): one per connection a client opened.
    tls_handshakes: int = 0
    #: (route, data set, start, end) of every request, when the server was asked to record them.
    log: list[tuple[str, int | None, float, float]] | None = None
    #: (request target exactly as sent, User-Agent) of every request, when recording.
    wire: list[tuple[str, str]] | None = None
    #: The queue before the handlers, when the server has a capacity.
    queue: QueueStats | None = None

    def reset(self) -> None:
        self.requests.clear()
        self.peak_in_flight = self.in_flight
        self.tls_handshakes = 0
        if self.log is not None:
            self.log.clear()
        if self.wire is not None:
            self.wire.clear()
        if self.queue is not None:
            self.queue.reset()

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "tls_handshakes": self.tls_handshakes,
            **({"queue": self.queue.as_dict()} if self.queue is not None else {}),
        }


# -- file contents (pure, cached: the same bytes for every server in a process) --------------------


@lru_cache(maxsize=16)
def grid_nrrd(data_set: int, volume: str) -> bytes:
    exp = synthetic.Experiment(data_set)
    arr = exp.projection_density() if volume == "density" else exp.injection_fraction()
    return formats.nrrd_bytes(
        formats.fortran_slabs(arr), synthetic.GRID_SHAPE, "double", "<f8", synthetic.GRID_SPACING
    )


@lru_cache(maxsize=16)
def grid_legacy(data_set: int, volume: str) -> bytes:
    exp = synthetic.Experiment(data_set)
    shape = synthetic.LEGACY_GRID_SHAPE
    arr = exp.projection_density(shape) if volume == "density" else exp.injection_fraction(shape)
    return formats.metaimage_zip(
        volume, formats.fortran_slabs(arr), shape, "MET_FLOAT", "<f4", synthetic.GRID_SPACING
    )


@lru_cache(maxsize=1)
def annotation_nrrd() -> bytes:
    shape = synthetic.ANNOTATION_SHAPE
    slabs = formats.slabs_from(synthetic.annotation_slab, shape[2])
    return formats.nrrd_bytes(slabs, shape, "unsigned int", "<u4", synthetic.ANNOTATION_SPACING)


@lru_cache(maxsize=2)
def wrong_grid_nrrd(shape: tuple[int, int, int]) -> bytes:
    """An NRRD file of zeros on the grid ``shape`` (a hostile server's volume of another grid)."""
    zeros = np.zeros(shape[:2])
    slabs = formats.slabs_from(lambda k: zeros, shape[2])
    return formats.nrrd_bytes(slabs, shape, "double", "<f8", synthetic.GRID_SPACING)


@lru_cache(maxsize=1)
def fiber_tracts_zip() -> bytes:
    tract_ids = np.array(sorted(FIBER_TRACT_IDS))
    shape = synthetic.ANNOTATION_SHAPE

    def mask(k: int) -> np.ndarray[Any, Any]:
        return np.isin(synthetic.annotation_slab(k), tract_ids).astype(np.uint8)

    slabs = formats.slabs_from(mask, shape[2])
    return formats.metaimage_zip(
        "annotationFiber", slabs, shape, "MET_UCHAR", "u1", synthetic.ANNOTATION_SPACING
    )


# -- the server ------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EmulatorApp:
    """Route handlers and their shared state (known data sets, latency, statistics)."""

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        latency_spread: float = 0.2,
        data_sets: Iterable[int] = catalog.CATALOGUE_IDS,
        seed: int = 0,
        record: bool = False,
        faults: FaultPlan | None = None,
        search_total_rows: catalog.TotalRows = "matches",
        capacity: int | None = None,
        shed_queue: int | None = None,
        retry_after: int = 1,
    ) -> None:
        self.latency = latency_ms / 1000.0
        self.spread = latency_spread
        self.data_sets = frozenset(data_sets)
        self.capacity = Capacity(capacity, shed_queue) if capacity is not None else None
        if shed_queue is not None and self.capacity is None:
            raise UsageError("shedding needs a capacity (--capacity K)")
        #: What a shed request is told: seconds to wait before asking again.
        self.retry_after = retry_after
        self.stats = Stats(
            log=[] if record else None,
            wire=[] if record else None,
            queue=self.capacity.stats if self.capacity is not None else None,
        )
        self.search_total_rows = search_total_rows
        self.faults = faults or FaultPlan()
        self._random = random.Random(seed)
        # Experiments hold their density grid (10 MB): keep the recently used ones only.
        self._experiments: OrderedDict[int, synthetic.Experiment] = OrderedDict()
        self._locks: dict[object, asyncio.Lock] = {}

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/grid_data/download_file/{id}", self.grid_nrrd, name="grid_nrrd")
        app.router.add_get("/grid_data/download/{id}", self.grid_legacy, name="grid_legacy")
        app.router.add_get(
            "/api/v2/well_known_file_download/{file_id}",
            self.well_known_file,
            name="well_known_file",
        )
        app.router.add_get(
            "/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/annotation_25.nrrd",
            self.annotation,
            name="annotation",
        )
        app.router.add_get(
            "/api/v2/structure_graph_download/{graph}.json",
            self.structure_graph,
            name="structure_graph",
        )
        app.router.add_get("/api/v2/data/query.json", self.query, name="query")
        app.router.add_get("/__emulator__/stats", self.stats_route, name="stats")
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        stats = self.stats
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        route = request.match_info.route.name or "unmatched"
        started = time.monotonic()
        if stats.wire is not None:
            stats.wire.append((request.raw_path, request.headers.get("User-Agent", "")))
        try:
            if route == "stats":
                response = await handler(request)
            elif self.capacity is None:
                response = await self._serve(request, route, handler)
            else:
                try:
                    async with self.capacity.handler():
                        response = await self._serve(request, route, handler)
                except Shed:
                    return web.Response(
                        status=503, text="busy", headers={"Retry-After": str(self.retry_after)}
                    )
            stats.requests[route] += 1
            return response
        finally:
            stats.in_flight -= 1
            if stats.log is not None:
                stats.log.append((route, _data_set_of(request), started, time.monotonic()))

    async def _serve(
        self, request: web.Request, route: str, handler: Handler
    ) -> web.StreamResponse:
        """The answer, a fault or a hostile answer; it takes the server's latency in all, from
        when it began (its wait in the queue not included)."""
        began = time.monotonic()
        # Faults are drawn per decoded URL: the same whether brackets came encoded or raw.
        fault = self.faults.pick(request.rel_url.path_qs, route, route in _JSON_ROUTES)
        if fault is not None:
            response = await respond_with_fault(fault, request, self.faults, handler)
        elif self.faults.hostile:
            response = await respond_hostile(request, route, self.faults, handler, self._wrong_grid)
        else:
            response = await handler(request)
        if self.latency > 0:
            # The latency is an answer's whole time at the server, its work included, as on a
            # server that works on many requests at once: the work is done while it waits.
            jitter = self._random.uniform(-self.spread, self.spread)
            remaining = self.latency * (1.0 + jitter) - (time.monotonic() - began)
            if remaining > 0:
                await asyncio.sleep(remaining)
        return response

    def _experiment(self, raw_id: str) -> synthetic.Experiment:
        if not raw_id.isdigit() or int(raw_id) not in self.data_sets:
            raise web.HTTPNotFound(
                text=f"<html><body>404: no data set {raw_id[:40]}</body></html>",
                content_type="text/html",
            )
        data_set = int(raw_id)
        experiment = self._experiments.pop(data_set, None) or synthetic.Experiment(data_set)
        self._experiments[data_set] = experiment
        if len(self._experiments) > _EXPERIMENTS_KEPT:
            self._experiments.popitem(last=False)
        return experiment

    async def _bytes(self, key: tuple[object, ...], make: Callable[[], bytes]) -> bytes:
        """Build a file once, off the event loop; concurrent requests for it wait for the first."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(make)

    async def _wrong_grid(self, shape: tuple[int, int, int]) -> bytes:
        return await self._bytes(("wrong_grid", shape), lambda: wrong_grid_nrrd(shape))

    async def grid_nrrd(self, request: web.Request) -> web.Response:
        exp = self._experiment(request.match_info["id"])
        volume = _GRID_IMAGES.get(request.query.get("image", ""))
        if volume is None or request.query.get("resolution") != "100":
            raise web.HTTPBadRequest(text="unsupported image or resolution")
        body = await self._bytes(
            ("nrrd", exp.data_set_id, volume), lambda: grid_nrrd(exp.data_set_id, volume)
        )
        return web.Response(body=body, content_type="application/octet-stream")

    async def grid_legacy(self, request: web.Request) -> web.Response:
        exp = self._experiment(request.match_info["id"])
        volume = request.query.get("include", "")
        if volume not in ("density", "injection"):
            raise web.HTTPBadRequest(text="unsupported include")
        body = await self._bytes(
            ("zip", exp.data_set_id, volume), lambda: grid_legacy(exp.data_set_id, volume)
        )
        return web.Response(body=body, content_type="application/zip")

    async def well_known_file(self, request: web.Request) -> web.Response:
        if request.match_info["file_id"] != str(FIBER_FILE_ID):
            raise web.HTTPNotFound(text="no such file")
        body = await self._bytes(("fiber",), fiber_tracts_zip)
        return web.Response(body=body, content_type="application/zip")

    async def annotation(self, request: web.Request) -> web.Response:
        body = await self._bytes(("annotation",), annotation_nrrd)
        return web.Response(body=body, content_type="application/octet-stream")

    async def structure_graph(self, request: web.Request) -> web.Response:
        if request.match_info["graph"] != "1":
            return _json(failure("Unknown structure graph"))
        return _json(success(structure_tree()))

    async def query(self, request: web.Request) -> web.Response:
        criteria = request.query.get("criteria", "")
        if criteria.startswith(catalog.SERVICE):
            try:
                answer = await asyncio.to_thread(catalog.answer, criteria, self.search_total_rows)
                return _json(answer)
            except catalog.BadQuery as exc:
                return _json(failure(str(exc)), status=400)
        match = _TARGET_SPATIAL.match(criteria)
        if match is None:
            return _json(failure(f"Unsupported criteria: {criteria[:200]}"), status=400)
        x, y, z, data_set = (int(g) for g in match.groups())
        if data_set not in self.data_sets:
            return _json(failure(f"Data Access error: no section data set with id {data_set}"))
        return _json(success(self._experiment(str(data_set)).spatial_search((x, y, z))))

    async def stats_route(self, request: web.Request) -> web.Response:
        return _json({**self.stats.as_dict(), "faults": dict(self.faults.injected)})


def _data_set_of(request: web.Request) -> int | None:
    """The data set a grid download or a spatial search is about, for the request log."""
    raw = request.match_info.get("id", "")
    if raw.isdigit():
        return int(raw)
    match = _TARGET_SPATIAL.match(request.query.get("criteria", ""))
    return int(match.group(4)) if match else None


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")
