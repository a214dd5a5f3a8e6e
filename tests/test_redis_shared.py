"""The shared breaker and the shared retry budget against a real redis-server.

One breaker's opening is seen by every process until the same instant; half-open probes are
leased fleet-wide (never more than N in flight, a dead prober's lease expires); the closed path
asks Redis at most once per sync interval; the budget counts the fleet's calls and retries; and
with Redis killed, hung or flushed, every call still gets a clear outcome from the in-memory
behaviour, with one warning, until Redis answers again. Two instances in one process stand for
two processes where that shows the same thing deterministically (each on its own `FakeClock`;
the open time passing on the server is simulated by moving `open_until` back); real processes
(forked from a clean server) where the point is real concurrency, a real crash or a real expiry.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, cast

import pytest
from redis_server import RedisServer, RoundTrips, processes, run_fleet

from rate_limit_shield import Shield
from rate_limit_shield.breaker import CircuitBreaker, State
from rate_limit_shield.errors import CircuitOpen, ConfigError
from rate_limit_shield.outcome import Outcome
from rate_limit_shield.retry import RetryBudget
from rate_limit_shield.testing import FakeClock

try:
    import redis
    from redis.crc import key_slot
except ImportError:  # the server fixtures fail in CI; elsewhere say why nothing runs
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("redis-py is not installed (pip install redis)", allow_module_level=True)

from rate_limit_shield.backends.redis import (
    PROBE_TTL_FACTOR,
    SharedBreaker,
    SharedBudget,
    from_url,
)

approx = pytest.approx
SUCCESS, FAILURE, THROTTLED = Outcome.SUCCESS, Outcome.FAILURE, Outcome.THROTTLED
CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN


def breaker(url: str, name: str = "model", **options: Any) -> SharedBreaker:
    options.setdefault("recovery_timeout", 30.0)
    return SharedBreaker(client=from_url(url)[0], name=name, **options)


def budget(url: str, name: str = "model", **options: Any) -> SharedBudget:
    return SharedBudget(client=from_url(url)[0], name=name, **options)


def state_key(name: str = "model") -> str:
    return "{rls:" + name + "}:breaker"


def probes_key(name: str = "model") -> str:
    return "{rls:" + name + "}:probes"


def server_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def stored_open_until(client: redis.Redis, name: str = "model") -> float:
    return float(cast(bytes, client.hget(state_key(name), "open_until")))


def lease_expiries(client: redis.Redis, name: str = "model") -> list[float]:
    leases = cast(
        list[tuple[bytes, float]], client.zrange(probes_key(name), 0, -1, withscores=True)
    )
    return [expires for _, expires in leases]


def end_open_time(client: redis.Redis, name: str = "model") -> None:
    """The fleet's open time ends now, as if `recovery_timeout` had passed on the server."""
    client.hset(state_key(name), "open_until", repr(server_now(client) - 0.001))


def half_open_fleet(client: redis.Redis, name: str = "model") -> None:
    client.hset(state_key(name), "open_until", repr(server_now(client) - 1.0))


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    try:
        result = call()
    except CircuitOpen as refused:
        result = refused
    return result, time.perf_counter() - started


def open_fleet(here: SharedBreaker) -> None:
    """`here` (failure_threshold=1) opens the fleet's breaker."""
    here.record(here.acquire(), FAILURE)
    assert here.state is OPEN


@pytest.fixture(scope="module")
def peer() -> Iterator[ProcessPoolExecutor]:
    """Another process, to share a breaker or a budget with."""
    with ProcessPoolExecutor(max_workers=1, mp_context=processes()) as executor:
        yield executor


# -- construction --------------------------------------------------------------------------


def test_bad_arguments_are_errors_naming_the_value(redis_url: str) -> None:
    with pytest.raises(ConfigError, match=r"prefix .* got ''"):
        breaker(redis_url, prefix="")
    with pytest.raises(ConfigError, match=r"sync_interval .* got -1"):
        breaker(redis_url, sync_interval=-1)
    with pytest.raises(ConfigError, match=r"sync_interval .* got nan"):
        budget(redis_url, sync_interval=math.nan)
    with pytest.raises(ConfigError, match=r"probe_ttl .* got 0"):
        breaker(redis_url, probe_ttl=0)
    with pytest.raises(ConfigError, match=r"redis_recovery_timeout .* got -2"):
        budget(redis_url, redis_recovery_timeout=-2)
    with pytest.raises(ConfigError, match=r"synchronous redis client .*asyncio"):
        SharedBreaker(client=from_url(redis_url)[1], name="model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"half_open_max_calls .* got 0"):
        breaker(redis_url, half_open_max_calls=0)  # the in-memory checks still apply
    with pytest.raises(ValueError, match=r"window .* whole number .* got 2\.5"):
        budget(redis_url, window=2.5)


def test_probe_leases_last_a_multiple_of_recovery_timeout(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    assert breaker(redis_url, recovery_timeout=7.0).probe_ttl == PROBE_TTL_FACTOR * 7.0 == 14.0
    here = breaker(redis_url, recovery_timeout=7.0, probe_ttl=3.0, clock=FakeClock())
    assert here.probe_ttl == 3.0
    half_open_fleet(client)
    here.acquire()
    [expires] = lease_expiries(client)
    assert expires - server_now(client) == approx(3.0, abs=0.2)


# -- the state is the fleet's ------------------------------------------------------------------


def test_an_opening_is_published_at_once_and_followed_within_the_sync_interval(
    redis_url: str,
) -> None:
    client = from_url(redis_url)[0]
    one_clock, two_clock = FakeClock(), FakeClock(start=5_000.0)  # clocks that disagree
    one = breaker(redis_url, failure_threshold=2, clock=one_clock)
    two = breaker(redis_url, failure_threshold=2, clock=two_clock)
    changes: list[tuple[State, State]] = []
    two.add_listener(lambda old, new: changes.append((old, new)))
    two.record(two.acquire(), SUCCESS)  # two has read the fleet: closed
    for _ in range(2):
        one.record(one.acquire(), FAILURE)
    assert one.state is OPEN
    left = stored_open_until(client) - server_now(client)
    assert left == approx(30.0, abs=0.5)  # published by the call that opened it
    assert two.acquire() >= 0  # two reads the fleet at most once per sync interval...
    two_clock.advance(0.1)
    with pytest.raises(CircuitOpen) as refused:  # ...and then follows it
        two.acquire()
    assert refused.value.retry_after == approx(left, abs=0.1)  # until the same instant
    assert two.retry_after == approx(one.retry_after, abs=0.1)
    assert two.snapshot()["open_until"] == approx(5_000.1 + left, abs=0.1)  # on its own clock
    assert changes == [(CLOSED, OPEN)]


def test_the_closed_path_asks_redis_at_most_once_per_sync_interval(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    trips = RoundTrips(client)
    clock = FakeClock()
    here = SharedBreaker(client=client, clock=clock, name="model", failure_rate=0.5)
    here.acquire()  # the first call reads the fleet (and connects)
    trips.reset()

    def calls() -> None:
        for _ in range(500):
            here.record(here.acquire(), SUCCESS)

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert trips.sends == 0
    clock.advance(0.1)
    together = threading.Barrier(8)
    threads = [threading.Thread(target=lambda: (together.wait(), here.acquire())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert trips.sends == 1  # eight threads call once the interval is over: one round trip
    assert here.state is CLOSED


def test_half_open_probes_are_leased_fleet_wide_and_the_fleet_closes_on_n_successes(
    redis_url: str,
) -> None:
    client = from_url(redis_url)[0]
    clocks = FakeClock(), FakeClock()
    one, two = (
        breaker(redis_url, failure_threshold=1, half_open_max_calls=2, clock=clock)
        for clock in clocks
    )
    open_fleet(one)
    end_open_time(client)
    for clock in clocks:
        clock.advance(30.0)
    first, second = one.acquire(), two.acquire()
    assert one.state is HALF_OPEN and two.state is HALF_OPEN
    assert client.zcard(probes_key()) == 2
    for member in (one, two):  # each has a slot free in memory, none in the fleet
        with pytest.raises(CircuitOpen, match="every probe slot of the fleet") as busy:
            member.acquire()
        assert busy.value.retry_after == 1.0
    one.record(first, SUCCESS)  # 1 of 2: still half-open, and its slot is free again
    assert client.hget(state_key(), "successes") == b"1"
    assert one.state is HALF_OPEN
    third = one.acquire()
    two.record(second, SUCCESS)
    assert two.state is CLOSED
    assert client.keys("*") == []  # a closed fleet keeps no state at all
    one.record(third, SUCCESS)  # late: its generation is over, it counts for nothing
    assert one.acquire() >= 0  # its next probe finds the fleet closed, and goes as a call
    assert one.state is CLOSED


def test_a_failed_probe_reopens_the_fleet_for_twice_as_long(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    clocks = FakeClock(), FakeClock()
    one, two = (
        breaker(redis_url, failure_threshold=1, max_recovery_timeout=100.0, clock=clock)
        for clock in clocks
    )
    open_fleet(one)
    end_open_time(client)
    clocks[0].advance(30.0)
    one.record(one.acquire(), FAILURE)
    assert one.retry_after == approx(60.0, abs=0.5)
    clocks[1].advance(0.1)
    assert two.state is OPEN
    assert two.retry_after == approx(60.0, abs=0.5)
    assert two.snapshot()["open_timeout"] == 60.0
    end_open_time(client)
    clocks[1].advance(60.0)
    two.record(two.acquire(), FAILURE)  # the next failed probe, from another process
    assert one.snapshot()["open_timeout"] == 60.0  # one has not looked since
    clocks[0].advance(0.1)
    assert one.retry_after == approx(100.0, abs=0.5)  # 120, capped
    end_open_time(client)
    clocks[0].advance(100.0)
    one.record(one.acquire(), SUCCESS)
    assert one.state is CLOSED and one.snapshot()["open_timeout"] == 30.0
    clocks[1].advance(0.1)
    assert two.state is CLOSED
    open_fleet(two)  # a new opening lasts the base time again
    assert two.retry_after == approx(30.0, abs=0.5)


def test_a_probe_result_from_an_older_episode_counts_for_nothing(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    one, two, three = (
        breaker(redis_url, failure_threshold=1, half_open_max_calls=3, clock=FakeClock())
        for _ in range(3)
    )
    half_open_fleet(client)
    slow, fast, slower = one.acquire(), two.acquire(), three.acquire()
    two.record(fast, FAILURE)  # the fleet opens again; one and three do not know yet
    assert one.state is HALF_OPEN
    one.record(slow, SUCCESS)  # a success of the half-open episode that is over
    assert one.state is OPEN  # it learnt the fleet's state instead
    assert one.retry_after == approx(30.0, abs=0.5)
    end_open_time(client)  # a new half-open episode begins
    three.record(slower, SUCCESS)  # from the old one: not a success of this one
    assert client.hget(state_key(), "successes") is None
    assert three.state is HALF_OPEN


def test_probes_of_an_earlier_round_hold_their_fleet_slots_until_they_end(
    redis_url: str,
) -> None:
    """N = 3: one probe fails while two are still at the service; the next round has one slot."""
    client = from_url(redis_url)[0]
    one, two, three, four = (
        breaker(redis_url, failure_threshold=1, half_open_max_calls=3, clock=FakeClock())
        for _ in range(4)
    )
    half_open_fleet(client)
    failed, slow, slower = one.acquire(), two.acquire(), three.acquire()
    one.record(failed, FAILURE)  # the fleet opens again; two probes are still in flight
    assert client.zcard(probes_key()) == 2
    end_open_time(client)  # the next round
    fresh = four.acquire()
    with pytest.raises(CircuitOpen, match="every probe slot of the fleet"):
        four.acquire()  # 2 + 1 in flight: never more than 3 at the recovering service
    two.record(slow, SUCCESS)  # a late success is stale: it frees its slot, counts nothing
    assert client.hget(state_key(), "successes") is None
    assert client.zcard(probes_key()) == 2
    another = four.acquire()  # the slot it freed
    assert client.zcard(probes_key()) == 3
    three.record(slower, FAILURE)  # a late failure: the service failed during recovery
    assert three.state is OPEN
    assert client.zcard(probes_key()) == 2  # the current round's probes keep their slots
    four.record(fresh, SUCCESS)  # over by now: stale too
    four.release(another)
    assert client.zcard(probes_key()) == 0
    assert client.hget(state_key(), "successes") is None


def test_a_cancelled_or_throttled_probe_frees_its_fleet_slot(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    one, two = (breaker(redis_url, failure_threshold=1, clock=FakeClock()) for _ in range(2))
    half_open_fleet(client)
    probe = one.acquire()
    with pytest.raises(CircuitOpen, match="probe slot"):
        two.acquire()
    one.release(probe)  # cancelled before it was sent
    assert client.zcard(probes_key()) == 0
    probe = two.acquire()
    two.record(probe, THROTTLED)  # a 429 counts neither way
    assert client.hget(state_key(), "successes") is None
    assert client.exists(state_key())  # still half-open
    assert one.allow()  # the seed's interface leases too
    assert not two.allow()
    one.record_success()  # N = 1: the fleet closes
    assert two.allow()  # two's next probe finds it closed
    assert two.state is CLOSED


def test_force_open_and_reset_are_published(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    clocks = FakeClock(), FakeClock()
    one, two = (breaker(redis_url, failure_threshold=1, clock=clock) for clock in clocks)
    open_fleet(one)
    one.force_open()  # open already: published all the same
    clocks[1].advance(0.1)
    with pytest.raises(CircuitOpen) as refused:
        two.acquire()
    assert refused.value.retry_after is None
    assert two.snapshot()["forced_open"] is True
    end_open_time(client)  # a forced opening has no open time to end
    clocks[1].advance(1_000.0)
    assert two.state is OPEN
    assert client.ttl(state_key()) == -1  # and does not expire
    two.reset()
    assert client.keys("*") == []
    assert one.state is OPEN
    clocks[0].advance(0.1)
    assert one.state is CLOSED
    three = breaker(redis_url, failure_threshold=1, clock=FakeClock())
    three.force_open()  # from closed
    clocks[0].advance(0.1)
    assert one.retry_after is None


def test_disable_is_local_and_follows_no_opening(redis_url: str) -> None:
    clocks = FakeClock(), FakeClock()
    one, two = (breaker(redis_url, failure_threshold=1, clock=clock) for clock in clocks)
    two.disable()
    open_fleet(one)
    clocks[1].advance(0.1)
    assert two.acquire() >= 0
    assert two.state is CLOSED
    two.reset()  # ends the local mode, and closes the fleet too
    clocks[0].advance(0.1)
    assert one.acquire() >= 0 and one.state is CLOSED


def test_state_is_small_tagged_and_expires(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    here = breaker(redis_url, failure_threshold=1, half_open_max_calls=3, clock=FakeClock())
    open_fleet(here)
    assert client.pttl(state_key()) / 1000 == approx(30.0 + 86_400, abs=1)
    end_open_time(client)
    here.sync()
    probes = [here.acquire() for _ in range(3)]
    assert len(probes) == 3
    assert sorted(client.keys("*")) == [state_key().encode(), probes_key().encode()]
    assert client.pttl(probes_key()) / 1000 == approx(60.0, abs=1)  # the newest lease's ttl
    spending = budget(redis_url, window=5, sync_interval=0.0)
    for _ in range(100):
        spending.record_call()
    spending.try_spend()
    keys = cast(list[bytes], client.keys("*"))
    assert len({key_slot(key) for key in keys}) == 1  # one Cluster slot for the model
    assert client.hlen("{rls:model}:budget") <= 3 * 5
    assert 0 < client.ttl("{rls:model}:budget") <= 6


# -- several processes ---------------------------------------------------------------------


def _peer_opens(url: str, name: str) -> float:
    """Open the fleet's breaker here; its open_until, in server seconds."""
    here = breaker(url, name, failure_threshold=1)
    open_fleet(here)
    return stored_open_until(from_url(url)[0], name)


def test_an_opening_in_another_process_is_seen_until_the_same_instant(
    redis_url: str, peer: ProcessPoolExecutor
) -> None:
    client = from_url(redis_url)[0]
    clock = FakeClock()
    here = breaker(redis_url, "shared", failure_threshold=1, clock=clock)
    assert here.acquire() >= 0
    open_until = peer.submit(_peer_opens, redis_url, "shared").result(timeout=120)
    clock.advance(0.1)
    with pytest.raises(CircuitOpen) as refused:
        here.acquire()
    assert refused.value.retry_after == approx(open_until - server_now(client), abs=0.05)
    assert here.state is OPEN


def _prober(
    url: str, name: str, seconds: float, failing: bool, start: Any, results: Any
) -> None:
    """4 threads probe the half-open fleet for `seconds`; each probe lasts 10 ms and is
    released (counted neither way, so the fleet stays half-open), or, `failing`, lasts 50 ms and
    fails (the fleet opens again for 20 ms, shorter than the probes still in flight last). Puts
    the probes' wall times."""
    here = breaker(
        url,
        name,
        half_open_max_calls=2,
        sync_interval=0.0,
        recovery_timeout=0.02 if failing else 30.0,
        probe_ttl=30.0,  # no prober here is taken for dead
    )
    spans: list[tuple[float, float]] = []
    start.wait()
    end = time.time() + seconds

    def worker() -> None:
        while time.time() < end:
            try:
                permit = here.acquire()
            except CircuitOpen:
                time.sleep(0.002)  # a real process waiting for a real slot
                continue
            began = time.time()
            time.sleep(0.05 if failing else 0.01)  # the probe call
            spans.append((began, time.time()))
            if failing:
                here.record(permit, FAILURE)
            else:
                here.release(permit)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(spans)


@pytest.mark.parametrize("failing", [False, True], ids=["released", "failing"])
def test_never_more_than_n_probes_in_flight_across_processes(
    redis_url: str, failing: bool
) -> None:
    """3 processes x 4 threads probe a half-open breaker with N = 2 for 1.5 s; failing, each
    probe opens it again, and the next round begins while the other probe is still out."""
    client = from_url(redis_url)[0]
    half_open_fleet(client, "probed")
    reports = run_fleet(_prober, (redis_url, "probed", 1.5, failing), size=3)
    events = sorted(
        (moment, step)
        for spans in reports
        for began, ended in spans
        for moment, step in ((began, 1), (ended, -1))
    )  # a start sorts before an end at the same instant: overlaps are never undercounted
    in_flight = most = 0
    for _, step in events:
        in_flight += step
        most = max(most, in_flight)
    assert most == 2
    assert sum(len(spans) for spans in reports) >= 20
    assert sum(1 for spans in reports if spans) >= 2  # the slots went round the fleet
    assert client.zcard(probes_key("probed")) == 0


def _dying_prober(url: str, name: str, leased: Any) -> None:
    """Take one of the fleet's two probe slots, say so, and hang until killed."""
    here = breaker(url, name, half_open_max_calls=2, probe_ttl=3.0)
    here.acquire()
    leased.set()
    time.sleep(600)  # the test kills this process


def test_a_dead_probers_lease_expires_after_its_ttl(redis_url: str) -> None:
    """A dead prober's lease expires on its own, while a live one's (longer) lease stays."""
    client = from_url(redis_url)[0]
    half_open_fleet(client, "dying")
    context = processes()
    leased = context.Event()
    prober = context.Process(target=_dying_prober, args=(redis_url, "dying", leased))
    prober.start()
    try:
        assert leased.wait(timeout=120)
        [expires] = lease_expiries(client, "dying")
        holder = breaker(redis_url, "dying", half_open_max_calls=2, probe_ttl=60.0)
        holder.acquire()  # the second slot, held throughout
        here = breaker(redis_url, "dying", half_open_max_calls=2, probe_ttl=3.0)
        with pytest.raises(CircuitOpen, match="probe slot"):
            here.acquire()
    finally:
        prober.kill()
        prober.join(timeout=30)
    with pytest.raises(CircuitOpen, match="probe slot"):
        here.acquire()  # the lease outlives its prober
    deadline = time.monotonic() + 30
    while True:
        try:
            here.acquire()
            break
        except CircuitOpen:
            assert time.monotonic() < deadline, "the dead prober's lease never expired"
            time.sleep(0.05)  # waiting for a real expiry on the server's clock
    assert server_now(client) >= expires
    assert client.zcard(probes_key("dying")) == 2  # the holder's lease and this one's
    assert client.pttl(probes_key("dying")) / 1000 == approx(60.0, abs=5)


def _spender(url: str, name: str, start: Any, results: Any) -> None:
    """Count 20 calls, wait for the fleet's, then try 20 retries; put how many were allowed."""
    here = budget(url, name, ratio=0.25, min_per_second=0.0, window=60, sync_interval=0.0)
    for _ in range(20):
        here.record_call()
    start.wait()
    results.put(sum(here.try_spend() for _ in range(20)))


def test_the_retry_budget_counts_fleet_wide(redis_url: str) -> None:
    allowed = run_fleet(_spender, (redis_url, "spent"), size=3)
    assert sum(allowed) == 15  # 25 % of the fleet's 60 calls, wherever they were made
    watcher = budget(redis_url, "spent", ratio=0.25, min_per_second=0.0, window=60)
    assert watcher.snapshot() == {
        "calls": 60, "retries": 15, "retries_left": 0.0, "redis_available": True,
    }  # fmt: skip


# -- the budget in one process -------------------------------------------------------------


def test_the_budget_decides_as_the_in_memory_one(redis_url: str) -> None:
    shared = budget(redis_url, ratio=0.2, min_per_second=1.0, window=10, sync_interval=0.0)
    local = RetryBudget(ratio=0.2, min_per_second=1.0, window=10)
    for each in (shared, local):
        for _ in range(30):
            each.record_call()
    decisions = [shared.try_spend() for _ in range(20)]
    assert decisions == [local.try_spend() for _ in range(20)]
    assert decisions == [True] * 16 + [False] * 4  # 0.2 x 30 + 1 x 10


def test_budget_calls_cost_no_round_trip(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    trips = RoundTrips(client)
    clock = FakeClock()
    here = SharedBudget(0.5, 0.0, client=client, name="model", clock=clock)
    here.record_call()  # the first call is sent at once (and connects)
    trips.reset()
    for _ in range(999):
        here.record_call()
    assert trips.sends == 0
    assert here.try_spend()  # one script call sends the 999 and decides
    assert trips.sends == 1
    clock.advance(0.1)
    here.record_call()
    assert trips.sends == 2
    assert here.snapshot()["calls"] == 1001


# -- failures ------------------------------------------------------------------------------


def test_killed_redis_breaker_works_in_memory_then_publishes_when_back(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_redis_server.url
    clock = FakeClock()
    here = breaker(url, failure_threshold=2, clock=clock)
    here.record(here.acquire(), SUCCESS)
    own_redis_server.kill()
    with caplog.at_level(logging.INFO, logger="rate_limit_shield"):
        for _ in range(2):
            clock.advance(0.1)
            permit, seconds = timed(here.acquire)
            assert seconds < 0.5 and permit >= 0
            here.record(permit, FAILURE)
        refused, seconds = timed(here.acquire)  # opened in memory
        assert isinstance(refused, CircuitOpen) and seconds < 0.5
        assert here.snapshot()["redis_available"] is False
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "[model]" in warnings[0].getMessage()
        assert "breaking circuits in this process only" in warnings[0].getMessage()
        assert "ConnectionError" in warnings[0].getMessage()
        own_redis_server.start()  # empty: persistence is off
        clock.advance(2.0)  # Redis is tried again
        with pytest.raises(CircuitOpen):
            here.acquire()  # its read publishes the opening Redis missed
        assert any("answers again" in r.getMessage() for r in caplog.records)
    assert here.snapshot()["redis_available"] is True
    other = breaker(url, failure_threshold=2, clock=FakeClock())
    with pytest.raises(CircuitOpen) as seen:
        other.acquire()
    assert seen.value.retry_after == approx(30.0 - 2.2, abs=0.2)  # what is left of it


def test_hung_redis_costs_the_breaker_one_timeout(own_redis_server: RedisServer) -> None:
    clock = FakeClock()
    here = breaker(own_redis_server.url, failure_threshold=3, clock=clock)
    here.acquire()
    own_redis_server.hang()
    clock.advance(0.1)
    permit, first = timed(here.acquire)
    assert permit >= 0 and 0.2 <= first < 0.5  # one socket timeout
    for _ in range(10):
        clock.advance(0.1)
        permit, seconds = timed(here.acquire)
        assert permit >= 0 and seconds < 0.1  # no attempt within the recovery interval
    own_redis_server.resume()
    clock.advance(2.0)
    here.acquire()
    assert here.snapshot()["redis_available"] is True


@pytest.mark.parametrize("phase", ["closed", "probe"])
def test_redis_dying_during_the_call_leaves_a_clear_outcome(
    own_redis_server: RedisServer, phase: str
) -> None:
    client = from_url(own_redis_server.url)[0]
    clock = FakeClock()
    here = breaker(own_redis_server.url, failure_threshold=1, clock=clock)
    if phase == "probe":
        half_open_fleet(client)
    shield = Shield(None, here)

    def succeeds() -> int:
        own_redis_server.kill()
        return 42

    def fails() -> int:
        own_redis_server.kill()
        raise ConnectionError("reset by the provider")

    if phase == "probe":
        assert shield.call(succeeds) == 42
        assert here.state is CLOSED  # the probe's success, counted in memory
    else:
        with pytest.raises(ConnectionError, match="reset by the provider"):
            shield.call(fails)
        assert here.state is OPEN  # the failure, counted in memory
        with pytest.raises(CircuitOpen):
            shield.call(succeeds)


def test_a_flushed_script_is_loaded_again_in_the_same_call(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    trips = RoundTrips(client)
    clock = FakeClock()
    here = SharedBreaker(client=client, clock=clock, name="model")
    spending = SharedBudget(client=client, clock=clock, name="model")
    here.acquire()
    spending.record_call()
    client.script_flush()
    trips.reset()
    clock.advance(0.1)
    here.acquire()
    assert trips.sends == 2  # EVALSHA refused, EVAL runs and caches it
    spending.record_call()
    assert trips.sends == 4
    clock.advance(0.1)
    here.acquire()
    spending.record_call()
    assert trips.sends == 6
    assert here.snapshot()["redis_available"] is True


def test_killed_redis_budget_decides_in_memory_then_returns(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    here = budget(own_redis_server.url, ratio=0.5, min_per_second=0.0, clock=clock)
    assert not here.try_spend()  # no call anywhere yet: no retry
    own_redis_server.kill()
    with caplog.at_level(logging.INFO, logger="rate_limit_shield"):
        for _ in range(10):
            here.record_call()
        decisions = [timed(here.try_spend) for _ in range(6)]
        assert [allowed for allowed, _ in decisions] == [True] * 5 + [False]  # 50 % of 10
        assert max(seconds for _, seconds in decisions) < 0.5
        assert here.snapshot() == {
            "calls": 10, "retries": 5, "retries_left": 0.0, "redis_available": False,
        }  # fmt: skip
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1
        assert "[model]" in warnings[0].getMessage()
        assert "counting retries in this process only" in warnings[0].getMessage()
        own_redis_server.start()
        clock.advance(2.0)
        for _ in range(4):
            here.record_call()
        assert any("answers again" in r.getMessage() for r in caplog.records)
    assert here.snapshot() == {
        "calls": 4, "retries": 0, "retries_left": 2.0, "redis_available": True,
    }  # fmt: skip


# -- asyncio -------------------------------------------------------------------------------


def test_an_async_shield_call_follows_the_fleet(redis_url: str) -> None:
    one = breaker(redis_url, failure_threshold=1, clock=FakeClock())
    two = breaker(redis_url, failure_threshold=1, clock=FakeClock())
    calls: list[int] = []

    async def call() -> int:
        calls.append(1)
        return 1

    async def scenario() -> None:
        shield = Shield(None, two)
        assert await shield.acall(call) == 1
        open_fleet(one)
        with pytest.raises(CircuitOpen):
            await Shield(None, breaker(redis_url, failure_threshold=1)).acall(call)

    asyncio.run(scenario())
    assert calls == [1]


def test_a_shared_breaker_is_a_circuit_breaker(redis_url: str) -> None:
    here = breaker(redis_url, name="gpt-4o")
    assert isinstance(here, CircuitBreaker)
    assert repr(here).startswith("SharedBreaker(name='gpt-4o', state='closed'")
