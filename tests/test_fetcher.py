"""The HTTP engine against a real local server that misbehaves on purpose."""

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncdl import FetchError, FetchOptions, HTTPStatusError, TransientError
from asyncdl import fetcher as fetcher_module
from asyncdl.fetcher import HttpClient, Tally
from asyncdl.responses import rows


class Script:
    """A server whose answers follow a script: one entry per request, then 'ok' forever."""

    def __init__(self, *steps: str) -> None:
        self.steps = list(steps)
        self.seen = 0
        self.in_flight = 0
        self.peak = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            step = self.steps.pop(0) if self.steps else "ok"
            if step == "slow":
                await asyncio.sleep(0.5)
            elif step.isdigit():
                return web.Response(status=int(step), text="<html>error</html>")
            elif step == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(text="")
            elif step == "badjson":
                return web.Response(text="{not json", content_type="application/json")
            elif step == "truncated":
                resp = web.StreamResponse(headers={"Content-Length": "1000"})
                await resp.prepare(request)
                await resp.write(b"x" * 10)
                assert request.transport is not None
                request.transport.close()
                return resp
            await asyncio.sleep(0.01)
            return web.json_response({"success": True, "msg": [{"n": self.seen}]})
        finally:
            self.in_flight -= 1


@pytest.fixture
async def serve():
    servers = []

    async def start(script: Script) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", script.handle)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/api"))

    yield start
    for server in servers:
        await server.close()


class Sleeps:
    """An injectable sleep that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(sleeps=None, **options):
    opts = FetchOptions(**{"retries": 3, "backoff_base": 0.5, "timeout": 5, **options})
    return HttpClient(opts, sleep=sleeps or Sleeps())


@pytest.mark.parametrize("fault", ["503", "500", "429", "drop", "badjson", "truncated"])
async def test_transient_faults_are_retried(serve, fault):
    script = Script(fault, fault)
    url = await serve(script)
    sleeps = Sleeps()
    tally = Tally()
    async with client(sleeps) as http:
        got = await http.get_json(url, tally, rows)
    assert got == [{"n": script.seen}]
    if fault == "drop":
        # aiohttp itself re-sends once when a reused keep-alive connection turns out closed.
        assert script.seen == 3 and tally.retries >= 1
    else:
        assert (script.seen, tally.requests, tally.retries) == (3, 3, 2)
    assert tally.requests == tally.retries + 1
    # Full jitter: the n-th wait is uniform in [0, base * 2**n].
    assert len(sleeps.waits) == tally.retries
    assert all(0 <= wait <= 0.5 * 2**n for n, wait in enumerate(sleeps.waits))


async def test_retries_are_bounded_and_the_last_error_is_raised(serve):
    script = Script("503", "503", "503", "503", "503")
    url = await serve(script)
    tally = Tally()
    async with client() as http:
        with pytest.raises(TransientError, match="HTTP 503"):
            await http.get_json(url, tally, rows)
    assert script.seen == 4 and tally.retries == 3


@pytest.mark.parametrize("status", ["400", "403", "404"])
async def test_client_errors_are_not_retried(serve, status):
    script = Script(status)
    url = await serve(script)
    async with client() as http:
        with pytest.raises(HTTPStatusError) as err:
            await http.get_json(url, Tally(), rows)
    assert err.value.status == int(status)
    assert script.seen == 1


async def test_timeout_is_per_attempt_and_retried(serve):
    script = Script("slow", "slow")
    url = await serve(script)
    tally = Tally()
    async with client(timeout=0.1) as http:
        assert await http.get_json(url, tally, rows) == [{"n": 3}]
    assert tally.retries == 2


async def test_success_false_is_an_api_error_not_retried(serve):
    app_calls = []

    async def handle(request):
        app_calls.append(1)
        return web.json_response({"success": False, "msg": "Data Access error"})

    app = web.Application()
    app.router.add_get("/api", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with client() as http:
            with pytest.raises(FetchError, match="Data Access error"):
                await http.get_json(str(server.make_url("/api")), Tally(), rows)
    finally:
        await server.close()
    assert len(app_calls) == 1


async def test_oversized_json_is_refused(serve, monkeypatch):
    monkeypatch.setattr(fetcher_module, "MAX_JSON_BYTES", 10)
    url = await serve(Script())
    async with client() as http:
        with pytest.raises(FetchError, match="exceeds the 10 limit"):
            await http.get_json(url, Tally(), rows)


async def test_download_is_atomic_and_retried(serve, tmp_path):
    url = await serve(Script("truncated"))
    dest = tmp_path / "file.bin"
    tally = Tally()
    async with client() as http:
        size = await http.download(url, dest, tally)
    assert dest.read_bytes().startswith(b'{"success"') and size == dest.stat().st_size
    assert tally.retries == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # no temp file left


async def test_failed_download_leaves_nothing_at_the_final_path(serve, tmp_path):
    url = await serve(Script(*["truncated"] * 4))
    dest = tmp_path / "file.bin"
    async with client() as http:
        with pytest.raises(TransientError):
            await http.download(url, dest, Tally())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("limit", [1, 3, 8])
async def test_requests_in_flight_never_exceed_the_limit(serve, limit):
    script = Script()
    url = await serve(script)
    async with client(concurrency=limit) as http:
        tally = Tally()
        await asyncio.gather(*(http.get_json(url, tally, rows) for _ in range(60)))
    assert script.seen == 60
    assert script.peak == limit
