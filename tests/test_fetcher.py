"""The HTTP engine against a real local server that misbehaves on purpose."""

import asyncio
import contextlib
import hashlib
import time

import orjson
import pytest
from aiohttp import web

from asyncdl import FetchError, FetchOptions, HTTPStatusError, TransientError, VolumeError
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


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_json_is_refused_at_once(serve, chunked):
    if chunked:  # no Content-Length: refused once more than the limit has come
        url = await serve(endless)
    else:  # its Content-Length says it is too large: refused before it is read
        url = await start(serve, Script())
    async with client() as http:
        with pytest.raises(FetchError, match="larger than the 10 bytes allowed") as err:
            await http.get_json(url, Tally(), rows, limit=10)
        assert not isinstance(err.value, TransientError) and err.value.url == url
        assert http._budget.used == 0


async def endless(request: web.Request) -> web.StreamResponse:
    """A JSON answer that never ends, chunked: only a bound on what is read ends it."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        await response.write(b'{"success": true, "msg": [{"pad": "')
        while True:
            await response.write(b"x" * 4096)
    except ConnectionError:
        return response


def read_bytes(path):
    return path.read_bytes()


async def test_download_is_atomic_and_retried(serve, tmp_path):
    url = await start(serve, Script("truncated"))
    dest = tmp_path / "file.bin"
    tally = Tally()
    async with client() as http:
        got = await http.download(url, dest, tally, read_bytes, limit=10_000)
    body = dest.read_bytes()
    assert body.startswith(b'{"success"') and got.value == body
    assert got.size == len(body) and got.sha256 == hashlib.sha256(body).hexdigest()
    assert tally.retries == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # no temp file left


async def test_failed_download_leaves_nothing_at_the_final_path(serve, tmp_path):
    url = await start(serve, Script(*["truncated"] * 4))
    dest = tmp_path / "file.bin"
    async with client() as http:
        with pytest.raises(TransientError):
            await http.download(url, dest, Tally(), read_bytes, limit=10_000)
    assert list(tmp_path.iterdir()) == []


async def test_a_download_its_read_refuses_is_retried_and_never_put_in_place(serve, tmp_path):
    bodies = [b"garbled", b"garbled", b"good"]
    seen = []

    async def handle(request):
        return web.Response(body=bodies.pop(0) if bodies else b"good")

    def read(path):
        seen.append(path)
        data = path.read_bytes()
        if data != b"good":
            raise VolumeError(f"not good: {data!r}")
        return data

    url = await serve(handle)
    dest = tmp_path / "file.bin"
    tally = Tally()
    async with client() as http:
        got = await http.download(url + "/f", dest, tally, read, limit=100)
    assert got.value == b"good" and dest.read_bytes() == b"good" and tally.retries == 2
    assert all(path != dest and path.parent == tmp_path for path in seen)  # read before the rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]
    bodies[:] = [b"garbled"] * 10
    with pytest.raises(TransientError, match="not a usable volume: not good") as err:
        async with client() as http:
            await http.download(url + "/g", tmp_path / "g.bin", Tally(), read, limit=100)
    assert err.value.url == url + "/g" and not (tmp_path / "g.bin").exists()


async def test_an_html_page_where_a_file_is_expected_is_transient_and_not_read(serve, tmp_path):
    async def page(request):
        return web.Response(text="<html>Down for maintenance</html>", content_type="text/html")

    url = await serve(page)
    read_calls: list[object] = []
    tally = Tally()
    async with client() as http:
        with pytest.raises(TransientError, match="HTML page") as err:
            await http.download(url + "/v", tmp_path / "v", tally, read_calls.append, limit=100)
    assert err.value.url == url + "/v" and tally.retries == 3 and read_calls == []
    assert list(tmp_path.iterdir()) == []


async def test_a_download_larger_than_its_limit_fails_at_once(serve, tmp_path):
    async def big(request):
        return web.Response(body=b"\0" * 5000)

    url = await serve(big)
    tally = Tally()
    async with client() as http:
        with pytest.raises(FetchError, match="larger than the 1000 bytes allowed") as err:
            await http.download(url + "/v", tmp_path / "v", tally, read_bytes, limit=1000)
    assert not isinstance(err.value, TransientError) and tally.retries == 0
    assert list(tmp_path.iterdir()) == []


# -- deadlines: time without progress, and a minimum rate ----------------------------------------


def dripping(body: bytes, pieces: int, pause: float):
    """A handler sending ``body`` (with its Content-Length) in ``pieces``, ``pause`` s apart."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(body))})
        response.content_type = "application/json"
        await response.prepare(request)
        step = -(-len(body) // pieces)
        try:
            for start in range(0, len(body), step):
                await response.write(body[start : start + step])
                await asyncio.sleep(pause)
        except ConnectionError:
            pass
        return response

    return handle


async def test_a_dripping_json_answer_fails_as_transient_after_about_the_timeout(serve):
    # A byte every 0.1 s: never 0.5 s without progress, but far under the minimum rate.
    body = orjson.dumps({"success": True, "msg": [{"pad": "x" * 200}]})
    url = await serve(dripping(body, len(body), 0.1)) + "/q"
    tally = Tally()
    started = time.monotonic()
    async with client(timeout=0.5, retries=1, backoff_base=0) as http:
        with pytest.raises(TransientError, match="too slow") as err:
            await http.get_json(url, tally, rows)
    assert err.value.url == url and tally.retries == 1
    assert time.monotonic() - started < 2 * (0.5 + 10 / 50_000) + 5  # two attempts, then slack


async def test_a_transfer_longer_than_the_timeout_that_keeps_the_minimum_rate_succeeds(serve):
    # 20 KB in ten pieces over 0.8 s or more: longer than the 0.5 s timeout, never idle for as
    # long, and well above a 10 kB/s minimum rate at every moment (its deadline grows with it).
    body = orjson.dumps({"success": True, "msg": [{"pad": "x" * 20_000}]})
    url = await serve(dripping(body, 10, 0.08)) + "/q"
    tally = Tally()
    started = time.monotonic()
    async with client(timeout=0.5, min_rate=10_000) as http:
        [record] = await http.get_json(url, tally, rows)
    assert time.monotonic() - started > 0.5 and tally.retries == 0
    assert record == {"pad": "x" * 20_000}


# -- the budget of bytes in flight ---------------------------------------------------------------


async def test_answers_without_a_length_share_the_budget_and_all_arrive(serve, monkeypatch):
    # A budget of three answers at the cap: sixteen requests in flight wait their turn to read
    # (an answer without Content-Length takes the whole cap), and every one arrives.
    monkeypatch.setattr(fetcher_module, "MAX_BYTES_IN_FLIGHT", 3 * 4096)
    peak = []

    async def chunked(request):
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"success": true, "msg": [{"n": 1}')
        await asyncio.sleep(0.05)
        await response.write(b"]}")
        await response.write_eof()
        return response

    url = await serve(chunked)
    async with client(concurrency=16) as http:
        budget = http._budget
        original = budget.hold

        @contextlib.asynccontextmanager
        async def watched(n):
            async with original(n):
                peak.append(budget.used)
                yield

        budget.hold = watched
        answers = await asyncio.gather(
            *(http.get_json(f"{url}/{i}", Tally(), rows, limit=4096) for i in range(40))
        )
        assert budget.used == 0
    assert answers == [[{"n": 1}]] * 40
    assert len(peak) == 40 and 4096 < max(peak) <= 3 * 4096  # several at once, never more


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
