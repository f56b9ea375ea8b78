"""The law of ``-c auto`` alone: fed by hand, and against simulated servers in simulated time."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncdl.controller import (
    INITIAL,
    MIN_SAMPLES,
    PROBE_DEPTH,
    PROBE_SECONDS,
    Controller,
    Lag,
    typical,
)
from benchmarks.queue_model import Outcome, simulate

L = 0.05  # the service time of the simulated servers, as in the capacity benchmark


def answer_all(controller: Controller, now: float, rtt: float, count: int) -> float:
    """``count`` requests sent at ``now`` and answered ``rtt`` later; returns when."""
    for _ in range(count):
        controller.sending(now)
    for _ in range(count):
        controller.answered(now, now + rtt, count)
    return now + rtt


def window(
    controller: Controller, start: float, rtt: float, count: int, lag: float = 0.0, fresh: int = 0
) -> float:
    """One window: ``count`` requests sent over a round trip (the no-load one, if longer) from just
    after ``start``, each answered ``rtt`` later (the first ``fresh`` of them on new connections,
    ``lag`` later still); returns when the last was answered."""
    span = max(rtt, controller.noload or 0.0)
    sends = [start + 1e-6 + span * n / (count - 1) for n in range(count)]
    for sent in sends:
        controller.sending(sent)
    for n, sent in enumerate(sends):
        controller.answered(sent, sent + rtt + lag, count, fresh=n < fresh)
    return sends[-1] + rtt + lag


def test_slow_start_grows_the_limit_by_half_each_round_trip_while_no_queue_forms():
    controller = Controller(1000, now=0.0)
    now, limits, expected = 0.0, [controller.limit], [INITIAL]
    for _ in range(6):
        now = answer_all(controller, now + 1e-6, 0.05, controller.limit)
        limits.append(controller.limit)
        expected.append(expected[-1] + expected[-1] // 2)
    assert limits == expected
    assert controller.slow_start and controller.noload == pytest.approx(0.05)


def test_a_queue_ends_slow_start():
    controller = Controller(1000, now=0.0)
    now = answer_all(controller, 1e-6, 0.05, INITIAL)
    # Answers now take twice the no-load round trip: half of what is in flight is queued. The
    # first block of answers to show it ends slow start.
    for n in range(1, MIN_SAMPLES + 1):
        controller.sending(now)
        controller.answered(now, now + 0.10, controller.limit)
        assert controller.slow_start == (n < MIN_SAMPLES)
    assert controller.limit < 2 * INITIAL  # cut, not grown


def test_the_law_once_a_window_and_the_probes_of_the_no_load_round_trip():
    controller = Controller(1000, initial=32, now=0.0)
    controller.overloaded(sent=0.5, done=1.0)  # out of slow start at 16; a probe is due
    now = window(controller, 1.0, 0.06, 16)
    assert controller.limit == 20 // PROBE_DEPTH  # grown to 16 + sqrt(16), lowered to drain
    now = window(controller, now, 0.06, MIN_SAMPLES)  # the probe: a drained window
    assert controller.noload == pytest.approx(0.06) and controller.limit == 20
    # Twice the no-load round trip: half of what is in flight waits in the server's queue. What
    # the server serves without a queue (limit * noload / rtt), and sqrt(limit) more.
    now = window(controller, now, 0.12, 20)
    limit = 20 * 0.5 + math.sqrt(20)
    assert controller.limit == int(limit)
    # Windows without a queue: the growth of sqrt(limit) doubles with each (up to a quarter of
    # the limit), until the first sign of a queue, back to sqrt(limit).
    for clean in range(4):
        now = window(controller, now, 0.06, controller.limit)
        limit += max(math.sqrt(limit), min(math.sqrt(limit) * 2**clean, limit / 4))
        assert controller.limit == int(limit)
    now = window(controller, now, 0.09, controller.limit)
    limit = limit * 0.06 / 0.09 + math.sqrt(limit)
    assert controller.limit == int(limit)
    # A queue of sqrt(limit) is kept. At the next multiple of PROBE_SECONDS, another probe: the
    # limit lowered for one window.
    while True:
        now = window(controller, now, 0.06 * (1 + 1 / math.sqrt(limit)), controller.limit)
        limit = limit / (1 + 1 / math.sqrt(limit)) + math.sqrt(limit)
        if controller.limit != int(limit):
            break
    assert PROBE_SECONDS <= now < PROBE_SECONDS + 0.2
    assert controller.limit == int(limit / PROBE_DEPTH)
    window(controller, now, 0.04, max(MIN_SAMPLES, controller.limit))
    assert controller.noload == pytest.approx(0.04) and controller.limit == int(limit)


def test_periodic_probes_fall_on_the_shared_clock_so_that_workers_probe_together():
    # Two workers of a run, started 0.7 s apart, each with a monotonic clock of its own
    # (``epoch``: what it adds to its clock to read the wall clock): their periodic probes come
    # at the same moments, so that together they drain the queue that each alone would take for
    # the server's latency.
    starts = []
    for start, epoch in ((1.3, 1000.0), (4.1, 997.9)):
        controller = Controller(1000, initial=32, now=start, epoch=epoch)
        controller.overloaded(sent=start, done=start + 0.1)
        now = window(controller, start + 0.1, 0.05, 16)  # the law, then a probe out of turn
        now = window(controller, now, 0.05, MIN_SAMPLES)
        probes: list[float] = []
        while len(probes) < 2:
            before = controller.limit
            now = window(controller, now, 0.05, max(MIN_SAMPLES, before))
            if controller.limit < before:
                probes.append(now + epoch)
        starts.append(probes)
    for first, second in zip(*starts, strict=True):
        assert first == pytest.approx(second, abs=0.2)
        assert first % PROBE_SECONDS == pytest.approx(0, abs=0.2)


def test_latency_alone_halves_the_limit_at_most_between_two_probes():
    # A server four times slower from one moment on: taken for a queue, the limit is cut, but no
    # further than half of what it was when last measured, until the next periodic probe
    # measures the new round trip.
    controller = Controller(1000, initial=32, now=0.0)
    controller.overloaded(sent=0.5, done=1.0)
    now = window(controller, 1.0, 0.05, 16)
    now = window(controller, now, 0.05, MIN_SAMPLES)
    measured = controller.limit
    for _ in range(20):
        now = window(controller, now, 0.2, max(MIN_SAMPLES, controller.limit))
    assert now < PROBE_SECONDS and controller.limit == measured // 2
    while now < PROBE_SECONDS + 1:
        now = window(controller, now, 0.2, max(MIN_SAMPLES, controller.limit))
    assert controller.noload == pytest.approx(0.2)
    assert controller.limit > measured // 2


def test_the_event_loops_own_lag_is_not_taken_for_a_queue_at_the_server():
    late, ticks = 0.0, 0

    def reading() -> Lag:
        return Lag(late, ticks, 0.0)

    controller = Controller(1000, initial=32, lag=reading, now=0.0)
    controller.overloaded(sent=0.5, done=1.0)
    now = window(controller, 1.0, 0.05, 16)
    now = window(controller, now, 0.05, 10)  # the probe
    before = controller.limit
    # The loop now runs everything 30 ms late: answers too, although the server is as quick.
    late, ticks = 0.03 * 100, 100
    window(controller, now, 0.05, before, lag=0.03)
    assert controller.limit > before


def test_a_stalled_loop_is_not_taken_for_a_queue_at_the_server():
    # A throttled client, its loop stalled about a fifth of a window at the full limit (less than
    # would ask for a new probe, STALL_SHIFT): its answers wait out the stalls, round trips a
    # third longer than the no-load one, although the server has no queue (and the mean lag,
    # here none, need not show it). Told of the stalls, the law takes that share of the round
    # trip off and grows the limit; not told, it cuts.
    stalled = 0.0

    def reading() -> Lag:
        return Lag(0.0, 0, stalled)

    told, untold = Controller(1000, initial=32, lag=reading, now=0.0), Controller(1000, initial=32)
    for controller in (told, untold):
        controller.overloaded(sent=0.5, done=1.0)
        now = window(controller, 1.0, 0.05, 16)
        now = window(controller, now, 0.05, 10)  # the probe, without a stall
    before = told.limit
    assert untold.limit == before
    rtt = 0.066
    stalled = 0.2 * (rtt + rtt)  # of its sends' span and a round trip (the window closes sooner)
    for controller in (told, untold):
        window(controller, now, rtt, before)
    assert told.limit > before > untold.limit


def test_a_busy_answer_halves_the_limit_once_a_round_trip():
    controller = Controller(1000, initial=64, now=0.0)
    for sent in (1.0, 1.1, 1.2):
        controller.sending(sent)
    assert controller.overloaded(sent=1.0, done=1.5) == 32
    # Sent before that cut: the same overload, already answered for.
    assert controller.overloaded(sent=1.2, done=1.6) == 32
    assert not controller.slow_start
    controller.sending(1.7)
    assert controller.overloaded(sent=1.7, done=1.9) == 16  # sent after it: a new one


def test_no_growth_while_less_than_half_the_limit_is_in_use():
    controller = Controller(1000, initial=64, now=0.0)
    controller.overloaded(sent=0.5, done=1.0)  # out of slow start, at 32
    for rounds in range(5):
        start = 2.0 + rounds
        for _ in range(MIN_SAMPLES):
            controller.sending(start)
        for _ in range(MIN_SAMPLES):  # 8 in flight at most: the pipeline has no more work
            controller.answered(start, start + 0.05, MIN_SAMPLES)
    assert controller.limit == 32


def test_round_trips_of_requests_that_opened_a_connection_are_not_taken_for_a_queue():
    controller = Controller(1000, initial=32, now=0.0)
    controller.overloaded(sent=0.5, done=1.0)
    now = window(controller, 1.0, 0.05, 16)
    now = window(controller, now, 0.05, 10)  # the probe
    before = controller.limit
    # Half the window had to connect first: their handshakes cost round trips of their own.
    sends = [now + 1e-6 + 0.05 * n / (before - 1) for n in range(before)]  # over the no-load one
    for sent in sends:
        controller.sending(sent)
    for n, sent in enumerate(sends):
        fresh = n % 2 == 0
        controller.answered(sent, sent + (0.5 if fresh else 0.05), before, fresh=fresh)
    assert controller.limit > before


def test_the_typical_round_trip_shows_a_queue_that_holds_fewer_than_half_the_requests():
    # 9 answered at once, 7 after queueing one round trip: the median would see no queue at all.
    assert typical([0.05] * 9 + [0.10] * 7) > 0.06
    assert typical([0.05] * 15 + [5.0]) == pytest.approx(0.05)  # one very slow answer fakes none


outcomes = st.lists(
    st.tuples(
        st.sampled_from(["answer", "fresh", "overload", "ignored", "ceiling"]),
        st.floats(0.0, 2.0),
        st.integers(1, 600),
    ),
    max_size=300,
)


@given(outcomes)
def test_the_limit_stays_within_one_and_the_ceiling_whatever_happens(events):
    controller = Controller(256, now=0.0)
    now = 0.0
    for kind, rtt, number in events:
        now += 0.001
        controller.sending(now)
        if kind in ("answer", "fresh"):
            controller.answered(now, now + rtt, number, fresh=kind == "fresh")
        elif kind == "overload":
            controller.overloaded(now, now + rtt)
        elif kind == "ignored":
            controller.ignored(now, now + rtt)
        else:
            controller.set_ceiling(number)
        assert 1 <= controller.limit <= controller.ceiling


def converged(out: Outcome, capacity: float, seconds: float) -> float:
    """From when every later second (in steps of a quarter) served at least 0.9 of ``capacity``
    with a mean queue wait of at most L / 2."""
    bins = [n / 4 for n in range(int((seconds - 1) * 4))]
    good = [out.rate(t, t + 1) >= 0.9 * capacity and out.mean_wait(t, t + 1) <= L / 2 for t in bins]
    while good and good[-1]:
        good.pop()
    return len(good) / 4


@pytest.mark.parametrize("handlers", [16, 64, 256])
@pytest.mark.parametrize("seed", [1, 2])
def test_on_a_server_of_k_handlers_it_converges_to_k_over_l_with_a_short_queue(handlers, seed):
    seconds = 12.0  # a probe included
    out = simulate(handlers=handlers, service=L, seconds=seconds, seed=seed)
    capacity = handlers / L
    assert out.rate(2, seconds) >= 0.95 * capacity
    assert out.mean_wait(2, seconds) <= 0.5 * L
    assert converged(out, capacity, seconds) <= 2.0
    assert out.sheds == 0


def test_a_server_that_sheds_is_rarely_given_more_than_it_takes():
    seconds = 12.0
    out = simulate(handlers=16, service=L, seconds=seconds, shed_queue=8)
    assert out.sheds <= 0.02 * len(out.served)
    assert out.rate(2, seconds) >= 0.95 * 16 / L and out.mean_wait(2, seconds) <= 0.5 * L


def test_without_jitter_a_queue_of_lockstep_requests_is_seen_too():
    out = simulate(handlers=16, service=L, seconds=6.0, spread=0.0)
    assert out.rate(2, 6) >= 0.95 * 16 / L and out.mean_wait(2, 6) <= 0.5 * L


def test_network_delay_is_part_of_the_no_load_round_trip():
    # 20 ms each way: 64 handlers stay busy only with 64 * (50 + 40) / 50 requests out.
    out = simulate(handlers=64, service=L, seconds=6.0, network=0.02)
    assert out.rate(2, 6) >= 0.95 * 64 / L and out.mean_wait(2, 6) <= 0.5 * L
    assert out.limit_at(6) > 64 * 0.09 / L


def test_a_server_that_slows_down_for_good_is_relearnt_at_the_next_probe():
    # Twice the service time from t = 5 s: the no-load round trip doubles. Taken for a queue at
    # first, the limit falls by half; the next probe measures the new round trip and the limit
    # comes back to what the server takes (K + sqrt(K)), not K / 2.
    def service(now: float) -> float:
        return L if now < 5 else 2 * L

    seconds = 5 + 2 * PROBE_SECONDS
    out = simulate(handlers=64, service=service, seconds=seconds)
    assert out.rate(seconds - 4, seconds) >= 0.95 * 64 / (2 * L)
    assert out.limit_at(seconds) >= 64


@pytest.mark.parametrize("held", [0.04, 0.06, 0.08])
def test_a_client_short_of_cpu_is_not_taken_for_a_queue_at_the_server(held):
    # From t = 3 s another process holds the client's CPU ``held`` seconds of every 100 ms,
    # whatever the client does: answers are read late. The no-load round trip was measured before,
    # so a law that took that lateness for the server's queue would cut the limit to almost
    # nothing (its sends and the answers lock into the periods of the CPU: each answer waits out
    # a whole freeze). The lag it measures is taken off, and a limit halved by latency alone is
    # measured again: the server stays busy.
    seconds = 12.0
    common = dict(handlers=64, service=L, seconds=seconds, cpu_per_answer=5e-5)
    out = simulate(**common, taken=(held, 0.1, 3.0))  # type: ignore[arg-type]
    assert out.rate(4, seconds) >= 0.85 * 64 / L


def test_a_busy_run_queue_is_no_stall_and_three_clients_keep_a_short_queue():
    # Other processes hold each client's CPU in short turns (2 ms of every 6: a busy machine's
    # run queue). Its answers are read a little late, at random: the mean lag tells that much,
    # and nothing stalls, so the law decides as it would told of the lag alone. Three clients
    # share 64 handlers with less than 0.5 L of queue.
    common = dict(handlers=64, service=L, seconds=20.0, cpu_per_answer=5e-5, clients=3, stagger=0.3)
    busy = simulate(**common, taken=(0.002, 0.006, 0.0))  # type: ignore[arg-type]
    lag_only = simulate(**common, taken=(0.002, 0.006, 0.0), told=("lag",))  # type: ignore[arg-type]
    assert busy.served == lag_only.served
    assert busy.mean_wait(5, 20) < 0.5 * L
    assert busy.rate(5, 20) >= 0.95 * 64 / L


def test_a_client_whose_own_cpu_is_the_bottleneck_gets_as_much_as_a_fixed_limit():
    # 218 us of CPU an answer (asyncdl's): at most about 4,600 a second, under the 5,120 that
    # 256 handlers at 50 ms take. Answers wait for the client, not the server.
    seconds = 6.0
    common = dict(handlers=256, service=L, seconds=seconds, cpu_per_answer=218e-6, ceiling=512)
    auto = simulate(**common)  # type: ignore[arg-type]
    fixed = simulate(**common, fixed=512)  # type: ignore[arg-type]
    assert auto.rate(2, seconds) >= 0.97 * fixed.rate(2, seconds)
    # And a quota of 0.2 of a core (a throttled container), against a server of no limit.
    common = dict(handlers=10_000, service=L, seconds=seconds, cpu_per_answer=218e-6)
    quota = (0.02, 0.1)
    auto = simulate(**common, quota=quota, ceiling=512)  # type: ignore[arg-type]
    fixed = simulate(**common, quota=quota, fixed=512)  # type: ignore[arg-type]
    assert auto.rate(2, seconds) >= 0.95 * fixed.rate(2, seconds)


def test_a_throttled_client_whose_probe_runs_within_its_quota_keeps_the_limit_its_cpu_needs():
    # Three clients (Dask workers on small machines), each throttled to 0.2 of a core, against a
    # server of no limit: their CPUs are what limits. At half the limit, in the probe of the
    # no-load round trip, a client runs within its quota: the probe is quick. At the full limit it
    # is throttled again and its round trips grow by whole freezes, more than its loop's mean lag
    # says. A loop's turn costs CPU of its own (here twice an answer, to show it plainly), so a
    # client whose limit is cut reads fewer answers a turn and gets less done. Told how much
    # more its loop stalled than during the probe, the controller does not cut for it.
    seconds = 20.0
    common = dict(
        handlers=10_000,
        service=L,
        seconds=seconds,
        cpu_per_answer=150e-6,
        cpu_per_wakeup=300e-6,
        quota=(0.02, 0.1),
        clients=3,
        stagger=0.3,
    )
    fixed = simulate(**common, fixed=256)  # type: ignore[arg-type]
    auto = simulate(**common, ceiling=256)  # type: ignore[arg-type]
    lag_only = simulate(**common, ceiling=256, told=("lag",))  # type: ignore[arg-type]
    for c in range(3):
        assert auto.rate(5, seconds, c) >= 0.97 * fixed.rate(5, seconds, c)
    # The trap it avoids: told only of its loop's lag, it loses more than 5 % of what it could do.
    assert lag_only.rate(5, seconds) < 0.95 * fixed.rate(5, seconds)


def test_a_window_closes_when_requests_of_it_are_shed_soon_after_a_cut():
    controller = Controller(1000, initial=32, now=0.0)
    controller.overloaded(sent=0.5, done=1.0)
    now = window(controller, 1.0, 0.05, 16)  # the law: 16 -> 20, then the probe at 10
    now = window(controller, now, 0.05, 10)
    controller.sending(now + 0.001)
    cut = now + 0.002
    assert controller.overloaded(sent=now + 0.001, done=cut) == 10  # a new window from here
    sends = [cut + 0.006 * n for n in range(1, 11)]  # over a round trip
    for sent in sends:
        controller.sending(sent)
    for sent in sends[:3]:  # shed less than a round trip after the cut: no second cut...
        controller.overloaded(sent=sent, done=sent + 0.001)
    for sent in sends[3:]:
        controller.answered(sent, sent + 0.05, 10)
    # ... but back all the same: the window closed and its law was applied.
    assert controller.limit == int(10 + math.sqrt(10))
