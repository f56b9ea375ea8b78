"""The law of ``-c auto``: how many requests to keep in flight, learnt from how the server answers.

A server with K handlers and a service time L answers at most K/L requests a second. With more than
K of ours in flight the rest wait in its queue: nothing goes faster, every answer comes later, and a
shared public server carries a queue of ours. The controller looks for that knee and stays just
past it, keeping the server busy with a short queue:

* **slow start**: from ``INITIAL``, half a request more for each answer, so the limit grows by
  half every round trip, until a block of answers takes a quarter longer than the quickest block
  did (a queue is forming), or the server sheds;
* **then, once a window**: ``limit <- limit * clamp(noload / rtt, 0.5, 1) + sqrt(limit)``. Past
  the knee answers take ``rtt = noload * in_flight / K``, so ``limit * noload / rtt`` is K, what
  the server gets through without a queue (Little's law), and ``sqrt(limit)`` a few more, which
  keep it busy and probe for more. The limit settles at about K + sqrt(K): a queue wait of about
  L / sqrt(K). Below the knee it grows by ``sqrt(limit)`` a window, twice that after each window
  without any queue (at most a quarter of the limit), so that a false start or a server that
  frees up is caught up with quickly;
* **429, 503 or a timeout**: the limit is halved, at most once a round trip (what was sent before
  the last cut does not cut it again).

It stays within 1 and a ceiling (``--max-concurrency``, or a Dask worker's share).

A window holds the requests sent over one no-load round trip (``MIN_SAMPLES`` at least) and closes
once they are all back, so that it measures the limit they were sent under, whole; its round trip
is the mean of the middle half of theirs (``typical``). The no-load round trip is the least
window's, and is measured afresh in a probe: a window with the limit divided by ``PROBE_DEPTH``,
which drains any queue of ours. A probe comes

* **periodically**, at every multiple of ``PROBE_SECONDS`` (of ``PROBE_ROUNDS`` round trips, in
  powers of two, for a slow server) on the wall clock, so that the workers of a run, each with a
  controller of its own, probe together. Alone, a worker's probe would find the queue that the
  others keep, take it for the server's latency and grow into it, and each of them in turn: a
  queue that grows without end (the queue model showed it, at 2 to 10 workers, over minutes).
  Together they drain it. What a periodic probe measures is taken as it is, so that a server
  whose latency rose for good, or that other people keep busy, is followed rather than fought;
* **out of turn**: once slow start is over (what it saw may hold the start's transients: caches
  warming up, a client busy reading volumes), taken as it is; and when the client's event loop
  stalls much more than before (below), which may lower the no-load round trip but raise it only by
  what the client's own delay explains, since it does not drain the others' queue.

Between two probes latency alone at most halves the limit: a server slower for good is measured
at the next periodic probe, and meanwhile keeps half of what it had (as Envoy holds its limit at a
minimum until its next minRTT measurement).

Two parts of a round trip are not the server's doing, and are kept out of it:

* **the client's own delay** (the trap). A client short of CPU (a busy machine, a throttled
  container, a Dask worker on a small share of a core) reads its answers late: its round trips
  grow although the server has no queue, and a latency law that took that for a queue would back
  off, and off again, for nothing. ``limits.LoopLag`` tells it, from how late the event loop runs
  what is due: its mean lag, and its stalls, when it could not run for a tick or more (a
  throttled container's freezes, a CPU held by another for long). The window's mean lag is taken
  off its round trip; and if the loop was stalled a larger share of the window than while the
  no-load round trip was measured, that much more of the round trip is taken off (an answer
  cannot be read in a stall). That catches what the mean lag misses: a throttled client whose
  probe, at half the limit, runs within its quota, so that its no-load round trip is quick and
  every window at the full limit waits out whole freezes (its sends and answers fall into step
  with the quota's periods). Shorter waits for a CPU (a busy machine's run queue, a few
  milliseconds each) are no stalls: they delay answers at random, as the mean lag measures, and
  taken as a share of the round trip they would overstate it (the share swings by a tenth from
  window to window, and a limit grown in those windows kept a queue at the server). The no-load
  round trip is measured whole, lag included, so that a noisy estimate cannot drag it down, and
  measured again (at most once a ``PROBE_SECONDS``) when the loop stalls much more than it did
  then, so that a machine that got busy does not hide a queue at the server for long. A client
  whose own CPU is the bottleneck may so grow towards its ceiling: the extra requests wait in its
  own buffers, not at the server (which has time to spare), and each turn of its loop reads more
  answers.
* **connecting**. A request that had to open its connection (TCP and TLS handshakes, several
  network round trips to a distant server) is no measure of the server's queue; its round trip is
  used only when a window has too few others.

Outcomes that are neither an answer nor an overload (a refused connection, a cancelled request)
are no samples, and the caller gives only one kind of request (the spatial search) as samples.

What was taken from each of these, read before writing this one (no code was copied):

* TCP Vegas (Brakmo and Peterson, 1994), as Netflix's ``VegasLimit`` and tower-acc's ``Vegas``
  apply it to requests: the signal. Compare the round trip with the no-load one; the difference
  times the rate is the queue we hold at the server (``in_flight * (1 - noload / rtt)``); keep it
  small but above zero, so that the server never idles for want of a request; measure the no-load
  round trip again now and then rather than trust the first minimum forever.
* Netflix concurrency-limits (``Gradient2Limit``, ``WindowedLimit``): the gradient ``noload /
  rtt`` clamped to [0.5, 1], so one noisy window can at most halve the limit and a quick one cannot
  inflate it; no growth while less than half the limit is in use (it is not what limits then); the
  law applied to windows of samples rather than to each answer.
* Envoy's adaptive concurrency filter (gradient controller): the same gradient with a burst
  headroom of ``sqrt(limit)``; a window's round trip summarised by a robust statistic of its
  samples (Envoy's is a percentile); the minRTT measured periodically at a reduced limit (with
  jitter there; here on the wall clock, below), the limit held meanwhile rather than driven down.
* tower-acc (Rust: AIMD, Gradient2 and Vegas behind one ``Algorithm`` trait): a small interface
  between the limit's users and its law (report each outcome, read the limit); which outcomes
  count as overload decided in one place (its ``Classifier``; here ``limits.Slot``); a cancelled
  request is no sample.
* TCP congestion control (slow start and multiplicative decrease, RFC 5681): start low and double
  each round trip until the first sign of a queue; halve on a loss, once a round trip.
* BBR's ProbeRTT (Cardwell et al., 2016): flows that share a bottleneck see its true minimum round
  trip only when they drain it together, and BBR's flows fall into step to do so; here the
  workers of a run probe at the same multiples of the wall clock. The failure it avoids is Vegas'
  persistent congestion (Low, Peterson and Wang, 2002): a flow that measures its base round trip
  inside the others' queue takes that queue for the path's own delay.

Times are plain floats in seconds from any monotonic clock: the caller passes them in, so the law is
pure, and the tests drive it with a simulated server and clock (``benchmarks/queue_model.py``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

#: The limit a run starts from, and how much slow start adds to it for each answer (a half: the
#: limit grows by half every round trip, so that the queue it is looking for, which shows a round
#: trip late, is not overshot by much).
INITIAL = 8
SLOW_START_GROWTH = 0.5
#: Answers needed for a round trip to be trusted: a window's, or slow start's latest.
MIN_SAMPLES = 8
#: The shortest span of a window, in seconds (for a server that answers in a millisecond).
MIN_WINDOW = 0.01
#: How much longer than the quickest block of answers a block may take before slow start ends.
SLOW_START_QUEUE = 0.25
#: The factor of a multiplicative decrease (429, 503, timeout).
BACKOFF = 0.5
#: The no-load round trip is measured afresh this often: every PROBE_SECONDS, or every
#: PROBE_ROUNDS no-load round trips if that is longer (so that probing costs a slow server as
#: little of its time as a fast one)...
PROBE_SECONDS = 10.0
PROBE_ROUNDS = 100
#: ... with the limit divided by this for one window, which drains any queue of ours (and, with
#: the other workers of a run probing at the same time, theirs: half of K + Q in flight is under
#: K while the queue Q is shorter than K).
PROBE_DEPTH = 2
#: The no-load round trip is measured afresh (at most once a PROBE_SECONDS) when the client's
#: loop is stalled this much more of a window's time than it was while it was measured.
STALL_SHIFT = 0.25
#: A window closes without its last requests once they are this many of its round trips late
#: (a request that will time out).
STRAGGLERS = 3.0


class Lag(NamedTuple):
    """The event loop's lag so far (``limits.LoopLag``)."""

    #: Seconds late, summed over the ticks that were due.
    late: float
    #: How many ticks were due.
    ticks: int
    #: Seconds it was stalled, in stalls of a tick or more.
    stalled: float


#: Reads the event loop's lag so far.
LagReading = Callable[[], Lag]


def _no_lag() -> Lag:
    return Lag(0.0, 0, 0.0)


def typical(rtts: Iterable[float]) -> float:
    """The mean of the middle half: a queue shows even when it holds fewer than half of the
    requests (which the median would miss), and a few very slow answers do not fake one."""
    ordered = sorted(rtts)
    cut = len(ordered) // 4
    return statistics.fmean(ordered[cut : len(ordered) - cut])


@dataclass
class _Window:
    """The requests sent after ``start`` until its span ends, and how they came back.

    The span ends at the first request sent a no-load round trip after the first one, once it
    holds ``MIN_SAMPLES`` requests; the window closes once all of them are back, so that it
    measures the limit they were sent under, whole, rather than the first answers to come back.
    """

    start: float
    lag: Lag
    #: A window sent under a lowered limit, to measure the no-load round trip...
    probe: bool = False
    #: ... taken as it is (the first probe, and those in their turn on the shared clock).
    whole: bool = False
    end: float = math.inf
    #: When its first request was sent: the span is a round trip of sends from there.
    first: float = math.inf
    sent: int = 0
    back: int = 0
    rtts: list[float] = field(default_factory=list)
    #: Round trips of requests that had to open their connection.
    fresh: list[float] = field(default_factory=list)
    #: The most requests in flight seen at an answer.
    peak: int = 0

    def holds(self, sent: float) -> bool:
        return self.start < sent <= self.end

    def round_trip(self) -> float | None:
        """The window's round trip, of requests that reused a connection if there are enough."""
        rtts = self.rtts if len(self.rtts) * 2 >= MIN_SAMPLES else self.rtts + self.fresh
        return typical(rtts) if rtts else None


class Controller:
    """The limit of ``-c auto``: tell it of each request sent and of what became of it; read
    ``limit``.

    ``lag`` reads the event loop's lag so far (``LagReading``); without it, none is assumed.
    ``now`` is when the first window starts; ``epoch`` what to add to the caller's clock to read
    the clock the periodic probes keep to (the wall clock, which the workers of a run share).
    """

    def __init__(
        self,
        ceiling: int,
        *,
        initial: int = INITIAL,
        lag: LagReading = _no_lag,
        now: float = -math.inf,
        epoch: float = 0.0,
    ) -> None:
        if ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, got {ceiling}")
        self.ceiling = ceiling
        self._limit = float(min(initial, ceiling))
        self._lag = lag
        self._epoch = epoch
        self.slow_start = True
        #: The round trip without a queue at the server (seconds), once it has been measured.
        self.noload: float | None = None
        #: The share of the time the client's loop was stalled while ``noload`` was measured.
        self._noload_stalled = 0.0
        self._block: list[float] = []  # slow start's latest round trips
        self._clean = 0  # windows in a row that showed no queue: the growth doubles with each
        self._window = self._open(now)
        self._cut = -math.inf  # when the limit was last cut: older requests cannot cut it again
        self._probe_at = math.inf  # when the no-load round trip is next measured, periodically
        self._unscheduled = False  # measure it at the end of this window, out of turn
        self._probing: float | None = None  # the limit to go back to once the probe is sent
        self._measured_at = 0.0  # the limit when the no-load round trip was measured, or it was cut
        self._shifted_at = -math.inf  # when more stalls than the no-load's last asked a probe

    @property
    def limit(self) -> int:
        return max(1, min(self.ceiling, int(self._limit)))

    def set_ceiling(self, ceiling: int) -> None:
        """A new ceiling (a Dask worker's share); the limit keeps below it from now on."""
        if ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, got {ceiling}")
        self.ceiling = ceiling
        self._limit = min(self._limit, ceiling)

    def sending(self, now: float) -> None:
        """A request goes out now."""
        window = self._window
        if not window.holds(now):
            return
        window.sent += 1
        window.first = min(window.first, now)
        span = max(self.noload or 0.0, MIN_WINDOW)
        if window.end == math.inf and window.sent >= MIN_SAMPLES and now - window.first >= span:
            window.end = now
            if self._probing is not None:  # the probe is sent: what follows may go out again
                self._limit, self._probing = self._probing, None

    def answered(self, sent: float, done: float, in_flight: int, *, fresh: bool = False) -> int:
        """A request sent at ``sent`` was answered at ``done``, with ``in_flight`` requests out
        (itself included). ``fresh``: it opened its connection. Returns the limit."""
        rtt = done - sent
        if self.slow_start:
            if in_flight * 2 >= self._limit:
                self._limit = min(self._limit + SLOW_START_GROWTH, self.ceiling)
            if not fresh:
                self._block.append(rtt)
                if len(self._block) >= max(MIN_SAMPLES, self._limit / 4):
                    self._watch_slow_start(done)
        window = self._window
        if window.holds(sent):
            (window.fresh if fresh else window.rtts).append(rtt)
            window.peak = max(window.peak, in_flight)
        self._back(sent, done)
        return self.limit

    def overloaded(self, sent: float, done: float) -> int:
        """The server shed a request sent at ``sent`` (429, 503), or it timed out. Returns the
        limit."""
        if sent <= self._cut or done - self._cut < (self.noload or 0.0):
            self._back(sent, done)
            return self.limit  # the last cut, less than a round trip ago, was made for it
        if self._probing is not None:
            self._limit, self._probing = self._probing, None
        self._end_slow_start(done)
        self._cut = done
        self._limit = max(1.0, self._limit * BACKOFF)
        self._measured_at = self._limit
        self._window = self._open(done)
        return self.limit

    def ignored(self, sent: float, done: float) -> None:
        """A request sent at ``sent`` came to nothing that says how the server is (a refused
        connection, a cancelled request): no sample, but no longer awaited."""
        self._back(sent, done)

    def _back(self, sent: float, done: float) -> None:
        """A request is back, or done with: the window closes once all of its are, or once its
        last are far too late."""
        window = self._window
        if window.holds(sent):
            window.back += 1
        if window.end == math.inf:
            return
        late = STRAGGLERS * max(window.round_trip() or self.noload or 0.0, MIN_WINDOW)
        if window.back >= window.sent or done - window.end > late:
            self._close(window, done)

    def _open(self, now: float, *, probe: bool = False, whole: bool = False) -> _Window:
        return _Window(now, self._lag(), probe=probe, whole=whole)

    def _stalled(self, window: _Window, now: float) -> float:
        """The share of ``window`` so far in which the event loop was stalled."""
        span = now - window.start
        return min(1.0, (self._lag().stalled - window.lag.stalled) / span) if span > 0 else 0.0

    def _own_delay(self, window: _Window, rtt: float, now: float) -> float:
        """How much of a round trip of ``window`` may have been the client's own doing: the
        event loop's mean lag; or, if it was stalled a larger share of the window than while the
        no-load round trip was measured, that much more of the round trip (an answer cannot be
        read in a stall, and the no-load round trip holds the rest)."""
        lag, before = self._lag(), window.lag
        ticks = lag.ticks - before.ticks
        mean_lag = (lag.late - before.late) / ticks if ticks > 0 else 0.0
        return max(mean_lag, (self._stalled(window, now) - self._noload_stalled) * rtt)

    def _measured(self, rtt: float, window: _Window, now: float) -> float:
        """``rtt``, of ``window``, is the no-load round trip from now on."""
        self.noload = rtt
        self._noload_stalled = self._stalled(window, now)
        return rtt

    def _watch_slow_start(self, now: float) -> None:
        """Slow start ends when a block of its latest answers (a quarter of the limit, more as it
        grows) takes too long: a queue is forming. Until then the quickest block is the no-load
        round trip, for now: the first answers may be slow for reasons of their own (a server's
        caches warming up)."""
        rtt = typical(self._block)
        self._block.clear()
        own = self._own_delay(self._window, rtt, now)
        if self.noload is not None and rtt - own > self.noload * (1 + SLOW_START_QUEUE):
            self._end_slow_start(now)
            self._apply(rtt, own, self._window, now)
            self._window = self._open(now)
        elif self.noload is None or rtt < self.noload:
            self._measured(rtt, self._window, now)

    def _end_slow_start(self, now: float) -> None:
        """Slow start is over: the no-load round trip is measured as soon as the limit settles,
        since what slow start saw may hold the start's transients (a server's caches warming up, a
        client busy reading volumes)."""
        if self.slow_start:
            self.slow_start = False
            self._unscheduled = True

    def _close(self, window: _Window, now: float) -> None:
        """The law, once a window is back; then the next window, or a probe, begins."""
        rtt = window.round_trip()
        if rtt is not None:
            if window.probe:  # a drained window: the no-load round trip, afresh
                if not (window.whole or self.noload is None):
                    rtt = min(rtt, self.noload + self._own_delay(window, rtt, now))
                self._measured(rtt, window, now)
                self._measured_at = self._limit
            elif not self.slow_start:
                self._apply(rtt, self._own_delay(window, rtt, now), window, now)
                self._watch_stalls(window, now)
            elif self.noload is not None and rtt < self.noload:
                self._measured(rtt, window, now)
        if self._unscheduled or now >= self._probe_at:
            self._probe(now)
        else:
            self._window = self._open(now)

    def _apply(self, rtt: float, own: float, window: _Window, now: float) -> None:
        """``limit * clamp(noload / rtt, 0.5, 1) + sqrt(limit)``, not grown while half unused.

        The round trip taken is the server's part of it: less what may have been the client's own
        delay (``own``), but no less than the no-load round trip (which is measured whole, lag
        included, so that a noisy estimate of the client's delay cannot drag it down).
        """
        noload = self.noload
        if noload is None or rtt < noload:
            noload = self._measured(rtt, window, now)
        served = max(rtt - own, noload, 1e-9)  # (a clock too coarse to see a round trip)
        gradient = max(0.5, noload / served)
        headroom = math.sqrt(self._limit)
        # No queue at all (less than half the one the law keeps): grow faster each time, up to a
        # quarter a window, so that the knee is soon found again after a false start or when the
        # server frees up, and not overshot by much.
        self._clean = self._clean + 1 if served < noload * (1 + 0.5 / headroom) else 0
        growth = max(headroom, min(headroom * 2 ** (self._clean - 1), self._limit / 4))
        limit = self._limit * gradient + growth
        if limit > self._limit and window.peak * 2 < self._limit:
            return  # less than half of it in use: the limit is not what limits, leave it
        # Latency alone halves it at most between two probes: more would be a server whose
        # latency rose for good (or a client too stalled to read its answers in time) rather
        # than a queue of ours, which the next periodic probe measures.
        self._limit = max(1.0, min(max(limit, self._measured_at / 2), float(self.ceiling)))

    def _watch_stalls(self, window: _Window, now: float) -> None:
        """A client whose loop stalls much more than while the no-load round trip was measured
        (its machine got busy) measures it again, so that its queue at the server shows again:
        at once, but at most once a ``PROBE_SECONDS`` (a throttled client whose probe, at a
        lowered limit, runs within its quota would measure the same again)."""
        shift = self._stalled(window, now) - self._noload_stalled
        if shift > STALL_SHIFT and now - self._shifted_at >= PROBE_SECONDS:
            self._shifted_at = now
            self._unscheduled = True

    def _probe(self, now: float) -> None:
        """Lower the limit for the sends of one window, whose round trip becomes the no-load one:
        a queue of ours drains first, so what is left is the server's own latency (or the client's
        own lag), which the law should take as given. The limit is back once they are sent."""
        periodic = not self._unscheduled
        first = self._probe_at == math.inf
        self._window = self._open(now, probe=True, whole=periodic or first)
        self._unscheduled = False
        self._probing = self._limit
        self._limit = max(1.0, self._limit / PROBE_DEPTH)
        if periodic or first:
            self._probe_at = self._next_probe(now)

    def _next_probe(self, now: float) -> float:
        """When the next periodic probe is due: the next multiple of its period on the shared
        clock (``now + epoch``). The period is ``PROBE_SECONDS``, or that times a power of two for
        ``PROBE_ROUNDS`` no-load round trips."""
        rounds = PROBE_ROUNDS * (self.noload or 0.0) / PROBE_SECONDS
        period = (
            PROBE_SECONDS * 2 ** max(0, math.ceil(math.log2(rounds)))
            if rounds > 0
            else PROBE_SECONDS
        )
        shared = now + self._epoch
        return (math.floor(shared / period) + 1) * period - self._epoch
