"""Fault injection for the emulator: seeded, reproducible misbehaviour, as real servers misbehave.

Two sorts. Faults (``KINDS``) hit a fraction ``rate`` of responses: whether the n-th request for a
URL fails, and how, is a pure function of (seed, URL, n), so a run sees the same faults whatever
order its requests arrive in, and every retry is a fresh draw. Hostile modes (``MODES``) hit every
response of their routes while they are on: a server that drips, sits behind a maintenance page,
redirects elsewhere, sends endless answers or volumes of another grid.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..errors import UsageError

#: Every kind of fault, and what it does:
KINDS = {
    "503": "503 Service Unavailable with Retry-After",
    "429": "429 Too Many Requests with Retry-After",
    "500": "500 with an HTML body",
    "502": "502 with an HTML body",
    "drop": "connection closed before any response",
    "truncate": "Content-Length promises more than is sent, then the connection closes",
    "badjson": "200 with a body that is not JSON (JSON routes only)",
    "slow": "an answer slower than the client's timeout",
    "apierror": "200 with success: false, as on a database error (JSON routes only; not default)",
}
JSON_ONLY = frozenset({"badjson", "apierror"})
#: Faults a client can always recover from by retrying; ``apierror`` is final by design.
DEFAULT_KINDS = tuple(kind for kind in KINDS if kind != "apierror")

#: Every hostile mode (a ``FaultPlan`` field that turns it on), and the routes it applies to:
MODES = {
    "drip": "every answer sent at `drip` bytes a second, with its Content-Length (all routes)",
    "html": "200 text/html maintenance page instead of a volume, for the first `html_requests` "
    "volume requests or `html_seconds` from the first one, then healthy",
    "redirect": "302 to the same path and query under the base URL `redirect` (all routes)",
    "huge": "spatial-search and other query.json answers of `huge_answers` bytes, chunked, no "
    "Content-Length",
    "wrong_grid": "NRRD volumes whose header declares the grid `wrong_grid`, with data of that size",
}
VOLUME_ROUTES = frozenset({"grid_nrrd", "grid_legacy", "well_known_file", "annotation"})
#: The emulator's routes that faults and modes can be limited to (``FaultPlan.routes``).
ROUTES = VOLUME_ROUTES | {"structure_graph", "query"}
_MODE_ROUTES: dict[str, frozenset[str] | None] = {
    "drip": None,
    "html": VOLUME_ROUTES,
    "redirect": None,
    "huge": frozenset({"query"}),
    "wrong_grid": frozenset({"grid_nrrd", "annotation"}),
}
MAINTENANCE_PAGE = (
    "<!DOCTYPE html><html><head><title>Down for maintenance</title></head>"
    "<body><h1>The Allen Brain Atlas is down for maintenance</h1></body></html>"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FaultPlan:
    """Which fraction of responses go wrong, and how; and which hostile modes are on."""

    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = DEFAULT_KINDS
    slow_seconds: float = 5.0
    retry_after: int = 1
    #: Route names faults and modes apply to (None: all), e.g. ``{"query"}`` for the spatial
    #: search only.
    routes: frozenset[str] | None = None
    #: Hostile modes (``MODES``), each off by default.
    drip: float | None = None
    html_requests: int = 0
    html_seconds: float = 0.0
    redirect: str | None = None
    huge_answers: int = 0
    wrong_grid: tuple[int, int, int] | None = None
    injected: Counter[str] = field(default_factory=Counter)
    _attempts: Counter[str] = field(default_factory=Counter)
    _html_served: int = 0
    _html_until: float | None = None

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise UsageError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise UsageError(f"fault rate must be in [0, 1], got {self.rate}")
        if self.routes is not None and not self.routes <= ROUTES:
            unknown_routes = ", ".join(sorted(self.routes - ROUTES))
            raise UsageError(f"unknown routes {unknown_routes}; known: {', '.join(sorted(ROUTES))}")
        if self.drip is not None and not self.drip > 0:
            raise UsageError(f"drip rate must be positive, got {self.drip}")
        if self.wrong_grid is not None and (len(self.wrong_grid) != 3 or min(self.wrong_grid) < 1):
            raise UsageError(f"a grid is three positive sizes, got {self.wrong_grid}")
        if min(self.html_requests, self.html_seconds, self.huge_answers) < 0:
            raise UsageError("html window and answer sizes must be 0 or more")

    @property
    def hostile(self) -> bool:
        """Whether any hostile mode is on."""
        return (
            self.drip is not None
            or self.html_requests > 0
            or self.html_seconds > 0
            or self.redirect is not None
            or self.huge_answers > 0
            or self.wrong_grid is not None
        )

    def applies(self, mode: str, route: str) -> bool:
        """Whether hostile ``mode`` is on for a request of ``route`` (counts an HTML window's use)."""
        own = _MODE_ROUTES[mode]
        if (own is not None and route not in own) or (
            self.routes is not None and route not in self.routes
        ):
            return False
        if mode == "drip":
            return self.drip is not None
        if mode == "redirect":
            return self.redirect is not None
        if mode == "huge":
            return self.huge_answers > 0
        if mode == "wrong_grid":
            return self.wrong_grid is not None
        return self._in_html_window()

    def _in_html_window(self) -> bool:
        if self._html_served < self.html_requests:
            self._html_served += 1
            return True
        if self.html_seconds > 0:
            now = time.monotonic()
            if self._html_until is None:
                self._html_until = now + self.html_seconds
            return now < self._html_until
        return False

    def pick(self, url: str, route: str, json_route: bool) -> str | None:
        """The fault for this request of ``url``, or None; counts the attempt."""
        if self.rate <= 0.0 or (self.routes is not None and route not in self.routes):
            return None
        self._attempts[url] += 1
        digest = hashlib.blake2b(
            f"{self.seed}|{url}|{self._attempts[url]}".encode(), digest_size=16
        ).digest()
        if int.from_bytes(digest[:8], "little") / 2**64 >= self.rate:
            return None
        kinds = [k for k in self.kinds if json_route or k not in JSON_ONLY]
        if not kinds:
            return None
        kind = kinds[int.from_bytes(digest[8:], "little") % len(kinds)]
        self.injected[kind] += 1
        return kind


async def respond_with_fault(
    kind: str, request: web.Request, plan: FaultPlan, make: Handler
) -> web.StreamResponse:
    """Answer ``request`` with fault ``kind``; ``make`` builds the healthy response when needed."""
    if kind in ("503", "429"):
        return web.Response(
            status=int(kind), text="busy", headers={"Retry-After": str(plan.retry_after)}
        )
    if kind in ("500", "502"):
        html = f"<html><body><h1>{kind} Server Error</h1></body></html>"
        return web.Response(status=int(kind), text=html, content_type="text/html")
    if kind == "badjson":
        return web.Response(
            body=b'{"success": true, "msg": [{"id"', content_type="application/json"
        )
    if kind == "apierror":
        failure = b'{"success": false, "id": -1, "msg": "Data Access error: connection reset"}'
        return web.Response(body=failure, content_type="application/json")
    if kind == "slow":
        await asyncio.sleep(plan.slow_seconds)
        return await make(request)
    transport = request.transport
    if kind == "drop":
        if transport is not None:
            transport.close()
        return web.Response(status=500)  # never reaches the client
    # truncate: send the headers and half the body, then hang up.
    healthy = await make(request)
    body = healthy.body if isinstance(healthy, web.Response) else None
    if not isinstance(body, bytes) or not body:
        return healthy
    response = web.StreamResponse(status=healthy.status, headers={"Content-Length": str(len(body))})
    response.content_type = healthy.content_type
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if transport is not None:
        transport.close()
    return response


async def respond_hostile(
    request: web.Request,
    route: str,
    plan: FaultPlan,
    make: Handler,
    wrong_grid: Callable[[tuple[int, int, int]], Awaitable[bytes]],
) -> web.StreamResponse:
    """Answer ``request`` as the hostile modes on for ``route`` say (``make`` when none is);
    ``wrong_grid`` builds the NRRD file of a grid."""
    if plan.applies("redirect", route):
        assert plan.redirect is not None
        plan.injected["redirect"] += 1
        location = plan.redirect.rstrip("/") + request.raw_path
        return web.Response(status=302, headers={"Location": location})
    if plan.applies("html", route):
        plan.injected["html"] += 1
        response: web.StreamResponse = web.Response(text=MAINTENANCE_PAGE, content_type="text/html")
    elif plan.applies("huge", route):
        plan.injected["huge"] += 1
        return await _huge_answer(request, plan.huge_answers)
    elif plan.applies("wrong_grid", route):
        assert plan.wrong_grid is not None
        plan.injected["wrong_grid"] += 1
        body = await wrong_grid(plan.wrong_grid)
        response = web.Response(body=body, content_type="application/octet-stream")
    else:
        response = await make(request)
    if plan.applies("drip", route) and isinstance(response, web.Response):
        assert plan.drip is not None
        plan.injected["drip"] += 1
        return await _drip(request, response, plan.drip)
    return response


async def _drip(request: web.Request, healthy: web.Response, rate: float) -> web.StreamResponse:
    """``healthy`` with its Content-Length, its body sent at ``rate`` bytes a second (ten writes a
    second, or one byte at a time below 10 bytes a second), until done or the client leaves."""
    body = healthy.body if isinstance(healthy.body, bytes) else b""
    stream = web.StreamResponse(status=healthy.status, headers={"Content-Length": str(len(body))})
    stream.content_type = healthy.content_type
    step = max(1, int(rate / 10))
    try:
        await stream.prepare(request)
        for start in range(0, len(body), step):
            await stream.write(body[start : start + step])
            await asyncio.sleep(step / rate)
        await stream.write_eof()
    except ConnectionError:
        pass  # the client gave up, as it should
    return stream


_HUGE_HEAD = (
    b'{"success": true, "id": 0, "start_row": 0, "num_rows": 1, "total_rows": 1, "msg": [{"pad": "'
)
_HUGE_TAIL = b'"}]}'
_PAD = b"x" * (64 * 1024)


async def _huge_answer(request: web.Request, size: int) -> web.StreamResponse:
    """A JSON answer of ``size`` bytes, chunked with no Content-Length, made as it is sent (the
    server never holds it), until done or the client leaves."""
    stream = web.StreamResponse(headers={"Content-Type": "application/json"})
    stream.enable_chunked_encoding()
    try:
        await stream.prepare(request)
        await stream.write(_HUGE_HEAD)
        left = max(0, size - len(_HUGE_HEAD) - len(_HUGE_TAIL))
        while left > 0:
            piece = _PAD[: min(left, len(_PAD))]
            await stream.write(piece)
            left -= len(piece)
        await stream.write(_HUGE_TAIL)
        await stream.write_eof()
    except ConnectionError:
        pass  # the client gave up, as it should
    return stream
