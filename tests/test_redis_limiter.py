"""The Redis limiter against a real redis-server: the in-memory semantics, shared by processes.

Decisions match the in-memory `Limiter`; one round trip each; server time (skewed client clocks
admit nothing extra); a fleet of processes never admits more than one limit; reservations,
settlements and pauses are shared; state is O(1), tagged for Cluster and expires; Redis killed,
restarted, hung, or its scripts flushed, and every call still ends, quickly and clearly.
Breaker recovery runs on a `FakeClock`; real time is used only for real processes and real I/O.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from redis_server import RedisServer, RoundTrips, processes, require_redis, run_fleet

from rate_limit_shield import Limit, Limiter, Reservation, Shield
from rate_limit_shield.errors import ConfigError, CostTooLarge, RateLimited, ShieldError
from rate_limit_shield.llm.headers import RateLimitInfo
from rate_limit_shield.llm.pacing import Guide
from rate_limit_shield.registry import Registry
from rate_limit_shield.testing import FakeClock

try:
    import redis
    from redis.crc import key_slot
except ImportError:  # the server fixtures fail in CI; elsewhere say why nothing runs
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("redis-py is not installed (pip install redis)", allow_module_level=True)

from rate_limit_shield.backends.redis import (
    BackendUnavailable,
    RedisBackend,
    RedisLimiter,
    from_url,
)

approx = pytest.approx
REQUESTS = "10/3600s requests"
TOKENS = "1000/3600s tokens"


def requests_and_tokens() -> list[Limit]:
    """Slow limits: the real time a test takes refills no level measurably."""
    return [Limit(10, 3600), Limit(1000, 3600, unit="tokens")]


def make(
    url: str,
    limits: list[Limit] | None = None,
    *,
    name: str = "model",
    clock: Any = None,
    **options: Any,
) -> RedisLimiter:
    client, aclient = from_url(url)
    limits = requests_and_tokens() if limits is None else limits
    return RedisLimiter(limits, client=client, aclient=aclient, name=name, clock=clock, **options)


def key(name: str = "model") -> str:
    return "{rls:" + name + "}:rate"


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


class SkewedClock:
    """A process clock `offset` seconds off the others (the limiter only sleeps on it)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# -- construction --------------------------------------------------------------------------


def test_bad_arguments_are_config_errors_naming_the_value(redis_url: str) -> None:
    with pytest.raises(ConfigError, match=r"on_backend_error .* got 'fail'"):
        make(redis_url, on_backend_error="fail")
    with pytest.raises(ConfigError, match=r"local_share .* got 1\.5"):
        make(redis_url, local_share=1.5)
    with pytest.raises(ConfigError, match=r"local_share .* got 0"):
        make(redis_url, local_share=0)
    with pytest.raises(ConfigError, match=r"prefix .* got ''"):
        make(redis_url, prefix="")
    with pytest.raises(ConfigError, match=r"recovery_timeout .* got -1"):
        make(redis_url, recovery_timeout=-1)


def test_from_url_fails_fast_and_url_options_win() -> None:
    client, aclient = from_url("redis://127.0.0.1:1/0")
    for pool in (client.connection_pool, aclient.connection_pool):
        assert pool.connection_kwargs["socket_timeout"] == 0.25
        assert pool.connection_kwargs["socket_connect_timeout"] == 0.25
    for retry in (client.get_retry(), aclient.get_retry()):
        assert retry is not None and retry.get_retries() == 0  # no retry loop on the client
    slow, _ = from_url("redis://127.0.0.1:1/0?socket_timeout=1.5")
    assert slow.connection_pool.connection_kwargs["socket_timeout"] == 1.5


def test_importing_the_package_does_not_need_redis() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import rate_limit_shield, rate_limit_shield.backends\n"
        "try:\n    import rate_limit_shield.backends.redis\n"
        "except ImportError:\n    print('optional')\n"
        "try:\n    from rate_limit_shield.backends import RedisBackend\n"
        "except ImportError as error:\n    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "optional",
        "Redis needs redis-py: pip install 'rate-limit-shield[redis]'",
    ]


def test_without_a_server_ci_fails_and_elsewhere_skips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server there
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server is not on PATH: CI must"):
        require_redis()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="redis-server is not on PATH"):
        require_redis()


def test_a_redis_backend_gives_every_registry_the_same_limits(redis_url: str) -> None:
    first, second = Registry(), Registry()
    for registry in (first, second):
        registry.configure({"gpt-4o": {"rpm": 3}}, backend=redis_url)
    limiter = first.key("gpt-4o").limiter
    assert isinstance(limiter, RedisLimiter) and limiter.name == "gpt-4o"
    taken = [
        limiter.try_acquire(),
        limiter.try_acquire(),
        second.key("gpt-4o").limiter.try_acquire(),
    ]
    assert taken == [True, True, True]
    assert not second.key("gpt-4o").limiter.try_acquire()
    client, aclient = from_url(redis_url)
    with pytest.raises(ConfigError, match="asyncio client"):
        RedisBackend(aclient)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"on_backend_error .* got 'ignore'"):
        RedisBackend(client, on_backend_error="ignore")


# -- the in-memory semantics, on the server ----------------------------------------------------


def test_all_limits_are_taken_or_none(redis_url: str) -> None:
    limiter = make(redis_url)
    assert limiter.try_acquire({"requests": 1, "tokens": 900})
    assert not limiter.try_acquire({"requests": 1, "tokens": 200})  # tokens refuse: no request
    levels = limiter.levels()
    assert levels[REQUESTS] == approx(9, abs=0.01)
    assert levels[TOKENS] == approx(100, abs=0.1)
    with pytest.raises(ValueError, match="exceeds the capacity"):
        limiter.reserve({"tokens": 1001})


def test_reservations_are_first_come_first_served(redis_url: str) -> None:
    limiter = make(redis_url, [Limit(2, 10)])  # a permit every 5 s, 2 at once
    delays = [limiter.reserve(1).delay for _ in range(5)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2:] == approx([5.0, 10.0, 15.0], abs=0.2)
    with pytest.raises(RateLimited) as refused:
        limiter.reserve(1, max_wait=10.0)
    assert refused.value.retry_after == approx(20.0, abs=0.2)
    assert limiter.wait_time() == approx(20.0, abs=0.2)  # the refusal took nothing
    assert limiter.levels()["2/10s requests"] == approx(-3.0, abs=0.05)


def test_acquire_sleeps_on_the_clock_and_cancel_gives_back(redis_url: str) -> None:
    clock = FakeClock()
    limiter = make(redis_url, [Limit(1, 10)], clock=clock)
    limiter.acquire()
    second = limiter.acquire()
    assert clock.sleeps == [approx(10.0, abs=0.2)]
    assert second.ready_at == approx(10.0, abs=0.2)  # local monotonic + the server's wait
    with pytest.raises(RateLimited):
        limiter.acquire(timeout=5)
    limiter.cancel(second)
    limiter.cancel(second)  # at most once
    assert limiter.wait_time() == approx(10.0, abs=0.2)


def test_settle_refunds_and_charges_debt(redis_url: str) -> None:
    limiter = make(redis_url)
    reservation = limiter.reserve({"requests": 1, "tokens": 500})
    limiter.settle(reservation, {"requests": 1, "tokens": 100})
    assert limiter.levels()[TOKENS] == approx(900, abs=0.5)
    limiter.settle(reservation, {"tokens": 900})  # only the first settle counts
    assert limiter.levels()[TOKENS] == approx(900, abs=0.5)
    debt = limiter.reserve({"tokens": 10})
    limiter.settle(debt, {"tokens": 1500})
    assert limiter.levels()[TOKENS] == approx(-600, abs=0.5)
    assert limiter.wait_time({"requests": 1}) == approx(2160, abs=1)  # debt holds everyone
    limiter.refund({"tokens": 600})
    assert limiter.levels()[TOKENS] == approx(0, abs=0.5)
    with pytest.raises(ValueError, match="was not made by"):
        limiter.settle(Limiter([Limit(1, 1)]).reserve(1), 1)


def test_a_late_settle_gives_back_nothing_a_later_call_took(redis_url: str) -> None:
    """1000 input tokens per second: A reserves 1000 (really 100) and settles only once its
    window is over and B1 took 1000; B2 gets none of A's 900. Real time: the server's clock
    decides, and B2 comes 0.9 s before the bucket could hold 900 again."""
    limiter = make(redis_url, [Limit(1000, 1, unit="input_tokens")])
    a = limiter.reserve({"input_tokens": 1000})
    time.sleep(1.0)  # A's call lasts its window
    assert limiter.try_acquire({"input_tokens": 1000})  # B1: the bucket is full again
    limiter.settle(a, {"input_tokens": 100})
    assert not limiter.try_acquire({"input_tokens": 900})  # B2: 1,900 in a second otherwise


def test_a_settle_compares_a_cost_unit_by_unit_on_redis_as_in_memory(redis_url: str) -> None:
    """A prompt 3 tokens shorter than estimated, with an answer of 30 that was not reserved:
    the answer is a debt in full, and the 3 tokens come back only as far as the call queued
    behind allows, which is not at all. Netted, they came back on Redis as a debt of 27."""
    limits = [Limit(1000, 1e6, unit="tokens")]  # so slow that real time refills nothing
    for limiter in (make(redis_url, limits, name=uuid.uuid4().hex), Limiter(limits)):
        call = limiter.reserve({"input_tokens": 57, "output_tokens": 0})
        limiter.reserve({"input_tokens": 1000})  # queued behind it, for the whole bucket
        limiter.settle(call, {"input_tokens": 54, "output_tokens": 30})
        assert limiter.levels()["1000/1000000s tokens"] == approx(-87, abs=0.01)


def test_a_cancelled_reservation_gives_back_nothing_promised_to_one_queued_behind(
    redis_url: str,
) -> None:
    """A waits 60 s, B1 is queued behind it for 120 s; A's cancel cannot move B1's promised
    start, so B2 goes after B1's whole charge, not beside it: as in memory."""
    limits = [Limit(1000, 60, unit="input_tokens")]
    delays = []
    for limiter in (make(redis_url, limits), Limiter(limits)):
        assert limiter.try_acquire({"input_tokens": 1000})  # empty until refilled
        a = limiter.reserve({"input_tokens": 1000})
        b1 = limiter.reserve({"input_tokens": 1000})
        assert (a.delay, b1.delay) == approx((60, 120), abs=0.5)
        limiter.cancel(a)
        delays.append(limiter.reserve({"input_tokens": 900}).delay)
    assert delays == approx([174, 174], abs=0.5)  # 120 + 54: after B1, not at 114


def test_a_rate_cut_never_lets_the_key_take_more_than_its_capacity(redis_url: str) -> None:
    """An adaptive cut in one process, a deeper one in another: the key's bucket, emptied,
    admits nothing more in either (it used to admit 5 more at half the rate: 15 of 10)."""
    limiter, other = make(redis_url, [Limit(10, 3600)]), make(redis_url, [Limit(10, 3600)])
    assert sum(limiter.try_acquire() for _ in range(12)) == 10
    limiter.scale_rates(0.5)
    other.scale_rates(0.25)
    assert not limiter.try_acquire() and not other.try_acquire()
    # A unit refills in 360 s, at the limit's rate; at half the rate a unit is charged 720 s.
    assert limiter.wait_time() == approx(360, abs=1)
    assert limiter.reserve(1).delay == approx(360, abs=1)
    assert other.wait_time() == approx(360 + 720, abs=1)


def test_a_rate_that_recovers_lets_no_call_overtake_those_waiting(redis_url: str) -> None:
    limiter = make(redis_url, [Limit(10, 3600)])
    limiter.scale_rates(0.25)
    assert limiter.reserve(10).delay == 0.0
    waiting = limiter.reserve(10)  # the bucket is full again for it in 4 h at a quarter rate
    assert waiting.delay == approx(14_400, abs=1)
    limiter.scale_rates(0.5)
    assert limiter.reserve(1).delay > waiting.delay + 360


CALLS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["reserve", "try"]), st.integers(0, 1), st.integers(0, 50)),
        st.tuples(st.sampled_from(["settle", "cancel"]), st.integers(0, 1), st.integers(0, 200)),
        st.tuples(st.just("scale"), st.integers(0, 1), st.floats(0.05, 1.0)),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=CALLS)
@example(  # a reservation settled after its process cut its rate gave back at the cut interval
    calls=[
        ("reserve", 1, 9),
        ("scale", 1, 0.5),
        ("reserve", 0, 9),
        ("settle", 0, 56),
        ("reserve", 0, 36),
    ]
)
def test_processes_cutting_their_rates_never_overdraw_the_bucket(
    redis_server: RedisServer, calls: list[tuple[str, int, float]]
) -> None:
    """Two limiters of one key, each cutting and recovering its own rate: calls charged their
    real cost when they go never overdraw a bucket of the configured shape (50 tokens, one
    every 10,000 s: the real time of a test refills nothing that counts)."""
    limits, name = [Limit(100, 1e6, "tokens", burst=50)], uuid.uuid4().hex
    limiters = [make(redis_server.url, limits, name=name) for _ in range(2)]
    goes: list[list[float]] = []  # [when each call goes, what it really costs]
    held: list[tuple[RedisLimiter, Reservation, list[float]]] = []
    for action, which, value in calls:
        limiter = limiters[which]
        if action == "scale":
            limiter.scale_rates(value)
        elif action == "reserve":
            reservation = limiter.reserve({"tokens": value})
            goes.append([reservation.ready_at, value])
            held.append((limiter, reservation, goes[-1]))
        elif action == "try" and limiter.try_acquire({"tokens": value}):
            goes.append([time.monotonic(), value])
        elif held and action in ("settle", "cancel"):
            owner, reservation, call = held.pop(int(value) % len(held))
            call[1] = call[1] * (value % 100) / 100 if action == "settle" else 0.0
            owner.settle(reservation, {"tokens": call[1]})
    level, then = 50.0, -math.inf
    for start, cost in sorted(goes):
        level = min(50.0, level + (start - then) * 1e-4) if then > -math.inf else level
        then = start
        assert level >= cost - 1e-6
        level -= cost


def test_pause_holds_every_limit_and_is_never_shortened(redis_url: str) -> None:
    limiter = make(redis_url)
    limiter.pause(30)
    limiter.pause(5)
    assert limiter.paused_for == approx(30, abs=0.5)
    assert not limiter.try_acquire()
    assert limiter.reserve(1, max_wait=60).delay == approx(30, abs=0.5)


def test_reservations_made_during_a_pause_are_spaced_by_their_costs_after_it(
    redis_url: str,
) -> None:
    limiter = make(redis_url, [Limit(10, 10)])
    limiter.pause(30)
    delays = [limiter.reserve(10).delay for _ in range(2)]
    assert delays == approx([30, 40], abs=0.5)


def test_a_call_held_back_by_one_limit_is_charged_to_the_others_when_it_goes(
    redis_url: str,
) -> None:
    """It takes its request when it goes, in an hour: ten more cannot go with it, only a
    request interval (360 s) later."""
    limiter = make(redis_url)
    assert limiter.try_acquire({"tokens": 1000})
    assert limiter.reserve({"requests": 1, "tokens": 1000}).delay == approx(3600, abs=1)
    assert limiter.wait_time({"requests": 10}) == approx(3960, abs=1)


COSTS = st.fixed_dictionaries(
    {"requests": st.integers(0, 2), "tokens": st.sampled_from([0, 100, 250])}
)


def _action(kind: str, waits: tuple[float, ...]) -> st.SearchStrategy[tuple[Any, ...]]:
    index = st.integers(0, 5)
    return {
        "try": st.tuples(st.just("try"), COSTS),
        "reserve": st.tuples(st.just("reserve"), COSTS, st.sampled_from(waits)),
        "settle": st.tuples(st.just("settle"), index, COSTS),
        "cancel": st.tuples(st.just("cancel"), index),
        "refund": st.tuples(st.just("refund"), COSTS),
        "pause": st.tuples(st.just("pause"), st.sampled_from([0.0, 5e4])),
    }[kind]


def _actions(kinds: list[str], waits: tuple[float, ...]) -> st.SearchStrategy[list[Any]]:
    return st.lists(
        st.sampled_from(kinds).flatmap(lambda kind: _action(kind, waits)), max_size=20
    )


SLOW = [Limit(5, 1e6), Limit(1000, 1e6, unit="tokens")]
"""So slow (a token per 1000 s) that the real time between two decisions changes no level by
more than 1e-4."""


def _drive(limiter: Limiter, action: str, arguments: list[Any], held: list[Any]) -> Any:
    """`action` on `limiter`: a decision's outcome (a refusal too), None for the others; a
    reservation joins `held`, which settle and cancel pick from."""
    if action == "try":
        return limiter.try_acquire(arguments[0])
    if action == "reserve":
        try:
            held.append(limiter.reserve(*arguments))
        except RateLimited as refusal:
            return refusal
        return held[-1]
    if action == "settle" and held:
        limiter.settle(held[arguments[0] % len(held)], arguments[1])
    elif action == "cancel" and held:
        limiter.cancel(held[arguments[0] % len(held)])
    elif action == "refund":
        limiter.refund(arguments[0])
    elif action == "pause":
        limiter.pause(arguments[0])
    return None


def _drive_alike(
    shared: RedisLimiter, alone: Limiter, actions: list[tuple[Any, ...]], *, levels: bool
) -> tuple[list[Any], list[Any]]:
    """Drive both limiters alike, checking that they decide alike (and, with `levels`, that
    they hold the same after each action); the reservations each holds."""
    held: tuple[list[Any], list[Any]] = ([], [])
    for action, *arguments in actions:
        ours, theirs = (
            _drive(limiter, action, arguments, reservations)
            for limiter, reservations in zip((shared, alone), held, strict=True)
        )
        if isinstance(theirs, RateLimited):
            assert isinstance(ours, RateLimited)
            assert ours.retry_after == approx(theirs.retry_after, abs=5)
        elif isinstance(theirs, Reservation):
            assert isinstance(ours, Reservation)
            assert ours.delay == approx(theirs.delay, abs=5)
        else:
            assert ours == theirs
        if levels:
            assert shared.levels() == approx(alone.levels(), abs=0.01)
            assert shared.paused_for == approx(alone.paused_for, abs=5)
    return held


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=_actions(["try", "reserve", "settle", "cancel", "pause"], waits=(0.0,)))
@example(  # a pause while a debt, not a call, made a call wait: nobody to hold back
    actions=[
        ("try", {"requests": 2, "tokens": 0}),
        ("try", {"requests": 2, "tokens": 0}),
        ("reserve", {"requests": 0, "tokens": 0}, 0.0),
        ("settle", 0, {"requests": 2, "tokens": 0}),
        ("pause", 50000.0),
    ]
)
def test_decisions_match_the_in_memory_limiter(
    redis_server: RedisServer, actions: list[tuple[Any, ...]]
) -> None:
    """Both limiters, driven alike, decide alike and hold alike, settlements included, while
    calls go at once (queued ones, and permits given back: see the next test)."""
    shared = make(redis_server.url, SLOW, name=uuid.uuid4().hex)
    _drive_alike(shared, Limiter(SLOW), actions, levels=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=_actions(["try", "reserve", "refund", "pause"], waits=(0.0, 2.5e5, math.inf)),
    settlements=st.lists(st.tuples(st.integers(0, 5), st.none() | COSTS), max_size=8),
)
@example(  # a pause while a call waits holds every schedule ahead, on Redis as in memory
    actions=[
        ("pause", 50000.0),
        ("reserve", {"requests": 0, "tokens": 0}, 250000.0),
        ("pause", 50000.0),
    ],
    settlements=[],
)
@example(  # and so does a debt
    actions=[("pause", 50000.0), ("reserve", {"requests": 0, "tokens": 0}, 250000.0)],
    settlements=[(0, {"requests": 0, "tokens": 100})],
)
def test_late_settlements_never_give_back_more_than_in_memory(
    redis_server: RedisServer,
    actions: list[tuple[Any, ...]],
    settlements: list[tuple[int, dict[str, int] | None]],
) -> None:
    """Queued calls and permits given back too: the same decisions, then reservations settled
    late (or cancelled: None). Redis keeps no history of the calls since a reservation, only
    bounds on where their chains end, so it may give back less than the in-memory limiter,
    never more."""
    shared = make(redis_server.url, SLOW, name=uuid.uuid4().hex)
    alone = Limiter(SLOW)
    held = _drive_alike(shared, alone, actions, levels=True)
    for index, actual in settlements:
        action = "settle" if actual is not None else "cancel"
        for limiter, reservations in zip((shared, alone), held, strict=True):
            _drive(limiter, action, [index, actual], reservations)
        expected = alone.levels()
        for label, level in shared.levels().items():
            assert level <= expected[label] + 0.01


def test_one_round_trip_per_decision(redis_url: str) -> None:
    client, _ = from_url(redis_url)
    limiter = RedisLimiter(requests_and_tokens(), client=client, name="model")
    limiter.try_acquire()  # connect first: the handshake is not a decision
    trips = RoundTrips(client)
    limiter.try_acquire()
    trips.reset()  # the counter reconnected once
    decisions: list[Callable[[], Any]] = [
        lambda: limiter.try_acquire({"requests": 1, "tokens": 10}),
        lambda: limiter.reserve({"requests": 1, "tokens": 10}),
        lambda: limiter.wait_time(),
        lambda: limiter.refund(1),
        lambda: limiter.pause(0.01),
        lambda: limiter.snapshot(),
    ]
    for decision in decisions:
        before = trips.sends
        decision()
        assert trips.sends == before + 1, decision
    reservation = limiter.reserve(1)
    trips.reset()
    limiter.settle(reservation, {"requests": 1, "tokens": 3})
    limiter.cancel(reservation)  # settled already: no call at all
    assert trips.sends == 1


def test_the_client_clock_decides_nothing(redis_url: str) -> None:
    """A process whose clock is 5 s ahead (or behind) sees the same schedule: no extra permit."""
    limits = [Limit(10, 10)]
    honest = make(redis_url, limits)
    ahead = make(redis_url, limits, clock=SkewedClock(5.0))
    behind = make(redis_url, limits, clock=SkewedClock(-5.0))
    assert sum(honest.try_acquire() for _ in range(10)) == 10
    assert not ahead.try_acquire()
    assert not behind.try_acquire()
    assert ahead.wait_time() == approx(honest.wait_time(), abs=0.2)
    assert behind.wait_time() == approx(1.0, abs=0.2)
    late = ahead.reserve(1)
    assert late.delay == approx(1.0, abs=0.2)
    assert late.ready_at == approx(ahead._clock.monotonic() + 1.0, abs=0.2)


# -- state: O(1), tagged, expiring -----------------------------------------------------------


def test_state_is_one_small_string_per_key_whatever_the_weights(redis_url: str) -> None:
    limiter = make(redis_url, [Limit(1e9, 60), Limit(1e12, 60, unit="tokens")])
    client = limiter._script.client
    limiter.try_acquire({"requests": 1, "tokens": 1})
    small = client.memory_usage(key())
    for weight in range(1, 2001):
        limiter.try_acquire({"requests": 1, "tokens": weight * 997})
    assert client.type(key()) == b"string"
    # An id per limit; expiry and pause; a tat, a last start, what was given back, a cut each.
    assert client.strlen(key()) == 2 * 8 + 2 * 8 + 2 * 4 * 8
    usage = client.memory_usage(key())
    assert usage is not None and small is not None
    assert usage < 2 * 200
    assert usage == small  # binary doubles: the weights change no size


def test_all_keys_of_a_model_share_one_cluster_slot(redis_url: str) -> None:
    limiter = make(redis_url, name="gpt-4o")
    limiter.try_acquire()
    limiter.pause(1)
    keys = sorted(cast(list[bytes], limiter._script.client.keys("*")))  # bytes: no decode_responses
    assert keys == [b"{rls:gpt-4o}:fleet", b"{rls:gpt-4o}:rate"]
    assert len({key_slot(name) for name in keys}) == 1
    make(redis_url, name="gpt-4o", prefix="team-a").try_acquire()
    assert limiter._script.client.exists("{team-a:gpt-4o}:rate")


def test_keys_expire_once_every_bucket_is_full_again(redis_url: str) -> None:
    """At least 1 s after every bucket is full again; pushed on only when that comes closer
    (to twice the time until full, + 2 s), not on every call. The lower bounds leave the test
    10 s to run on a busy machine."""
    limiter = make(redis_url)
    client = limiter._script.client
    limiter.try_acquire({"requests": 1, "tokens": 50})  # full again in 360 s (the request)
    first = client.pttl(key())
    assert 711_000 < first <= 722_000
    assert 5_000 < client.pttl("{rls:model}:fleet") <= 15_000
    limiter.try_acquire({"tokens": 10})  # full again in 360 s still: the expiry stays
    assert client.pttl(key()) <= first
    limiter.pause(1000)
    assert 1_991_000 < client.pttl(key()) <= 2_002_000
    debt = limiter.reserve({"tokens": 10})
    limiter.settle(debt, {"tokens": 5000})  # it goes after the pause: full 18000 s after it
    assert 37_991_000 < client.pttl(key()) <= 38_002_000
    idle = make(redis_url, [Limit(100, 0.1)], name="fast")  # full again after a millisecond
    idle.try_acquire()
    assert 1_000 < client.pttl(key("fast")) <= 2_003


# -- several processes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer() -> Iterator[ProcessPoolExecutor]:
    """Another process, to share limits with."""
    with ProcessPoolExecutor(max_workers=1, mp_context=processes()) as executor:
        yield executor


def _peer_reserve_and_settle(url: str, estimate: int, actual: int) -> float:
    limiter = make(url)
    reservation = limiter.reserve({"requests": 1, "tokens": estimate})
    before = limiter.levels()[TOKENS]
    limiter.settle(reservation, {"requests": 1, "tokens": actual})
    return before


def _peer_pause(url: str, seconds: float) -> None:
    make(url).pause(seconds)


def test_reservations_and_settlements_are_shared(redis_url: str, peer: ProcessPoolExecutor) -> None:
    here = make(redis_url)
    seen_by_peer = peer.submit(_peer_reserve_and_settle, redis_url, 800, 300).result(timeout=60)
    assert seen_by_peer == approx(200, abs=1)
    assert here.levels()[TOKENS] == approx(700, abs=1)
    assert here.levels()[REQUESTS] == approx(9, abs=0.01)
    peer.submit(_peer_reserve_and_settle, redis_url, 100, 1700).result(timeout=60)
    assert here.levels()[TOKENS] == approx(-1000, abs=1)  # the peer's debt holds us back
    assert here.wait_time({"requests": 1}) == approx(3600, abs=1)


def test_a_pause_is_shared(redis_url: str, peer: ProcessPoolExecutor) -> None:
    here = make(redis_url)
    peer.submit(_peer_pause, redis_url, 30.0).result(timeout=60)
    assert here.paused_for == approx(30, abs=1)
    assert not here.try_acquire()
    with pytest.raises(RateLimited) as refused:
        here.reserve(1, max_wait=10)
    assert refused.value.retry_after == approx(30, abs=1)


def _fleet_member(url: str, name: str, kind: str, seconds: float, start: Any, results: Any) -> None:
    """4 threads (or 4 asyncio tasks) reserve permits one after the other for `seconds`; put
    the times they were due (wall clock: one machine) and this member's time span."""
    limiter = make(url, [Limit(60, 2)], name=name)
    granted: list[float] = []
    start.wait()
    begin = time.time()
    end = begin + seconds

    def worker() -> None:
        while True:
            reservation = limiter.reserve(1, max_wait=10)
            due = time.time() + reservation.delay
            if due > end:
                limiter.cancel(reservation)
                return
            granted.append(due)
            time.sleep(reservation.delay)

    async def task() -> None:
        while True:
            reservation = await limiter.areserve(1, max_wait=10)
            due = time.time() + reservation.delay
            if due > end:
                await limiter.acancel(reservation)
                return
            granted.append(due)
            await asyncio.sleep(reservation.delay)

    if kind == "threads":
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:

        async def tasks() -> None:
            await asyncio.gather(*(task() for _ in range(4)))

        asyncio.run(tasks())
    results.put((begin, end, granted))


@pytest.mark.parametrize("kind", ["threads", "tasks"])
def test_a_fleet_admits_what_one_limit_allows(redis_url: str, kind: str) -> None:
    """4 processes x 4 workers share 60 per 2 s: no window ever holds more permits than one
    limit allows (60 + 30/s), and at least 95 % of that is granted."""
    reports = run_fleet(_fleet_member, (redis_url, "fleet", kind, 2.5), size=4)
    begin = min(report[0] for report in reports)
    end = max(report[1] for report in reports)
    granted = sorted(due for report in reports for due in report[2])
    allowed = 60 + 30 * (end - begin)
    assert 0.95 * allowed <= len(granted) <= allowed + 1
    for width in (0.1, 0.5, 1.0, 2.0):
        most = max(
            sum(1 for due in granted[index:] if due <= first + width)
            for index, first in enumerate(granted)
        )
        assert most <= 60 + 30 * width + 1, (width, most)
    assert all(len(report[2]) > 0 for report in reports)  # every member got its turn


def test_the_local_share_is_learnt_from_the_fleet(redis_url: str) -> None:
    clock = FakeClock()
    fleet = [make(redis_url, clock=clock) for _ in range(4)]
    for member in fleet:
        member.try_acquire()
    clock.advance(5)  # the next heartbeat is due
    for member in fleet:
        member.try_acquire()
    assert [member.local_share for member in fleet] == [0.25] * 4
    client = fleet[0]._script.client
    seconds, micros = client.time()
    client.hset("{rls:model}:fleet", "gone:1", repr(seconds + micros / 1e6 - 60))
    clock.advance(5)
    fleet[0].try_acquire()
    assert fleet[0].local_share == 0.25  # the silent member was dropped
    assert b"gone:1" not in client.hkeys("{rls:model}:fleet")
    fixed = make(redis_url, name="fixed", local_share=0.5)
    fixed.try_acquire()
    assert fixed.local_share == 0.5
    assert not client.exists("{rls:fixed}:fleet")  # no heartbeat when the share is given


# -- clamping to what the provider says remains ------------------------------------------------


def _peer_guided(url: str, headers: dict[str, str]) -> None:
    """A process that got a provider's answer: its guide clamps the limits to the headers."""
    Guide(make(url)).clamp(RateLimitInfo.from_headers(headers))


def test_a_clamp_in_one_process_holds_back_another_to_the_providers_count(
    redis_url: str, peer: ProcessPoolExecutor
) -> None:
    here = make(redis_url)
    counts = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "250",
    }
    peer.submit(_peer_guided, redis_url, counts).result(timeout=60)
    assert here.levels() == {REQUESTS: approx(3, abs=0.01), TOKENS: approx(250, abs=0.1)}
    assert [here.try_acquire() for _ in range(5)] == [True] * 3 + [False] * 2
    more = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "8"}
    peer.submit(_peer_guided, redis_url, more).result(timeout=60)  # calls in flight: not believed
    assert here.levels()[REQUESTS] == approx(0, abs=0.01)


def test_a_clamp_to_nothing_left_waits_for_the_providers_refill_in_every_process(
    redis_url: str, peer: ProcessPoolExecutor
) -> None:
    """10 requests per hour here (one per 360 s); the provider has none left of its 10 and is
    full again only in 2 h, so it is 10 in debt: the next request waits 3,960 s (the debt and one
    request), in a process that never saw the headers."""
    here = make(redis_url)
    spent = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2h0m0s",
    }
    peer.submit(_peer_guided, redis_url, spent).result(timeout=60)
    assert here.wait_time() == approx(3960, abs=1)
    assert not here.try_acquire()
    assert here.reserve(1, max_wait=4000).delay == approx(3960, abs=1)
    # The key's expiry rule holds: the floor (7200 s ahead) set it to twice that + 2 s, and the
    # reservation (full again 7560 s ahead) did not need to push it on. 11 s slack for a slow run.
    assert 14_391_000 < here._script.client.pttl(key()) <= 14_402_000


CLAMPS = {
    "the shortest window without a limit": [("requests", 4, None, None)],
    "the limit nearest the provider's": [("requests", 40, 100, None)],
    "nothing left, the provider's refill": [("requests", 0, 10, 7200.0)],
    "less than one left, the reset alone": [("requests", 0.5, None, 4.0)],
    "a lower provider limit adopted": [("tokens", 250, 500, None)],
    "more than is left: not believed": [("requests", 9, None, None)],
    "no such unit, no count": [("output_tokens", 0, None, None), ("requests", -1, None, None)],
    "the lower hold stays": [("requests", 3, None, None), ("requests", 6, 10, 60.0)],
}


@pytest.mark.parametrize("clamps", CLAMPS.values(), ids=CLAMPS.keys())
def test_a_clamp_on_redis_matches_the_in_memory_clamp(
    redis_url: str, clamps: list[tuple[str, float, float | None, float | None]]
) -> None:
    """Slow limits: the real time between the two limiters' decisions moves no level."""
    limits = [Limit(10, 3600), Limit(100, 86_400), Limit(1000, 3600, unit="tokens")]
    shared, alone = make(redis_url, limits), Limiter(limits, clock=FakeClock())
    for limiter in (shared, alone):
        assert limiter.try_acquire({"requests": 2, "tokens": 100})
        for clamp in clamps:
            limiter.clamp(*clamp)
    assert shared.levels() == approx(alone.levels(), abs=0.01)
    assert shared.wait_time() == approx(alone.wait_time(), abs=0.5)


def test_a_learned_limit_below_a_calls_cost_is_a_clear_error_until_it_lapses(
    redis_url: str,
) -> None:
    """A provider says 30,000 tokens a minute where 2,000,000 are configured: a call of 32,000
    is refused with `CostTooLarge` naming the learned limit, sync and async, and goes once the
    learned limit lapses; a provider limit below one unit is ignored, as in memory."""
    clock = FakeClock()
    limits = [Limit(2_000_000, 60, unit="tokens"), Limit(100, 60)]
    limiter = make(redis_url, limits, clock=clock)
    limiter.clamp("tokens", 30_000, limit=30_000)
    big = {"requests": 1, "tokens": 32_000}

    async def areserve() -> Reservation:
        try:
            return await limiter.areserve(big)
        finally:
            assert limiter._script.aclient is not None
            await limiter._script.aclient.aclose()

    attempts = [
        lambda: limiter.reserve(big),
        lambda: limiter.try_acquire(big),
        lambda: asyncio.run(areserve()),
    ]
    for attempt in attempts:
        with pytest.raises(CostTooLarge) as refused:
            attempt()
        assert refused.value.learned and refused.value.limit == "30000/60s tokens"
        assert refused.value.retry_after == approx(60, abs=0.1)
    limiter.clamp("requests", 50, limit=0.5)  # could not admit one request: malformed
    assert limiter.wait_time({"requests": 60}) > 0.0  # 50 left of the configured 100: a wait
    clock.advance(60)
    assert limiter.reserve(big).delay == 0.0


def test_a_clamp_is_one_round_trip_and_none_without_a_limit_to_hold(redis_url: str) -> None:
    client, _ = from_url(redis_url)
    limiter = RedisLimiter(requests_and_tokens(), client=client, name="model")
    limiter.try_acquire()  # connect first: the handshake is not a decision
    trips = RoundTrips(client)
    limiter.try_acquire()
    trips.reset()  # the counter reconnected once
    limiter.clamp("requests", 0, limit=10, reset=60.0)
    assert trips.sends == 1
    limiter.clamp("output_tokens", 0)
    limiter.clamp("requests", math.nan)
    assert trips.sends == 1


def test_a_clamp_inside_an_event_loop_goes_out_on_the_async_client(redis_url: str) -> None:
    """The guide clamps synchronously; inside the loop the script call is a task, so the loop
    does not wait for Redis."""

    async def scenario() -> None:
        client, aclient = from_url(redis_url)
        limiter = RedisLimiter(requests_and_tokens(), client=client, aclient=aclient, name="m")
        sync_trips, async_trips = RoundTrips(client), RoundTrips(aclient)
        assert await limiter.atry_acquire()  # connect first: the handshake is not a decision
        async_trips.reset()
        limiter.clamp("requests", 3)
        assert (sync_trips.sends, async_trips.sends) == (0, 0)  # returned before any I/O
        await asyncio.gather(*limiter._sending)
        assert (sync_trips.sends, async_trips.sends) == (0, 1)
        await aclient.aclose()

    asyncio.run(scenario())
    assert make(redis_url, name="m").levels()[REQUESTS] == approx(3, abs=0.01)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_clamp_holds_the_local_share_while_redis_is_down(
    own_redis_server: RedisServer, when: str
) -> None:
    """A clamp raises nothing when Redis is down, and the fallback holds this process to its
    share (half) of what the provider said is left, whether Redis died before or after it."""
    clock = FakeClock()
    limiter = make(own_redis_server.url, [Limit(10, 3600)], clock=clock, local_share=0.5)
    deny = make(own_redis_server.url, [Limit(10, 3600)], clock=clock, on_backend_error="deny")
    assert limiter.try_acquire() and deny.try_acquire()  # connected, on Redis
    if when == "before":
        own_redis_server.kill()
    for clamped in (limiter, deny):
        _, seconds = timed(functools.partial(clamped.clamp, "requests", 4))
        assert seconds < 0.5
    if when == "after":
        own_redis_server.kill()
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, False, False]
    assert limiter.snapshot()["redis_available"] is False


def test_absurd_holds_keep_redis_answering_and_the_key_expiring(redis_url: str) -> None:
    """A reset that never ends is no reset. One of 1e300 s, like such a pause, keeps the state
    for the script's longest TTL (1e15 ms) rather than fail the script call: PEXPIRE refuses a
    number in exponent notation, which would take Redis for unavailable."""
    limiter = make(redis_url, [Limit(10, 3600)])
    limiter.clamp("requests", 0, reset=math.inf)
    assert limiter.wait_time() == approx(360, abs=1)  # our own refill: a request every 360 s
    limiter.clamp("requests", 0, reset=1e300)
    limiter.pause(1e300)
    assert limiter.snapshot()["redis_available"] is True
    assert limiter.wait_time() == approx(1e12)  # the script's longest reply
    assert 1e15 - 60_000 < limiter._script.client.pttl(key()) <= 1e15


# -- failures ------------------------------------------------------------------------------


def test_killed_redis_falls_back_to_the_local_share_then_returns(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    limits = [Limit(8, 3600)]
    one, two = (make(own_redis_server.url, limits, clock=clock) for _ in range(2))
    assert one.try_acquire() and two.try_acquire()
    clock.advance(5)
    assert one.try_acquire()  # its heartbeat now counts two members
    assert one.local_share == 0.5
    own_redis_server.kill()
    with caplog.at_level(logging.INFO, logger="rate_limit_shield"):
        outcomes = [timed(one.try_acquire) for _ in range(10)]
        assert max(seconds for _, seconds in outcomes) < 0.5
        assert [granted for granted, _ in outcomes] == [True] * 4 + [False] * 6  # 8 x 0.5
        assert one.snapshot()["redis_available"] is False
        warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "ConnectionError" in warnings[0].getMessage()
        own_redis_server.start()  # on the same port, empty: persistence is off
        clock.advance(2.0)  # the breaker lets one attempt through
        assert one.try_acquire()
        assert one.snapshot()["redis_available"] is True
        assert any("answers again" in r.getMessage() for r in caplog.records)
    assert two.levels()["8/3600s requests"] == approx(7, abs=0.01)  # shared again


def test_killed_redis_under_deny_raises_without_a_network_attempt_per_call(
    own_redis_server: RedisServer,
) -> None:
    clock = FakeClock()
    client, _ = from_url(own_redis_server.url)
    limiter = RedisLimiter([Limit(5, 60)], client=client, clock=clock, on_backend_error="deny")
    held = limiter.reserve(1)
    own_redis_server.kill()
    trips = RoundTrips(client)
    with pytest.raises(BackendUnavailable) as denied:
        limiter.reserve(1)
    assert isinstance(denied.value, ShieldError)
    assert isinstance(denied.value.__cause__, redis.ConnectionError)
    assert denied.value.retry_after == approx(2.0)
    assert "ConnectionError" in str(denied.value)
    attempts = trips.connects
    for _ in range(5):
        with pytest.raises(BackendUnavailable):
            limiter.try_acquire()
    assert trips.connects == attempts  # the breaker keeps calls off the dead server
    limiter.settle(held, 2)  # the call it guarded is over: never raises
    limiter.cancel(held)
    limiter.refund(1)
    limiter.pause(1)
    assert limiter.snapshot()["redis_available"] is False
    clock.advance(2.0)
    with pytest.raises(BackendUnavailable):
        limiter.try_acquire()
    assert trips.connects == attempts + 1  # one attempt per recovery interval


def test_killed_redis_under_allow_grants_at_once(own_redis_server: RedisServer) -> None:
    limiter = make(own_redis_server.url, [Limit(1, 60)], on_backend_error="allow")
    assert limiter.try_acquire()
    own_redis_server.kill()
    assert all(limiter.try_acquire() for _ in range(5))
    granted = limiter.reserve(1)
    assert granted.delay == 0.0
    limiter.settle(granted, 1)
    assert limiter.wait_time() == 0.0


def test_hung_redis_costs_one_timeout_then_resumes(own_redis_server: RedisServer) -> None:
    clock = FakeClock()
    limiter = make(own_redis_server.url, [Limit(100, 60)], clock=clock, local_share=0.5)
    assert limiter.try_acquire()
    own_redis_server.hang()
    outcomes = [timed(limiter.try_acquire) for _ in range(20)]
    assert all(granted for granted, _ in outcomes)
    assert 0.2 <= outcomes[0][1] < 0.5  # one socket timeout
    assert max(seconds for _, seconds in outcomes[1:]) < 0.2  # then no attempt: no timeout
    assert limiter.levels()["100/60s requests"] == approx(50 - 20, abs=0.1)  # local, half
    own_redis_server.resume()
    clock.advance(2.0)
    assert limiter.try_acquire()
    assert limiter.snapshot()["redis_available"] is True


def test_noscript_after_a_flush_reloads_in_the_same_call(redis_url: str) -> None:
    client, _ = from_url(redis_url)
    limiter = RedisLimiter([Limit(10, 60)], client=client, name="model")
    trips = RoundTrips(client)
    assert limiter.try_acquire()  # connects: the handshake is not counted below
    client.script_flush()
    trips.reset()
    assert limiter.try_acquire()
    assert trips.sends == 2  # EVALSHA refused, EVAL runs and caches it
    trips.reset()
    assert limiter.try_acquire()
    assert trips.sends == 1
    assert limiter.levels()["10/60s requests"] == approx(7, abs=0.1)


@pytest.mark.parametrize("mode", ["local", "deny"])
def test_redis_dying_during_the_call_keeps_its_result(
    own_redis_server: RedisServer, mode: str
) -> None:
    limiter = make(own_redis_server.url, on_backend_error=mode)
    shield = Shield(limiter, cost=lambda: {"tokens": 100}, usage=lambda result: {"tokens": result})

    def call() -> int:
        own_redis_server.kill()
        return 42

    assert shield.call(call) == 42


# -- asyncio ---------------------------------------------------------------------------------


class ParkedClock(FakeClock):
    """`asleep` parks until cancelled, and says when it started to."""

    def __init__(self) -> None:
        super().__init__()
        self.parked = asyncio.Event()

    async def asleep(self, seconds: float) -> None:
        self.parked.set()
        await asyncio.Event().wait()


def test_async_decisions(redis_url: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        limiter = make(redis_url, [Limit(2, 10), Limit(1000, 3600, unit="tokens")], clock=clock)
        assert await limiter.atry_acquire({"requests": 1, "tokens": 100})
        delays = [(await limiter.areserve(1)).delay for _ in range(3)]
        assert delays == approx([0.0, 5.0, 10.0], abs=0.2)
        with pytest.raises(RateLimited):
            await limiter.areserve(1, max_wait=0.1)
        held = await limiter.areserve({"requests": 0, "tokens": 500})
        await limiter.asettle(held, {"tokens": 200})
        await limiter.acancel(held)  # settled already
        await limiter.arefund({"tokens": 100})
        assert limiter.levels()["1000/3600s tokens"] == approx(797, abs=0.5)
        await limiter.apause(20)
        assert limiter.paused_for == approx(20, abs=0.5)
        granted = await limiter.aacquire(1)
        # after the three calls waiting (until 5, 10 and 10 s), each held back by the pause
        assert granted.delay == approx(35, abs=0.5)
        assert clock.sleeps == [granted.delay]
        await limiter._script.aclient.aclose()  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_cancelled_aacquire_gives_its_permit_back(redis_url: str) -> None:
    async def scenario() -> None:
        clock = ParkedClock()
        limiter = make(redis_url, [Limit(1, 60)], clock=clock)
        await limiter.aacquire()
        waiter = asyncio.create_task(limiter.aacquire())
        await clock.parked.wait()
        assert limiter.wait_time() == approx(120, abs=0.5)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert limiter.wait_time() == approx(60, abs=0.5)
        await limiter._script.aclient.aclose()  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_async_one_round_trip_and_noscript(redis_url: str) -> None:
    async def scenario() -> None:
        client, aclient = from_url(redis_url)
        trips = RoundTrips(aclient)
        limiter = RedisLimiter([Limit(10, 60)], client=client, aclient=aclient, name="model")
        assert await limiter.atry_acquire()
        trips.reset()
        await limiter.areserve(1)
        assert trips.sends == 1
        client.script_flush()
        trips.reset()
        assert await limiter.atry_acquire()
        assert trips.sends == 2
        await aclient.aclose()

    asyncio.run(scenario())


def test_an_async_shield_call_talks_to_redis_without_blocking_the_loop(redis_url: str) -> None:
    """`await Shield.acall` must use the limiter's async twins: a sync call to Redis inside the
    event loop stalls every task for a round trip, and for a whole timeout when Redis hangs."""

    async def scenario() -> None:
        client, aclient = from_url(redis_url)
        limiter = RedisLimiter([Limit(10, 60)], client=client, aclient=aclient, name="model")
        sync_trips, async_trips = RoundTrips(client), RoundTrips(aclient)
        shield = Shield(limiter, cost=lambda: 1, usage=lambda result: 1)

        async def call() -> int:
            return 42

        assert await shield.acall(call) == 42
        assert (sync_trips.sends, async_trips.sends > 0) == (0, True)
        await aclient.aclose()

    asyncio.run(scenario())


def test_async_without_an_async_client_uses_a_thread(redis_url: str) -> None:
    client, _ = from_url(redis_url)
    limiter = RedisLimiter([Limit(1, 60)], client=client)
    assert asyncio.run(limiter.atry_acquire())
    assert not asyncio.run(limiter.atry_acquire())


def test_async_faults_killed_and_hung(own_redis_server: RedisServer) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        local = make(own_redis_server.url, [Limit(10, 60)], clock=clock, local_share=0.5)
        deny = make(own_redis_server.url, [Limit(10, 60)], clock=clock, on_backend_error="deny")
        assert await local.atry_acquire() and await deny.atry_acquire()
        own_redis_server.hang()
        started = time.perf_counter()
        granted = [await local.atry_acquire() for _ in range(10)]
        assert time.perf_counter() - started < 0.5
        assert granted == [True] * 5 + [False] * 5
        own_redis_server.resume()
        clock.advance(13.0)  # past the breaker's recovery, and a local permit (every 12 s) back
        assert await local.atry_acquire()
        assert local.snapshot()["redis_available"] is True
        own_redis_server.kill()
        with pytest.raises(BackendUnavailable):
            await deny.areserve(1)
        started = time.perf_counter()
        assert await local.atry_acquire()  # the local permit regained meanwhile
        assert time.perf_counter() - started < 0.5
        await local._script.aclient.aclose()  # type: ignore[union-attr]
        await deny._script.aclient.aclose()  # type: ignore[union-attr]

    asyncio.run(scenario())
