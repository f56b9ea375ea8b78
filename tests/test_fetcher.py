"""The HTTP engine against a real local server that misbehaves on purpose."""

import asyncio

import pytest
from aiohttp import web

from asyncdl import FetchError, FetchOptions, HTTPStatusError, TransientError
from asyncdl import fetcher as fetcher_module
from asyncdl.fetcher import HttpClient, Tally
from asyncdl.responses import rows

from .conftest import Sleeps


class Script:
    """A server whose answers follow a script: one entry per request, then 'ok' forever.

    With ``gather=n`` the first requests are held until ``n`` are in flight at once, so whether a
    client reaches its concurrency limit does not depend on scheduling; a client that never gets
    there is let through after 3 s (well inside its 5 s timeout) and shows a lower peak.
    """

    def __init__(self, *steps: str, gather: int = 0) -> None:
        self.steps = list(steps)
        self.seen = 0
        self.in_flight = 0
        self.peak = 0
        self.gather = gather
        self._gathered = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.gather:
                if self.in_flight >= self.gather:
                    self._gathered.set()
                try:
                    await asyncio.wait_for(self._gathered.wait(), 3)
                except TimeoutError:
                    self._gathered.set()  # hold only the first wave
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


async def start(serve, script: Script) -> str:
    """Serve ``script`` on a loopback port; the URL to ask it."""
    url: str = await serve(script.handle)
    return url + "/api"


def client(sleeps=None, **options):
    opts = FetchOptions(**{"retries": 3, "backoff_base": 0.5, "timeout": 5, **options})
    return HttpClient(opts, sleep=sleeps or Sleeps())


@pytest.mark.parametrize("fault", ["503", "500", "429", "drop", "badjson", "truncated"])
async def test_transient_faults_are_retried(serve, fault):
    script = Script(fault, fault)
    url = await start(serve, script)
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
    url = await start(serve, script)
    tally = Tally()
    async with client() as http:
        with pytest.raises(TransientError, match="HTTP 503"):
            await http.get_json(url, tally, rows)
    assert script.seen == 4 and tally.retries == 3


@pytest.mark.parametrize("status", ["400", "403", "404"])
async def test_client_errors_are_not_retried(serve, status):
    script = Script(status)
    url = await start(serve, script)
    async with client() as http:
        with pytest.raises(HTTPStatusError) as err:
            await http.get_json(url, Tally(), rows)
    assert err.value.status == int(status)
    assert script.seen == 1


async def test_timeout_is_per_attempt_and_retried(serve):
    # Two answers slower (0.5 s) than the timeout (0.1 s), then quick ones. On a busy machine a
    # quick answer can miss the timeout too and cost one more retry, so the check is what must
    # hold whatever the schedule: the answer came from the third request or a later one (both
    # slow attempts were given up and retried), the call succeeded although it took longer than
    # one timeout (the limit is per attempt, not per call), and every attempt but the last was
    # counted as a retry.
    script = Script("slow", "slow")
    url = await start(serve, script)
    tally = Tally()
    async with client(timeout=0.1, retries=8) as http:
        [answer] = await http.get_json(url, tally, rows)
    assert answer["n"] >= 3 and tally.retries >= 2
    assert tally.requests == tally.retries + 1


async def test_success_false_is_an_api_error_not_retried(serve):
    app_calls = []

    async def handle(request):
        app_calls.append(1)
        return web.json_response({"success": False, "msg": "Data Access error"})

    url = await serve(handle)
    async with client() as http:
        with pytest.raises(FetchError, match="Data Access error"):
            await http.get_json(url + "/api", Tally(), rows)
    assert len(app_calls) == 1


async def test_oversized_json_is_refused(serve, monkeypatch):
    monkeypatch.setattr(fetcher_module, "MAX_JSON_BYTES", 10)
    url = await start(serve, Script())
    async with client() as http:
        with pytest.raises(FetchError, match="exceeds the 10 limit"):
            await http.get_json(url, Tally(), rows)


async def test_download_is_atomic_and_retried(serve, tmp_path):
    url = await start(serve, Script("truncated"))
    dest = tmp_path / "file.bin"
    tally = Tally()
    async with client() as http:
        size = await http.download(url, dest, tally)
    assert dest.read_bytes().startswith(b'{"success"') and size == dest.stat().st_size
    assert tally.retries == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # no temp file left


async def test_failed_download_leaves_nothing_at_the_final_path(serve, tmp_path):
    url = await start(serve, Script(*["truncated"] * 4))
    dest = tmp_path / "file.bin"
    async with client() as http:
        with pytest.raises(TransientError):
            await http.download(url, dest, Tally())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("limit", [1, 3, 8])
async def test_requests_in_flight_never_exceed_the_limit(serve, limit):
    # The server holds the first requests until `limit` are in flight, so a correct client reaches
    # the limit however its requests happen to be scheduled (the bound is what limits); one that
    # let more through would push the peak above it.
    script = Script(gather=limit)
    url = await start(serve, script)
    async with client(concurrency=limit) as http:
        tally = Tally()
        await asyncio.gather(*(http.get_json(url, tally, rows) for _ in range(60)))
    assert script.seen == 60
    assert script.peak == limit


@pytest.mark.parametrize("share", [0, 2, 5])
async def test_a_share_of_the_limit_bounds_what_is_in_flight(serve, share):
    # As above, with the client made for -c 8 and then given a smaller share (a Dask worker's).
    script = Script(gather=share or 1)
    url = await start(serve, script)
    async with client(concurrency=8) as http:
        await http.share(share)
        requests = [asyncio.ensure_future(http.get_json(url, Tally(), rows)) for _ in range(30)]
        if not share:  # paused: nothing goes out until it gets a share
            await asyncio.sleep(0.2)
            assert script.seen == 0
            await http.share(1)
        await asyncio.gather(*requests)
        with pytest.raises(ValueError, match="not within -c 8"):
            await http.share(9)
    assert script.seen == 30
    assert script.peak == (share or 1)


async def test_a_share_of_the_limit_takes_as_much_of_the_rate():
    async with client(concurrency=8, rate=80.0) as http:
        assert http.limits.rate is not None
        await http.share(2)
        assert http.limits.rate.interval == pytest.approx(1 / 20)
        await http.share(0)  # paused: nothing goes out, the rate stays until the next share
        assert http.limits.rate.interval == pytest.approx(1 / 20)
        await http.share(8)
        assert http.limits.rate.interval == pytest.approx(1 / 80)
