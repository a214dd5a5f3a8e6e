"""The GCRA limiter: refill, atomic multi-limit, FIFO reservations, cancel/settle, pause, input."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time

import pytest
from freezegun import freeze_time
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rate_limit_shield import _chains as chains_module
from rate_limit_shield._chains import KEPT
from rate_limit_shield.errors import ConfigError, RateLimited
from rate_limit_shield.limiter import SETTLE_WITHIN, Limit, Limiter, Reservation, TokenBucket
from rate_limit_shield.testing import FakeClock

approx = pytest.approx


def bucket(capacity: float = 10, rate: float = 1, clock: FakeClock | None = None) -> TokenBucket:
    return TokenBucket(capacity, rate, clock=clock or FakeClock(), name="test")


def requests_and_tokens(clock: FakeClock) -> Limiter:
    """10 requests and 1000 tokens per minute."""
    return Limiter([Limit(10, 60), Limit(1000, 60, "tokens")], clock=clock, name="gpt")


def test_limit_capacity_rate_and_label() -> None:
    assert Limit(60, 60).capacity == 60
    assert Limit(60, 60).rate == 1.0
    assert Limit(60, 60).unit == "requests"
    assert Limit(100, 10, burst=5).capacity == 5
    assert str(Limit(30_000, 60, "tokens")) == "30000/60s tokens"
    assert str(Limit(0.5, 1, burst=2)) == "0.5/1s requests burst 2"


# -- the seed's API -------------------------------------------------------------------------


def test_token_bucket_seed_api() -> None:
    clock = FakeClock()
    seed = TokenBucket(10, 1, clock=clock)
    assert (seed.capacity, seed.refill_rate) == (10, 1)
    assert seed.available == 10
    assert [seed.try_acquire() for _ in range(11)] == [True] * 10 + [False]
    assert seed.available == 0
    assert seed.wait_time() == approx(1.0)
    assert seed.wait_time(4) == approx(4.0)
    clock.advance(0.5)
    assert seed.available == approx(0.5)
    assert not seed.try_acquire()
    clock.advance(0.5)
    assert seed.wait_time() == 0.0
    assert seed.try_acquire()


def test_token_bucket_with_the_system_clock() -> None:
    assert TokenBucket(10, 1).try_acquire()


# -- refill arithmetic ------------------------------------------------------------------------


def test_refills_continuously_up_to_capacity() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    assert limiter.try_acquire(60)
    assert limiter.available == 0
    clock.advance(30)
    assert limiter.available == approx(30)
    clock.advance(1000)
    assert limiter.available == 60
    assert limiter.levels() == {"60/60s requests": 60}


def test_burst_caps_what_accumulates_not_the_rate() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(100, 10, burst=5)], clock=clock)  # 10/s, at most 5 at once
    assert [limiter.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    clock.advance(0.1)
    assert limiter.available == approx(1.0)
    assert limiter.try_acquire()
    clock.advance(60)
    assert limiter.available == 5


def test_fractional_costs() -> None:
    clock = FakeClock()
    limiter = bucket(1, 1, clock)
    assert limiter.try_acquire(0.5)
    assert limiter.try_acquire(0.5)
    assert not limiter.try_acquire(0.25)
    clock.advance(0.25)
    assert limiter.try_acquire(0.25)


def test_a_whole_burst_survives_float_rounding() -> None:
    clock = FakeClock(start=12345.678)
    limiter = Limiter([Limit(10, 1)], clock=clock)  # T = 0.1, not exact in binary
    for _ in range(5):
        assert [limiter.try_acquire() for _ in range(11)] == [True] * 10 + [False]
        clock.advance(1.0)


# -- several limits, taken atomically ---------------------------------------------------------


def test_a_refusal_by_one_limit_charges_none() -> None:
    clock = FakeClock()
    limiter = requests_and_tokens(clock)
    cost = {"requests": 1, "tokens": 600}
    assert limiter.try_acquire(cost)
    assert not limiter.try_acquire(cost)  # only 400 tokens left
    assert limiter.levels() == {"10/60s requests": 9, "1000/60s tokens": 400}
    with pytest.raises(RateLimited):
        limiter.reserve(cost, max_wait=0)
    assert limiter.levels() == {"10/60s requests": 9, "1000/60s tokens": 400}


def test_a_number_cost_is_charged_to_every_limit() -> None:
    limiter = requests_and_tokens(FakeClock())
    assert limiter.try_acquire(5)
    assert limiter.levels() == {"10/60s requests": 5, "1000/60s tokens": 995}


def test_mapping_costs_by_unit() -> None:
    clock = FakeClock()
    units = ["tokens", "input_tokens", "output_tokens"]
    limits = [Limit(100, 60, unit) for unit in units] + [Limit(10, 60)]
    limiter = Limiter(limits, clock=clock)
    assert limiter.try_acquire({"input_tokens": 30, "output_tokens": 20})
    # "tokens" defaults to input + output; "requests" is missing, so 0.
    assert list(limiter.levels().values()) == [50, 70, 80, 10]
    assert limiter.try_acquire({"tokens": 5, "input_tokens": 30, "requests": 1})
    assert list(limiter.levels().values()) == [45, 40, 80, 9]


def test_every_limit_gates_the_wait() -> None:
    clock = FakeClock()
    limiter = requests_and_tokens(clock)
    assert limiter.try_acquire({"requests": 1, "tokens": 1000})
    # Requests are plentiful, tokens come back at 1000/60 per second.
    assert limiter.wait_time({"requests": 1, "tokens": 100}) == approx(6.0)
    reservation = limiter.reserve({"requests": 1, "tokens": 100})
    assert reservation.delay == approx(6.0)
    assert reservation.ready_at == approx(6.0)


# -- FIFO reservations --------------------------------------------------------------------------


def test_a_big_request_queued_first_is_not_overtaken() -> None:
    clock = FakeClock()
    limiter = bucket(10, 1, clock)
    assert limiter.try_acquire(8)
    big = limiter.reserve(10)
    assert big.delay == approx(8.0)  # needs 10, has 2
    assert not limiter.try_acquire(1)  # 2 tokens are there, but promised to `big`
    small = limiter.reserve(1)
    assert small.ready_at == approx(9.0) and small.ready_at > big.ready_at
    assert limiter.available == 0
    assert limiter.levels()["1/1s requests burst 10"] == approx(-9)
    assert clock.sleeps == []  # the primitive never waits itself


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("reserve"), st.integers(1, 10), st.integers(0, 300)),
            st.tuples(st.just("advance"), st.floats(0, 30), st.just(0)),
        ),
        max_size=40,
    )
)
def test_reservations_are_ready_in_arrival_order(steps: list[tuple[str, float, int]]) -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(10, 60), Limit(300, 60, "tokens", burst=100)], clock=clock)
    ready = [-math.inf]
    for action, value, tokens in steps:
        if action == "advance":
            clock.advance(value)
            continue
        cost = {"requests": value, "tokens": min(tokens, 100)}
        reservation = limiter.reserve(cost)
        assert reservation.ready_at >= ready[-1] - 1e-9
        assert reservation.ready_at >= clock.monotonic()
        assert reservation.delay == approx(reservation.ready_at - clock.monotonic(), abs=1e-9)
        ready.append(reservation.ready_at)


def test_asyncio_tasks_are_spaced_by_the_rate_in_arrival_order() -> None:
    clock = FakeClock()
    limiter = bucket(1, 1, clock)

    async def main() -> list[Reservation]:
        return await asyncio.gather(*(limiter.aacquire() for _ in range(5)))

    reservations = asyncio.run(main())
    ready = [reservation.ready_at for reservation in reservations]
    assert all(later - earlier >= 1.0 - 1e-9 for earlier, later in itertools.pairwise(ready))
    assert len(clock.sleeps) == 4  # the first went at once


# -- timeouts ---------------------------------------------------------------------------------


def test_timeout_raises_rate_limited_with_the_wait_and_charges_nothing() -> None:
    clock = FakeClock()
    limiter = bucket(10, 1, clock)
    assert limiter.try_acquire(10)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire(3, timeout=2)
    assert refused.value.retry_after == approx(3.0)
    assert refused.value.key == "test"
    with pytest.raises(RateLimited):
        limiter.reserve(3, max_wait=2.5)
    assert clock.sleeps == []
    clock.advance(1)
    assert limiter.available == approx(1.0)  # nothing was charged by the refusals
    reservation = limiter.acquire(3, timeout=2)  # now the wait is exactly 2
    assert clock.sleeps == [approx(2.0)]
    assert reservation.ready_at == approx(3.0)
    assert limiter.available == 0


def test_async_timeout_raises_rate_limited() -> None:
    clock = FakeClock()
    limiter = bucket(10, 1, clock)
    assert limiter.try_acquire(10)
    with pytest.raises(RateLimited) as refused:
        asyncio.run(limiter.aacquire(5, timeout=1))
    assert refused.value.retry_after == approx(5.0)
    assert limiter.wait_time(1) == approx(1.0)


def test_a_deadline_already_past_refuses_even_an_immediate_permit() -> None:
    limiter = bucket()
    with pytest.raises(RateLimited) as refused:
        limiter.reserve(1, max_wait=-0.1)
    assert refused.value.retry_after == 0.0
    assert limiter.available == 10


def test_acquire_without_a_wait_does_not_sleep() -> None:
    clock = FakeClock()
    limiter = bucket(10, 1, clock)
    reservation = limiter.acquire(4, timeout=0)
    assert (reservation.delay, reservation.ready_at) == (0.0, 0.0)
    assert asyncio.run(limiter.aacquire(6)).delay == 0.0
    assert clock.sleeps == []


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_gives_the_tokens_back_once() -> None:
    limiter = bucket()
    first = limiter.reserve(5)
    limiter.reserve(5)
    limiter.cancel(first)
    limiter.cancel(first)
    assert limiter.available == 5


def test_cancelling_a_queued_reservation_frees_its_slot() -> None:
    limiter = bucket()
    assert limiter.try_acquire(10)
    queued = limiter.reserve(5)
    assert queued.delay == approx(5.0)
    limiter.cancel(queued)
    assert limiter.wait_time(1) == approx(1.0)


def test_keyboard_interrupt_during_the_sleep_gives_the_tokens_back() -> None:
    class InterruptedClock(FakeClock):
        def sleep(self, seconds: float) -> None:
            raise KeyboardInterrupt

    limiter = bucket(10, 1, InterruptedClock())
    assert limiter.try_acquire(7)
    with pytest.raises(KeyboardInterrupt):
        limiter.acquire(5)
    assert limiter.available == approx(3.0)
    assert limiter.try_acquire(3)


def test_a_task_cancelled_during_aacquire_gives_the_tokens_back() -> None:
    clock = FakeClock()
    limiter = bucket(10, 1, clock)
    assert limiter.try_acquire(10)

    async def main() -> None:
        task = asyncio.create_task(limiter.aacquire(5))
        await asyncio.sleep(0)  # the task reserves and starts its (virtual) 5 s sleep
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert clock.sleeps == [approx(5.0)]
    # 5 s refilled 5 tokens; without the refund they would all be promised to the task.
    assert limiter.available == approx(5.0)


def test_a_reservation_belongs_to_its_limiter() -> None:
    reservation = bucket().reserve()
    with pytest.raises(ValueError, match="was not made by"):
        bucket().cancel(reservation)


# -- settle -------------------------------------------------------------------------------------


def test_settle_refunds_an_overestimate_once() -> None:
    limiter = Limiter([Limit(1000, 60, "tokens")], clock=FakeClock())
    reservation = limiter.reserve({"tokens": 500})
    limiter.settle(reservation, {"tokens": 200})
    assert limiter.available == approx(800)
    limiter.settle(reservation, {"tokens": 0})
    limiter.cancel(reservation)
    assert limiter.available == approx(800)


def test_settle_charges_an_underestimate_as_debt() -> None:
    clock = FakeClock()
    limiter = requests_and_tokens(clock)
    reservation = limiter.reserve({"requests": 1, "tokens": 500})
    limiter.settle(reservation, {"requests": 1, "tokens": 1500})  # beyond capacity: allowed
    assert limiter.levels() == approx({"10/60s requests": 9, "1000/60s tokens": -500})
    assert limiter.available == 9
    # The debt holds back even a request that charges no tokens, until it is repaid (30 s).
    assert limiter.wait_time({"requests": 1}) == approx(30.0)
    assert limiter.wait_time({"requests": 1, "tokens": 100}) == approx(36.0)
    clock.advance(30)
    assert limiter.try_acquire({"requests": 1})


def test_settle_after_cancel_changes_nothing() -> None:
    limiter = bucket()
    reservation = limiter.reserve(4)
    limiter.cancel(reservation)
    limiter.settle(reservation, 10)
    assert limiter.available == 10


def test_a_bad_settle_leaves_the_reservation_open() -> None:
    limiter = bucket()
    reservation = limiter.reserve(4)
    with pytest.raises(ValueError, match="actual must be a finite number >= 0, got -1"):
        limiter.settle(reservation, -1)
    limiter.settle(reservation, 1)
    assert limiter.available == approx(9)


# -- pause --------------------------------------------------------------------------------------


def test_pause_holds_everyone_until_it_ends() -> None:
    clock = FakeClock()
    limiter = bucket(10, 1, clock)
    limiter.pause(5)
    assert limiter.paused_for == 5
    assert not limiter.try_acquire()
    assert limiter.wait_time() == 5
    reservation = limiter.reserve()
    assert (reservation.ready_at, reservation.delay) == (5, 5)
    multi = requests_and_tokens(clock)
    multi.pause(2)
    assert not multi.try_acquire({"requests": 1})
    clock.advance(5)
    assert limiter.paused_for == 0.0
    assert limiter.try_acquire()
    assert multi.try_acquire({"requests": 1})


def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    clock = FakeClock()
    limiter = bucket(10, 1, clock)
    limiter.pause(10)
    limiter.pause(2)
    assert limiter.paused_for == 10
    clock.advance(4)
    limiter.pause(7)
    assert limiter.paused_for == 7


def test_reservations_made_during_a_pause_are_spaced_by_their_costs_after_it() -> None:
    """A pause longer than the bucket takes to refill lets the first burst go when it ends,
    not the next one with it (both went at 10 s: 100 against a burst of 50)."""
    clock = FakeClock()
    limiter = Limiter([Limit(50, 1)], clock=clock)
    limiter.pause(10)
    delays = [limiter.reserve(50).delay for _ in range(2)]
    assert delays == approx([10, 11])


def test_a_call_held_back_by_one_limit_is_charged_to_the_others_when_it_goes() -> None:
    """A call waiting for tokens until 10 s takes its request then, not at once: ten more
    requests at 10 s would make 11 in a window of 10."""
    clock = FakeClock()
    limiter = Limiter([Limit(10, 10), Limit(1000, 10, "tokens")], clock=clock)
    assert limiter.try_acquire({"tokens": 1000})
    waiting = limiter.reserve({"requests": 1, "tokens": 1000})
    assert waiting.delay == 10
    clock.advance(10)
    admitted = sum(limiter.try_acquire({"requests": 1}) for _ in range(10))
    assert 1 + admitted == 10


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"amount": 0, "per_seconds": 60}, "Limit amount must be a finite number > 0, got 0"),
        ({"amount": -5, "per_seconds": 60}, "Limit amount .* got -5"),
        ({"amount": math.nan, "per_seconds": 60}, "Limit amount .* got nan"),
        ({"amount": math.inf, "per_seconds": 60}, "Limit amount .* got inf"),
        ({"amount": True, "per_seconds": 60}, "Limit amount .* got True"),
        ({"amount": "60", "per_seconds": 60}, "Limit amount .* got '60'"),
        ({"amount": 60, "per_seconds": 0}, "Limit per_seconds .* got 0"),
        ({"amount": 60, "per_seconds": -1.0}, "Limit per_seconds .* got -1.0"),
        ({"amount": 60, "per_seconds": math.nan}, "Limit per_seconds .* got nan"),
        ({"amount": 60, "per_seconds": 60, "burst": 0}, "Limit burst .* got 0"),
        ({"amount": 60, "per_seconds": 60, "burst": -2}, "Limit burst .* got -2"),
        ({"amount": 60, "per_seconds": 60, "burst": math.nan}, "Limit burst .* got nan"),
        ({"amount": 60, "per_seconds": 60, "unit": "bananas"}, "Limit unit .* got 'bananas'"),
    ],
)
def test_bad_limits_are_refused_by_name(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Limit(**fields)  # type: ignore[arg-type]


def test_bad_limiters_are_refused() -> None:
    with pytest.raises(ConfigError, match="Limit objects, got 60"):
        Limiter([60])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="repeat"):
        Limiter([Limit(60, 60), Limit(60.0, 60)])
    with pytest.raises(ValueError, match="capacity must be a finite number > 0, got 0"):
        TokenBucket(0, 1)
    with pytest.raises(ValueError, match="refill_rate must be a finite number > 0, got -1"):
        TokenBucket(10, -1)


@pytest.mark.parametrize(
    ("cost", "message"),
    [
        (-1, "cost must be a finite number >= 0, got -1"),
        (math.nan, "cost must be a finite number >= 0, got nan"),
        (math.inf, "cost must be a finite number >= 0, got inf"),
        ("1", "cost must be a finite number >= 0, got '1'"),
        (11, "cost 11 exceeds the capacity of limit 10/60s requests"),
        ({"tokens": 1001}, "exceeds the capacity of limit 1000/60s tokens"),
        ({"input_tokens": 600, "output_tokens": 600}, "exceeds the capacity of limit 1000/60s"),
        ({"tokens": -3}, r"cost\['tokens'\] must be a finite number >= 0, got -3"),
        ({"images": 1}, "cost has unknown unit 'images'"),
    ],
)
def test_bad_costs_are_refused_at_once(cost: object, message: str) -> None:
    clock = FakeClock()
    limiter = requests_and_tokens(clock)
    single = Limiter([Limit(10, 60)], clock=clock)
    calls = [
        lambda: limiter.try_acquire(cost),  # type: ignore[arg-type]
        lambda: limiter.reserve(cost),  # type: ignore[arg-type]
        lambda: limiter.acquire(cost),  # type: ignore[arg-type]
        lambda: limiter.wait_time(cost),  # type: ignore[arg-type]
    ]
    if not isinstance(cost, dict):
        calls += [
            lambda: single.try_acquire(cost),  # type: ignore[arg-type]
            lambda: single.reserve(cost),  # type: ignore[arg-type]
        ]
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call()
    assert clock.sleeps == []
    assert limiter.levels() == {"10/60s requests": 10, "1000/60s tokens": 1000}


def test_bad_waits_are_refused() -> None:
    limiter = bucket()
    with pytest.raises(ValueError, match="max_wait must be a number of seconds, got nan"):
        limiter.reserve(1, max_wait=math.nan)
    with pytest.raises(ValueError, match="timeout must be a number of seconds or None, got nan"):
        limiter.acquire(1, timeout=math.nan)
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0, got -1"):
        limiter.pause(-1)
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0, got nan"):
        limiter.pause(math.nan)
    assert limiter.available == 10 and limiter.paused_for == 0.0


# -- the system clock, frozen and real ------------------------------------------------------------


def test_works_under_freezegun_with_the_system_clock() -> None:
    with freeze_time("2024-01-01") as frozen:
        limiter = TokenBucket(2, 1)
        assert limiter.try_acquire() and limiter.try_acquire()
        assert not limiter.try_acquire()
        assert limiter.wait_time() == approx(1.0)
        frozen.tick(1)
        assert limiter.try_acquire()
        assert not limiter.try_acquire()


def test_threads_never_get_more_than_the_rate_allows() -> None:
    capacity, rate = 20, 200.0
    started = time.monotonic()
    limiter = TokenBucket(capacity, rate)
    admitted = [0] * 16

    def hammer(index: int) -> None:
        while time.monotonic() - started < 0.5:
            if limiter.try_acquire():
                admitted[index] += 1

    threads = [threading.Thread(target=hammer, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert capacity <= sum(admitted) <= capacity + rate * elapsed + 1


# -- late refunds: only what no call since could have used comes back ---------------------------


def test_a_late_settle_gives_back_nothing_a_later_call_already_took() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(1000, 60, "input_tokens")], clock=clock)  # itpm 1000
    call_a = limiter.reserve({"input_tokens": 1000})  # estimated 1000, really uses 100
    clock.advance(60.0)  # A lasted a minute: its slot is over, the bucket full again
    assert limiter.try_acquire({"input_tokens": 1000})  # B1 takes all of it
    limiter.settle(call_a, {"input_tokens": 100})
    assert not limiter.try_acquire({"input_tokens": 900})  # B2 would make it 1,900 at once
    assert limiter.levels() == {"1000/60s input_tokens": approx(0.0)}


def test_a_refund_does_not_bunch_later_calls_behind_a_queue() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(1, 1)], clock=clock)  # 1 per second, 1 at once
    call_a = limiter.reserve(1)
    queued = limiter.reserve(1)
    assert queued.ready_at == approx(1.0)
    clock.advance(0.5)
    limiter.settle(call_a, 0.1)
    # B goes at 1 s whatever A gave back: a bucket charged real costs when calls go holds
    # 0.9 again only at 1.9 s. Giving back A's unused tail (0.5) would let this go at 1.4 s.
    assert limiter.reserve(0.9).ready_at == approx(1.9)


def test_a_reservation_cancelled_after_the_rate_recovered_gives_back_units_not_seconds() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(10, 10)], clock=clock)  # 1 per second, a burst of 10
    limiter.scale_rates(0.5)  # an adaptive cut: one every 2 s
    assert limiter.try_acquire(10)
    queued = limiter.reserve(10)
    assert queued.delay == approx(20.0)
    limiter.scale_rates(1.0)  # recovered
    limiter.cancel(queued)
    assert sum(limiter.try_acquire() for _ in range(30)) == 0  # 10 at t=0, not 20
    clock.advance(1.0)
    assert limiter.try_acquire() and not limiter.try_acquire()


def test_a_refund_comes_back_in_full_while_later_calls_queue_far_enough_behind() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(3000, 1, "tokens")], clock=clock)  # a bucket of one second
    estimate, used = {"tokens": 566}, {"tokens": 309}
    streaming = limiter.reserve(estimate)
    for _ in range(10):
        limiter.reserve(estimate)  # the last goes at 1.075 s
    clock.advance(1.5)  # the stream lasts longer than the bucket takes to fill
    before = limiter.levels()["3000/1s tokens"]
    assert before == approx(3000 - 11 * 566 + 1.5 * 3000)
    limiter.settle(streaming, used)
    assert limiter.levels()["3000/1s tokens"] == approx(before + 566 - 309)


def test_settles_out_of_order_each_give_back_in_full_when_nothing_came_between() -> None:
    limiter = Limiter([Limit(1000, 60, "tokens")], clock=FakeClock())
    first, second = limiter.reserve({"tokens": 400}), limiter.reserve({"tokens": 400})
    limiter.settle(second, {"tokens": 100})
    limiter.settle(first, {"tokens": 100})
    assert limiter.available == approx(800)


def test_a_reservation_settled_long_after_the_latest_one_gets_nothing_back() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(2, 3600)], clock=clock)  # one every 30 minutes
    held = limiter.reserve(2)
    clock.advance(SETTLE_WITHIN + 1.0)
    assert not limiter.try_acquire()  # a decision: the limiter stops keeping the history
    limiter.cancel(held)
    assert limiter.available == approx((SETTLE_WITHIN + 1.0) / 1800)


def test_the_chains_a_limit_keeps_stay_bounded() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(1e9, 1.0, "tokens")], clock=clock)
    for size in range(10_000):  # growing costs: each new chain outgrows none of the others
        limiter.reserve({"tokens": size})
    assert limiter._chains is not None and len(limiter._chains[0]) <= KEPT


# -- properties: against a provider's bucket, charged each call's real cost when it goes ------

CAPACITY, RATE = 50.0, 10.0  # tokens: 100 per 10 s with a burst of 50


class ProviderBucket:
    """The reference: each call charged its real cost when it goes (FIFO), as a provider does."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []  # [when it goes, what it costs], in arrival order

    def take(self, start: float, cost: float) -> list[float]:
        call = [start, cost]
        self.calls.append(call)
        return call

    def tat(self) -> float:
        tat = -math.inf
        for start, cost in self.calls:
            tat = max(tat, start) + cost / RATE
        return tat

    def level(self, now: float) -> float:
        return CAPACITY - (max(self.tat(), now) - now) * RATE

    def overdrawn(self) -> list[float]:
        """The calls that found less than their real cost in the bucket when they went."""
        level, then, short = CAPACITY, -math.inf, []
        for start, cost in sorted(self.calls, key=lambda call: call[0]):
            level = min(CAPACITY, level + (start - then) * RATE) if then > -math.inf else level
            then = start
            if level < cost - 1e-6:
                short.append(start)
            level -= cost
        return short


STEPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["reserve", "try"]), st.integers(0, 50)),
        st.tuples(st.sampled_from(["settle", "cancel"]), st.integers(0, 200)),
        st.tuples(st.just("advance"), st.floats(0, 20)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, kept=st.sampled_from([KEPT, 2]))
def test_the_limiter_holds_what_a_provider_charging_real_costs_would_hold(
    steps: list[tuple[str, float]], kept: int
) -> None:
    """Exactly, while it keeps every chain; never more once it merges old ones (`kept` 2)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chains_module, "KEPT", kept)
        run_against_a_provider(steps, exact=kept == KEPT)


def run_against_a_provider(steps: list[tuple[str, float]], *, exact: bool) -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(100, 10, "tokens", burst=50)], clock=clock)
    provider = ProviderBucket()
    held: list[tuple[Reservation, list[float]]] = []
    for action, value in steps:
        cost = {"tokens": value}
        if action == "advance":
            clock.advance(value)
        elif action == "reserve":
            reservation = limiter.reserve(cost)
            held.append((reservation, provider.take(reservation.ready_at, value)))
        elif action == "try":
            margin = provider.level(clock.monotonic()) - value
            granted = limiter.try_acquire(cost)
            if abs(margin) > 1e-6 and exact:  # not a float-rounding tie
                assert granted == (margin > 0)
            if granted:
                provider.take(clock.monotonic(), value)
        elif held:
            reservation, call = held.pop(int(value) % len(held))
            if action == "settle":
                call[1] *= (value % 100) / 100
                limiter.settle(reservation, {"tokens": call[1]})
            else:
                call[1] = 0.0
                limiter.cancel(reservation)
        level = limiter.levels()["100/10s tokens burst 50"]
        reference = provider.level(clock.monotonic())
        if exact:
            assert level == approx(reference, abs=1e-6)
        else:
            assert level <= reference + 1e-6
    assert provider.overdrawn() == []


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["reserve", "try"]), st.integers(0, 50)),
            st.tuples(st.sampled_from(["settle", "cancel"]), st.integers(0, 200)),
            st.tuples(st.just("advance"), st.floats(0, 20)),
            st.tuples(st.just("scale"), st.floats(0.05, 1.0)),
            st.tuples(st.just("clamp"), st.floats(50, 150)),
        ),
        max_size=60,
    )
)
@example(steps=[("reserve", 50), ("advance", 5.0), ("try", 50), ("settle", 10), ("try", 45)])
@example(steps=[("reserve", 1), ("reserve", 50), ("settle", 0), ("reserve", 1)])
@example(  # a recovery must not compress the wait before a call already queued
    steps=[
        ("scale", 0.25),
        ("reserve", 42),
        ("reserve", 50),
        ("advance", 16.0),
        ("scale", 0.5),
        ("reserve", 2),
    ]
)
def test_no_window_admits_more_than_its_capacity_and_refill_whatever_the_order(
    steps: list[tuple[str, float]],
) -> None:
    """Calls charged their real cost when they go never overdraw a bucket of the configured
    capacity and rate, whatever reserve, settle, cancel, adaptive cuts and provider limits (each
    adopted for a window, then lapsing) do meanwhile."""
    clock = FakeClock()
    limiter = Limiter([Limit(100, 10, "tokens", burst=50)], clock=clock)
    provider = ProviderBucket()
    held: list[tuple[Reservation, list[float]]] = []
    for action, value in steps:
        if action == "advance":
            clock.advance(value)
        elif action == "scale":
            limiter.scale_rates(value)
        elif action == "clamp":  # a provider's limit of `value` (a full bucket: no floor)
            limiter.clamp("tokens", CAPACITY, limit=value)
        elif action == "reserve":
            reservation = limiter.reserve({"tokens": value})
            held.append((reservation, provider.take(reservation.ready_at, value)))
        elif action == "try":
            if limiter.try_acquire({"tokens": value}):
                provider.take(clock.monotonic(), value)
        elif held:
            reservation, call = held.pop(int(value) % len(held))
            used = call[1] * (value % 100) / 100 if action == "settle" else 0.0
            limiter.settle(reservation, {"tokens": used})
            call[1] = used
    assert provider.overdrawn() == []


def test_refund_gives_back_a_cost_taken_by_try_acquire() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(10, 60), Limit(1000, 60, unit="tokens")], clock=clock)
    cost = {"requests": 1, "tokens": 300}
    assert limiter.try_acquire(cost)
    assert limiter.levels() == {"10/60s requests": 9.0, "1000/60s tokens": 700.0}
    limiter.refund(cost)
    assert limiter.levels() == {"10/60s requests": 10.0, "1000/60s tokens": 1000.0}
    limiter.refund(cost)  # more than was taken: the level stays at capacity
    assert limiter.levels() == {"10/60s requests": 10.0, "1000/60s tokens": 1000.0}
    with pytest.raises(ValueError, match="refund"):
        limiter.refund(-1)


# -- a limiter with no limits only pauses ------------------------------------------------------


def test_a_limiter_without_limits_admits_everything_until_paused() -> None:
    clock = FakeClock()
    limiter = Limiter([], clock=clock)
    assert all(limiter.try_acquire() for _ in range(10_000))
    assert limiter.try_acquire({"requests": 1, "input_tokens": 10**9})
    assert limiter.available == math.inf and limiter.levels() == {}
    limiter.pause(2.0)
    assert not limiter.try_acquire()
    assert limiter.reserve(1, max_wait=5).delay == pytest.approx(2.0)
    with pytest.raises(RateLimited) as refused:
        limiter.reserve(1, max_wait=1)
    assert refused.value.retry_after == pytest.approx(2.0)
    clock.advance(2.0)
    assert limiter.try_acquire()


@pytest.mark.parametrize("cost", [-1, math.inf, math.nan])
def test_a_limiter_without_limits_still_refuses_bad_costs(cost: float) -> None:
    with pytest.raises(ValueError, match="cost must be a finite number >= 0, got"):
        Limiter([]).try_acquire(cost)
    with pytest.raises(ValueError, match="cost must be a finite number >= 0, got"):
        Limiter([]).reserve(cost)


# -- clamping to what the provider says remains -------------------------------------------------


def test_clamp_holds_the_bucket_to_what_the_provider_says_remains() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    limiter.clamp("requests", 10)
    assert limiter.available == pytest.approx(10)
    assert sum(limiter.try_acquire() for _ in range(20)) == 10
    clock.advance(1.0)  # then it refills at its own rate
    assert limiter.try_acquire() and not limiter.try_acquire()


def test_clamp_never_gives_back_what_calls_in_flight_took() -> None:
    limiter = Limiter([Limit(60, 60)], clock=FakeClock())
    for _ in range(50):
        assert limiter.try_acquire()
    limiter.clamp("requests", 59)  # the server has seen only one of the fifty
    assert limiter.available == pytest.approx(10)


@pytest.mark.parametrize("remaining", [-1.0, math.nan])
def test_clamp_ignores_nonsense(remaining: float) -> None:
    limiter = Limiter([Limit(60, 60)], clock=FakeClock())
    limiter.clamp("requests", remaining)
    limiter.clamp("tokens", 0)  # no limit of that unit here
    assert limiter.available == 60


def test_clamp_picks_the_limit_nearest_the_providers_and_else_the_shortest_window() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(10_000, 86_400), Limit(100, 60)], clock=clock)
    limiter.clamp("requests", 0, limit=10_000)
    assert limiter.levels() == {"10000/86400s requests": pytest.approx(0), "100/60s requests": 100}
    limiter = Limiter([Limit(10_000, 86_400), Limit(100, 60)], clock=clock)
    limiter.clamp("requests", 40)
    assert limiter.levels()["100/60s requests"] == pytest.approx(40)


def test_clamp_of_a_known_window_holds_the_limit_counted_over_it_not_the_nearest_amount() -> None:
    """Groq's 1000 requests a day: the key's daily limit holds it, not its 1000 a minute."""
    clock = FakeClock()
    limiter = Limiter([Limit(1000, 60), Limit(14_400, 86_400)], clock=clock)
    limiter.clamp("requests", 900, limit=1000, reset=86.4, per_seconds=86_400)
    assert limiter.levels() == {"1000/60s requests": 1000, "14400/86400s requests": approx(900)}
    clock.advance(864.0)
    assert limiter.levels()["14400/86400s requests"] == approx(910)  # adopted: 1000 a day


def test_clamp_of_a_window_the_key_does_not_count_caps_the_nearest_and_adopts_nothing() -> None:
    """What remains of a day caps the hourly bucket (the nearest window); the provider's daily
    amount is no hourly or minute limit, so every rate stays as configured."""
    clock = FakeClock()
    limiter = Limiter([Limit(1000, 60), Limit(20_000, 3600)], clock=clock)
    limiter.clamp("requests", 500, limit=600, reset=3600.0, per_seconds=86_400)
    assert limiter.levels() == {"1000/60s requests": 1000, "20000/3600s requests": approx(500)}
    clock.advance(36.0)
    assert limiter.levels()["20000/3600s requests"] == approx(700)  # 20000 an hour, not 600
    minute = Limiter([Limit(1000, 60)], clock=clock)
    minute.clamp("requests", 500, limit=600, per_seconds=86_400)
    assert minute.available == approx(500)
    clock.advance(6.0)
    assert minute.available == approx(600)  # 1000 a minute: 100 in 6 s, not 60


def test_clamp_of_a_spent_window_the_key_does_not_count_waits_for_its_reset() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(1000, 60)], clock=clock)
    limiter.clamp("requests", 0, limit=1000, reset=86.4, per_seconds=86_400)
    assert limiter.wait_time() == approx(86.4)


@pytest.mark.parametrize("per_seconds", [0.0, -60.0, math.nan, math.inf])
def test_clamp_takes_a_window_of_no_finite_length_for_an_unknown_one(per_seconds: float) -> None:
    limiter = Limiter([Limit(10_000, 86_400), Limit(100, 60)], clock=FakeClock())
    limiter.clamp("requests", 0, limit=10_000, per_seconds=per_seconds)
    assert limiter.levels() == {"10000/86400s requests": approx(0), "100/60s requests": 100}


def test_clamp_a_remaining_above_the_capacity_changes_nothing() -> None:
    limiter = Limiter([Limit(60, 60)], clock=FakeClock())
    limiter.clamp("requests", 1_000, limit=1_000)
    assert limiter.available == 60


# -- scaled rates (adaptive pacing) ----------------------------------------------------------------


def test_scale_rates_slows_the_refill_and_keeps_the_level() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    for _ in range(30):
        assert limiter.try_acquire()
    limiter.scale_rates(0.5)
    assert limiter.rate_factor == 0.5
    assert limiter.available == pytest.approx(30)
    for _ in range(30):
        assert limiter.try_acquire()
    clock.advance(1.0)
    assert not limiter.try_acquire()  # one request every two seconds now
    clock.advance(1.0)
    assert limiter.try_acquire()
    limiter.scale_rates(1.0)
    clock.advance(1.0)
    assert limiter.try_acquire() and not limiter.try_acquire()


def test_scale_rates_applies_to_reservations_and_every_limit() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60), Limit(600, 60, "tokens")], clock=clock)
    limiter.scale_rates(0.25)
    assert limiter.reserve({"requests": 60, "tokens": 0}).delay == 0.0
    assert limiter.reserve({"requests": 1, "tokens": 0}).delay == pytest.approx(4.0)
    assert limiter.wait_time({"requests": 0, "tokens": 600}) == pytest.approx(4.0)


def test_a_rate_that_recovers_keeps_the_time_of_a_call_already_waiting() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(100, 10, "tokens", burst=50)], clock=clock)  # 10 a second
    limiter.scale_rates(0.25)  # 2.5 a second
    limiter.reserve({"tokens": 42})
    assert limiter.reserve({"tokens": 50}).ready_at == approx(16.8)  # it empties the bucket
    clock.advance(16.0)
    limiter.scale_rates(0.5)  # 5 a second: 2 tokens take 0.4 s once the 50 went
    assert limiter.reserve({"tokens": 2}).ready_at == approx(17.2)


def test_a_call_waiting_past_the_settle_window_keeps_its_time_when_the_rate_recovers() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(100, 1000, "tokens", burst=50)], clock=clock)  # 0.1 a second
    limiter.scale_rates(0.25)
    limiter.reserve({"tokens": 42})
    assert limiter.reserve({"tokens": 50}).ready_at == approx(1680.0)
    clock.advance(SETTLE_WITHIN + 700.0)
    assert not limiter.try_acquire(0)  # a decision, past the window in which settles count
    limiter.scale_rates(0.5)
    assert limiter.reserve({"tokens": 2}).ready_at == approx(1720.0)


def test_a_learned_limit_that_lapses_keeps_the_time_of_the_calls_waiting() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    limiter.clamp("requests", 30, limit=30)  # one every 2 s, for a window
    assert [limiter.reserve(30).ready_at for _ in range(3)] == approx([0.0, 60.0, 120.0])
    clock.advance(61.0)  # the configured 1 a second is back: the bucket is full again only
    # 30 s after the last 30 went, not at 120.5 (a compressed schedule: 90 within a second)
    assert limiter.reserve(60).ready_at == approx(150.0)


@pytest.mark.parametrize("factor", [0, -0.5, 1.5, math.nan, True])
def test_scale_rates_refuses_factors_outside_zero_to_one(factor: float) -> None:
    with pytest.raises(ValueError, match="factor must be in"):
        Limiter([Limit(60, 60)]).scale_rates(factor)


def test_clamp_to_nothing_left_waits_for_the_providers_own_refill() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    limiter.clamp("requests", 0, limit=3, reset=60.0)  # 3 per minute there: one every 20 s
    assert limiter.wait_time() == pytest.approx(20.0)
    limiter.clamp("requests", 0.5, reset=4.0)  # no limit given: the reset itself
    assert limiter.wait_time() == pytest.approx(20.0)  # the longer hold stays
    clock.advance(20.0)
    assert limiter.try_acquire() and not limiter.try_acquire()


def test_clamp_adopts_a_lower_provider_limit_and_never_a_higher_one() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    limiter.clamp("requests", 30, limit=30)  # the provider grants half the configured rate
    assert limiter.available == pytest.approx(30)
    assert sum(limiter.try_acquire() for _ in range(40)) == 30
    clock.advance(2.0)
    assert limiter.try_acquire() and not limiter.try_acquire()  # one per 2 s, not per second
    limiter.clamp("requests", 120, limit=120)  # more than configured: back to 60/60s, no more
    clock.advance(60.0)
    assert limiter.available == pytest.approx(60)
