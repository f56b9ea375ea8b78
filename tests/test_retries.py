"""The retry policy: the retry budget alone, then busy answers and a spent budget on real sockets,
in fake time (the client's clock advances only by the waits it sleeps)."""

import pytest
from aiohttp import web

from asyncdl import FetchOptions, TransientError
from asyncdl.fetcher import HttpClient, Tally
from asyncdl.responses import rows
from asyncdl.retries import RetryBudget


def test_the_budget_allows_a_share_of_recent_requests_beyond_a_reserve():
    budget = RetryBudget(0.2, reserve=1.0, ttl=10.0)
    for _ in range(100):
        budget.deposit(0.5)
    allowed = 0
    while budget.withdraw(1.0):
        allowed += 1
    assert allowed == 20 + 10  # 20 % of the 100 requests, and a reserve of 1 a second for 10 s
    assert not budget.available(9.9)
    # Ten seconds on, the requests and the retries have expired (counted by the second they were
    # made in): only the reserve is left.
    assert [budget.withdraw(11.5) for _ in range(11)] == [True] * 10 + [False]


def test_a_budget_of_nothing_allows_the_reserve_only():
    budget = RetryBudget(0.0, reserve=0.5, ttl=4.0)
    for second in range(10):
        budget.deposit(second)
    assert sum(budget.withdraw(9.0) for _ in range(5)) == 2


class FakeTime:
    """The client's clock and sleep: time passes only when it sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def client(time: FakeTime, **options: object) -> HttpClient:
    opts = FetchOptions(**{"backoff_base": 0.01, "backoff_max": 0.01, **options})  # type: ignore[arg-type]
    return HttpClient(opts, sleep=time.sleep, clock=time.clock)


class Busy:
    """``/busy`` answers 503 (Retry-After 4) its first ``times`` requests, ``/ok`` always 200."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.asked = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/busy":
            self.asked += 1
            if self.asked <= self.times:
                return web.Response(status=503, headers={"Retry-After": "4"})
        return web.json_response({"success": True, "msg": []})


async def test_busy_answers_are_waited_out_beyond_the_retries_while_the_server_answers(serve):
    server, time = Busy(times=6), FakeTime()
    url = await serve(server.handle)
    async with client(time, retries=2) as http:
        await http.get_json(url + "/ok", Tally(), rows)  # the server works
        tally = Tally()
        assert await http.get_json(url + "/busy", tally, rows) == []
    assert server.asked == 7 and tally.retries == 6  # more than --retries 2
    assert time.waits == [4.0] * 6  # each time, as long as the server asked


async def test_a_server_that_never_answered_well_gets_no_such_patience(serve):
    server, time = Busy(times=6), FakeTime()
    url = await serve(server.handle)
    async with client(time, retries=2) as http:
        with pytest.raises(TransientError, match="503"):
            await http.get_json(url + "/busy", Tally(), rows)
    assert server.asked == 3


async def test_retries_0_retries_nothing_busy_answers_included(serve):
    server, time = Busy(times=6), FakeTime()
    url = await serve(server.handle)
    async with client(time, retries=0) as http:
        await http.get_json(url + "/ok", Tally(), rows)
        with pytest.raises(TransientError, match="503"):
            await http.get_json(url + "/busy", Tally(), rows)
    assert server.asked == 1


async def test_past_its_patience_a_request_counts_busy_answers_against_its_retries(serve):
    # Busy for good. Attempts at 0, 4 and 8 s are waited out (patience 10 s); from 12 s on each
    # counts, and the third that counts is one more than --retries 2.
    server, time = Busy(times=100), FakeTime()
    url = await serve(server.handle)
    async with client(time, retries=2, patience=10.0) as http:
        await http.get_json(url + "/ok", Tally(), rows)
        with pytest.raises(TransientError, match="503"):
            await http.get_json(url + "/busy", Tally(), rows)
    assert server.asked == 6


async def test_a_spent_budget_slows_retries_down_while_the_server_answers(serve):
    failing = {"/flaky": 3}

    async def handle(request: web.Request) -> web.Response:
        if failing.get(request.path, 0) > 0:
            failing[request.path] -= 1
            return web.Response(status=500)
        return web.json_response({"success": True, "msg": []})

    url = await serve(handle)
    time = FakeTime()
    async with client(time, retries=5) as http:
        http._retries.budget = RetryBudget(0.0, reserve=0.5, ttl=4.0)  # 2 retries every 4 s
        await http.get_json(url + "/ok", Tally(), rows)
        started = time.now
        tally = Tally()
        assert await http.get_json(url + "/flaky", tally, rows) == []
    assert tally.retries == 3
    # The third retry waited for the budget: past the first two, until a second had expired.
    assert time.now - started >= 2.0


async def test_a_spent_budget_fails_a_request_at_once_when_the_server_answers_nothing(serve):
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=500)

    url = await serve(handle)
    time = FakeTime()
    async with client(time, retries=5) as http:
        http._retries.budget = RetryBudget(0.0, reserve=0.25, ttl=4.0)  # 1 retry every 4 s
        tally = Tally()
        with pytest.raises(TransientError, match="500"):
            await http.get_json(url + "/down", tally, rows)
        assert tally.retries == 1  # the budget's one retry, then no more: not five
        with pytest.raises(TransientError, match="500"):
            await http.get_json(url + "/down", Tally(), rows)  # and no wait for the budget
    assert max(time.waits) < 1.0
