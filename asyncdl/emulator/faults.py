"""Fault injection for the emulator: seeded, reproducible misbehaviour, as real servers misbehave.

Whether the n-th request for a URL fails, and how, is a pure function of (seed, URL, n), so a run
sees the same faults whatever order its requests arrive in, and every retry is a fresh draw.
"""

from __future__ import annotations

import asyncio
import hashlib
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FaultPlan:
    """Which fraction of responses go wrong, and how."""

    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = DEFAULT_KINDS
    slow_seconds: float = 5.0
    retry_after: int = 1
    #: Route names faults apply to (None: all), e.g. ``{"query"}`` for the spatial search only.
    routes: frozenset[str] | None = None
    injected: Counter[str] = field(default_factory=Counter)
    _attempts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise UsageError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise UsageError(f"fault rate must be in [0, 1], got {self.rate}")

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
