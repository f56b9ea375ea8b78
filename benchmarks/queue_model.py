"""A simulated server and client for the controller's tests and ``benchmarks.scaleout.many``:
deterministic, in simulated time.

The server has ``handlers`` workers, each taking ``service * uniform(1 - spread, 1 + spread)``
seconds a request (``service`` may be a function of the time), and a FIFO queue beyond them;
with ``shed_queue`` it answers 503 at once when that many are queued. Answers take ``network``
seconds each way. The client always has work: it sends whenever fewer than the controller's
limit (or ``fixed``) are in flight, and reports each outcome to the controller.

The client has one CPU, which reading an answer occupies for ``cpu_per_answer`` seconds, and
waking up ``cpu_per_wakeup`` more when it was idle (an event loop's turn, shared by the answers
that arrived together: a client that keeps few requests in flight spends more on each); with
``quota=(runs, period)`` it may use only ``runs`` seconds of it in each ``period`` and is frozen
for the rest, as a process throttled by a cgroup's CPU quota is; with ``taken=(held, period,
since)`` another process holds the CPU for ``held`` seconds of every ``period`` from ``since`` on,
whatever the client does. Its event loop ticks every ``TICK``; a tick waits for the CPU like an
answer does, and a ``limits.LoopLag`` counts how late it ran. What the controller is told of the
client's own delay is ``told``: the loop's mean lag (``"lag"``) and its stalls (``"stalls"``).

With ``clients=N``, N such clients (Dask workers under ``-c auto``) share the one server, each with
its own CPU, loop and controller, starting ``stagger`` seconds apart. Their clocks agree (their
periodic probes fall together) unless ``clocks`` gives each its clock's offset.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncdl.controller import Controller, Lag
from asyncdl.limits import LoopLag

TICK = 0.01
_TICK_CPU = 5e-6


@dataclass
class Outcome:
    """What a simulated run did: when each answer left the server, how long it had queued there."""

    served: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    sheds: int = 0
    #: (time, limit) at the start and at each change (of the first client).
    limits: list[tuple[float, int]] = field(default_factory=list)
    #: Which client each answer was for.
    clients: list[int] = field(default_factory=list)

    def rate(self, start: float, end: float, client: int | None = None) -> float:
        """Answers per second served between ``start`` and ``end`` (for ``client`` only)."""
        return sum(
            start <= t < end and client in (None, c)
            for t, c in zip(self.served, self.clients, strict=True)
        ) / (end - start)

    def mean_wait(self, start: float, end: float) -> float:
        waits = [w for t, w in zip(self.served, self.waits, strict=True) if start <= t < end]
        return sum(waits) / len(waits) if waits else 0.0

    def limit_at(self, time: float) -> int:
        return [limit for t, limit in self.limits if t <= time][-1]


class _Cpu:
    """The client's one CPU: tasks run in the order they come, within the quota, and not while
    another process has it."""

    def __init__(
        self,
        quota: tuple[float, float] | None,
        taken: tuple[float, float, float] | None,
        wake: float = 0.0,
    ) -> None:
        self.quota = quota
        self.taken = taken
        self.wake = wake
        self.free = 0.0
        self.used: defaultdict[int, float] = defaultdict(float)

    def run(self, at: float, cost: float) -> float:
        """When a task that is ready at ``at`` starts running."""
        start = max(at, self.free)
        if start > self.free:  # the loop wakes up (from waiting for answers or from a freeze)
            cost += self.wake
        if self.taken is not None:
            held, period, since = self.taken
            if start >= since and start % period < held:
                start += held - start % period
        if self.quota is not None:
            runs, period = self.quota
            k = int(start // period)
            while self.used[k] + cost > runs:
                k += 1
                start = max(start, k * period)
            self.used[k] += cost
        self.free = start + cost
        return start


def simulate(
    *,
    handlers: int,
    service: float | Callable[[float], float],
    seconds: float,
    spread: float = 0.2,
    shed_queue: int | None = None,
    network: float = 0.0,
    ceiling: int = 256,
    fixed: int | None = None,
    cpu_per_answer: float = 0.0,
    cpu_per_wakeup: float = 0.0,
    quota: tuple[float, float] | None = None,
    taken: tuple[float, float, float] | None = None,
    told: tuple[str, ...] = ("lag", "stalls"),
    seed: int = 0,
    clients: int = 1,
    stagger: float = 0.0,
    clocks: tuple[float, ...] = (),
) -> Outcome:
    """Run the clients against the server for ``seconds`` of simulated time."""
    draw = random.Random(seed)
    # (time, order, kind, client, sent, wait)
    events: list[tuple[float, int, str, int, float, float]] = []
    order = itertools.count()
    offsets = clocks or (0.0,) * clients
    each = [_Client(ceiling, _Cpu(quota, taken, cpu_per_wakeup), told, o) for o in offsets]

    def limit(client: _Client) -> int:
        return fixed if fixed is not None else client.controller.limit

    now = 0.0
    out = Outcome(limits=[(0.0, limit(each[0]))])
    busy, queue = 0, deque[tuple[int, float, float]]()  # queued: (client, sent, arrived)

    def push(at: float, kind: str, c: int, sent: float = 0.0, wait: float = 0.0) -> None:
        heapq.heappush(events, (at, next(order), kind, c, sent, wait))

    def serve(c: int, sent: float, arrived: float) -> None:
        nonlocal busy
        busy += 1
        mean = service(now) if callable(service) else service
        push(now + mean * draw.uniform(1 - spread, 1 + spread), "done", c, sent, now - arrived)

    def send(c: int) -> None:
        client = each[c]
        while client.in_flight < limit(client):
            client.in_flight += 1
            client.controller.sending(now)
            push(now + network, "arrive", c, now)

    for c in range(clients):
        push(c * stagger, "run send", c)
        push(c * stagger + TICK, "tick", c)
    while events and now < seconds:
        now, _, kind, c, sent, wait = heapq.heappop(events)
        client = each[c]
        if kind == "arrive":
            if busy < handlers:
                serve(c, sent, now)
            elif shed_queue is not None and len(queue) >= shed_queue:
                out.sheds += 1
                push(now + network, "shed", c, sent)
            else:
                queue.append((c, sent, now))
        elif kind == "done":
            busy -= 1
            out.served.append(now)
            out.waits.append(wait)
            out.clients.append(c)
            if queue:
                serve(*queue.popleft())
            push(now + network, "answer", c, sent)
        elif kind in ("answer", "shed"):  # at the client, to be read when the CPU gets to it
            push(client.cpu.run(now, cpu_per_answer), f"run {kind}", c, sent)
        elif kind == "tick":  # due now; it runs when the CPU gets to it
            push(client.cpu.run(now, _TICK_CPU), "run tick", c, now)
        elif kind == "run tick":  # the next is due on the grid, after those it ran late for
            push(sent + client.lag.ran(now - sent) * TICK, "tick", c)
        else:  # the client runs: an answer or a shed to read, then as many sends as it may
            before = limit(client)
            if kind == "run answer":
                client.controller.answered(sent, now, client.in_flight)
                client.in_flight -= 1
            elif kind == "run shed":
                client.controller.overloaded(sent, now)
                client.in_flight -= 1
            if c == 0 and limit(client) != before:
                out.limits.append((now, limit(client)))
            send(c)
    return out


class _Client:
    """One client's own: its CPU, its loop's lag, its controller, its requests in flight."""

    def __init__(self, ceiling: int, cpu: _Cpu, told: tuple[str, ...], clock: float) -> None:
        self.cpu = cpu
        self.lag = LoopLag(TICK)
        self.in_flight = 0

        def lag() -> Lag:
            late, ticks, stalled = self.lag.reading()
            if "lag" not in told:
                late, ticks = 0.0, 0
            return Lag(late, ticks, stalled if "stalls" in told else 0.0)

        self.controller = Controller(ceiling, lag=lag, epoch=clock)
