"""A debt charged while calls wait holds those calls back by as much, as a provider's bucket does:
a provider charges an answer when it ends, to everyone who has not gone yet. A provider's report
of less than the schedule counts, and a 429's pause, hold them back too."""

from __future__ import annotations

import asyncio

import pytest

from rate_limit_shield import Limit, Limiter, Reservation, Shield
from rate_limit_shield.errors import RateLimited
from rate_limit_shield.testing import FakeClock
from rate_limit_shield.testing.provider.buckets import Bucket


def tokens_limiter(clock: FakeClock) -> Limiter:
    return Limiter([Limit(100, 1, "tokens")], clock=clock)  # 100 tokens a second


def test_a_debt_charged_while_a_reservation_waits_is_told_once() -> None:
    clock = FakeClock()
    limiter = tokens_limiter(clock)
    first = limiter.reserve(100)  # the whole bucket: goes now
    waiter = limiter.reserve(50)  # goes in 0.5 s
    assert waiter.delay == pytest.approx(0.5)
    assert limiter.debt_since(waiter) == 0.0
    limiter.settle(first, 130)  # 30 tokens more than charged: 0.3 s of debt
    assert limiter.debt_since(waiter) == pytest.approx(0.3)
    assert limiter.debt_since(waiter) == 0.0  # told once
    later = limiter.reserve(10)  # made after the debt: its go time counts it already
    assert later.ready_at == pytest.approx(0.9)
    assert limiter.debt_since(later) == 0.0


def test_a_refund_holds_no_waiter_back() -> None:
    clock = FakeClock()
    limiter = tokens_limiter(clock)
    first = limiter.reserve(100)
    waiter = limiter.reserve(50)
    limiter.settle(first, 40)
    assert limiter.debt_since(waiter) == 0.0


def test_the_most_debt_of_any_limit_holds_a_waiter_back() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(10, 1), Limit(100, 1, "tokens")], clock=clock)
    first = limiter.reserve({"requests": 1, "tokens": 100})
    waiter = limiter.reserve({"requests": 1, "tokens": 50})
    limiter.settle(first, {"requests": 1, "tokens": 120})  # 0.2 s on tokens, none on requests
    assert limiter.debt_since(waiter) == pytest.approx(0.2)


def test_a_reservation_of_another_limiter_is_refused() -> None:
    clock = FakeClock()
    reservation = tokens_limiter(clock).reserve(10)
    with pytest.raises(ValueError, match="was not made by"):
        tokens_limiter(clock).debt_since(reservation)


class DebtOnFirstSleep(FakeClock):
    """A clock whose first sleep begins with `settle()` charging a debt, as a stream that ends
    while a call waits does."""

    def __init__(self) -> None:
        super().__init__()
        self.settle = lambda: None

    def sleep(self, seconds: float) -> None:
        if not self.sleeps:
            self.settle()
        super().sleep(seconds)


def waiting_on_a_debt(**options: object) -> tuple[DebtOnFirstSleep, Shield]:
    """A shield whose next call waits 0.5 s for its tokens, while 30 tokens of debt land."""
    clock = DebtOnFirstSleep()
    limiter = tokens_limiter(clock)
    first = limiter.reserve(100)
    clock.settle = lambda: limiter.settle(first, 130)
    return clock, Shield(limiter, clock=clock, **options)  # type: ignore[arg-type]


def call_for_50_tokens(shield: Shield, driver: str) -> None:
    """One call of 50 tokens through `shield`, by the `driver` ("sync" or "async"), answered."""

    async def answer() -> str:
        return "late"

    if driver == "sync":
        assert shield.call(lambda: "late", tokens=50) == "late"
    else:
        assert asyncio.run(shield.acall(answer, tokens=50)) == "late"


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_debt_charged_while_a_call_waits_holds_it_back_by_as_much(driver: str) -> None:
    clock, shield = waiting_on_a_debt()
    call_for_50_tokens(shield, driver)
    assert clock.sleeps == [pytest.approx(0.5), pytest.approx(0.3)]


def test_a_debt_that_makes_the_wait_longer_than_max_wait_gives_up_and_frees_the_slot() -> None:
    clock, shield = waiting_on_a_debt(max_wait=0.6)
    with pytest.raises(RateLimited, match="in debt") as refused:
        shield.call(lambda: "never", tokens=50)
    assert refused.value.retry_after == pytest.approx(0.3)
    assert clock.sleeps == [pytest.approx(0.5)]
    assert shield.limiter is not None
    # Its 50 tokens came back: 130 charged at 0, 50 refilled by 0.5 s.
    assert shield.limiter.levels()["100/1s tokens"] == pytest.approx(20)


def test_a_debt_past_the_deadline_gives_up() -> None:
    _, shield = waiting_on_a_debt(timeout=0.7)
    with pytest.raises(RateLimited, match="in debt"):
        shield.call(lambda: "never", tokens=50)


def test_calls_waiting_when_a_pause_begins_keep_their_spacing_after_it() -> None:
    """A 429's pause holds the calls waiting by its length: all going when it ends, they would
    find a provider that has refilled only what the call it refused needs."""
    clock = FakeClock()
    limiter = tokens_limiter(clock)
    limiter.reserve(100)  # goes now
    waiters = [limiter.reserve(50) for _ in range(2)]  # go at 0.5 s and 1 s
    limiter.pause(5.0)
    assert [limiter.debt_since(waiter) for waiter in waiters] == [pytest.approx(5.0)] * 2
    assert limiter.reserve(50).ready_at == pytest.approx(6.5)  # after them


class PausedAsItSleeps(FakeClock):
    """A clock on which a 429 pauses `limiter` for 2 s as the first sleep begins."""

    def __init__(self) -> None:
        super().__init__()
        self.limiter: Limiter | None = None

    def sleep(self, seconds: float) -> None:
        if not self.sleeps and self.limiter is not None:
            self.limiter.pause(2.0)
        super().sleep(seconds)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_call_waiting_when_a_pause_begins_goes_its_spacing_after_the_pause(driver: str) -> None:
    """Waiting until 1 s behind a call that goes at 0.5 s, it goes at 3 s, not when the pause
    ends at 2 s, alongside the one before it."""
    clock = PausedAsItSleeps()
    limiter = clock.limiter = tokens_limiter(clock)
    limiter.reserve(100)
    limiter.reserve(50)
    shield = Shield(limiter, clock=clock)
    call_for_50_tokens(shield, driver)
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(2.0)]


def test_a_providers_report_of_less_than_the_waiters_were_told_holds_them_back() -> None:
    """A provider that says less remains than the schedule counts (its answers ended and were
    charged, or another process used its quota) is short for the calls waiting too."""
    clock = FakeClock()
    limiter = tokens_limiter(clock)
    limiter.reserve(100)
    waiter = limiter.reserve(50)  # goes at 0.5 s: the bucket counts 50 tokens below empty
    limiter.clamp("tokens", 0, 100, reset=2.0)  # full in 2 s: 100 below empty
    assert limiter.debt_since(waiter) == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.debt_since(waiter) == 0.0


def go_times(limiter: Limiter, reservations: list[Reservation]) -> list[float]:
    """When each of `reservations` goes, the debts charged since it was made counted."""
    return [r.ready_at + limiter.debt_since(r) for r in reservations]


def refused_by(limits: list[tuple[float, float]], charges: list[tuple[float, list[float]]]) -> int:
    """How many of `charges` (when each call goes, what it charges each bucket) a provider
    with full buckets of (capacity, per_seconds) at 0 would refuse, charging each as it goes."""
    buckets = [Bucket(capacity, per_seconds, 0.0) for capacity, per_seconds in limits]
    refused = 0
    for when, amounts in sorted(charges):
        for bucket in buckets:
            bucket.refill(when)
        charged = list(zip(buckets, amounts, strict=True))
        if any(bucket.wait_for(amount) > 1e-9 for bucket, amount in charged):
            refused += 1
        else:
            for bucket, amount in charged:
                bucket.level -= amount
    return refused


@pytest.mark.parametrize("hold", ["debt", "pause", "report"])
def test_calls_held_back_on_one_limit_take_their_place_on_the_others_later_too(hold: str) -> None:
    """A call held back by a debt, a pause or a provider's report goes later on every limit:
    the others must count it then, or the calls made after it go alongside it, more at once
    than the provider's bucket of requests (which counts calls as they come) holds."""
    clock = FakeClock()
    limiter = Limiter([Limit(2, 1), Limit(100, 1, "tokens")], clock=clock)  # 2 requests a second
    first = limiter.reserve({"requests": 1, "tokens": 100})  # goes now, the tokens all used
    waiter = limiter.reserve({"requests": 1, "tokens": 50})  # goes at 0.5 s, for its tokens
    if hold == "debt":
        limiter.settle(first, {"requests": 1, "tokens": 200})  # 1 s more on tokens
    elif hold == "pause":
        limiter.pause(1.5)
    else:
        limiter.clamp("tokens", 0, 100, reset=2.5)  # the provider: full in 2.5 s, 100 short
    later = [limiter.reserve({"requests": 1, "tokens": 0}) for _ in range(3)]
    times = sorted(go_times(limiter, [waiter, *later]))
    assert times[0] >= 1.5 - 1e-9  # the waiter, held back by 1 s
    calls = [(0.0, [1.0]), *((when, [1.0]) for when in times)]  # `first` went at 0
    assert refused_by([(2, 1)], calls) == 0, times  # the provider's requests


def test_a_pause_with_no_call_waiting_moves_no_schedule() -> None:
    """A limit in debt makes a call made now wait, but none is waiting: a pause has nobody to
    hold back, and its bucket (as a Redis limiter's) stays where the debt left it."""
    clock = FakeClock()
    limiter = Limiter([Limit(5, 100)], clock=clock)
    reservation = limiter.reserve(1)  # goes now
    limiter.settle(reservation, 6)  # 5 more: the bucket is 1 below empty
    before = limiter.levels()
    limiter.pause(50.0)
    assert limiter.levels() == before


def test_a_debt_holds_back_no_call_that_another_limit_holds_longer() -> None:
    """Calls queued behind the requests limit, with room to spare on tokens: an answer that
    ends in token debt leaves them, and the calls made after them, where they were. Held back
    by it, they would also move the requests schedule on, which the next debt would move on
    again: a schedule of requests running away from a provider whose requests bucket is full."""
    clock = FakeClock()
    limiter = Limiter([Limit(2, 1), Limit(100, 1, "tokens")], clock=clock)
    first = limiter.reserve({"requests": 1, "tokens": 10})  # goes now
    second = limiter.reserve({"requests": 1, "tokens": 10})  # now: the requests all used
    waiters = [limiter.reserve({"requests": 1, "tokens": 10}) for _ in range(2)]
    assert [waiter.ready_at for waiter in waiters] == [pytest.approx(0.5), pytest.approx(1.0)]
    limiter.settle(first, {"requests": 1, "tokens": 40})  # 0.3 s of token debt, room for it
    assert go_times(limiter, waiters) == [pytest.approx(0.5), pytest.approx(1.0)]
    later = limiter.reserve({"requests": 1, "tokens": 10})
    assert later.ready_at == pytest.approx(1.5)
    calls = [(0.0, [1, 40]), (0.0, [1, 10]), (0.5, [1, 10]), (1.0, [1, 10]), (1.5, [1, 10])]
    assert refused_by([(2, 1), (100, 1)], calls) == 0
    assert second.delay == 0.0


def test_a_debt_holds_the_calls_back_by_what_it_delays_the_most_delayed_one() -> None:
    """A waiter with 0.1 s to spare on tokens goes 0.2 s later for 0.3 s of token debt: when
    the provider's bucket, charged the debt, holds its tokens again, and no later."""
    clock = FakeClock()
    limiter = Limiter([Limit(2, 1), Limit(100, 1, "tokens")], clock=clock)
    first = limiter.reserve({"requests": 1, "tokens": 10})
    limiter.reserve({"requests": 1, "tokens": 80})  # the tokens: 10 left
    waiter = limiter.reserve({"requests": 1, "tokens": 50})  # tokens at 0.4 s, requests at 0.5 s
    assert waiter.ready_at == pytest.approx(0.5)
    limiter.settle(first, {"requests": 1, "tokens": 40})
    assert limiter.debt_since(waiter) == pytest.approx(0.2)
    provider = Bucket(100, 1, 0.0)
    provider.level -= 40 + 80
    assert provider.wait_for(50) == pytest.approx(0.7)


def test_a_rate_cut_leaves_a_call_less_to_spare_on_the_limit_it_slows() -> None:
    """Its start on the tokens limit, 0.3 s from now, stretches to 0.6 s at half the rate, while
    it still goes at 1 s (for its requests): 0.4 s to spare there, not 0.7 s, when a debt of 1 s
    comes."""
    clock = FakeClock()
    limiter = Limiter([Limit(2, 1), Limit(100, 1, "tokens")], clock=clock)
    first = limiter.reserve({"requests": 2, "tokens": 100})  # both buckets used up
    waiter = limiter.reserve({"requests": 2, "tokens": 30})
    assert waiter.ready_at == pytest.approx(1.0)
    limiter.scale_rates(0.5)
    limiter.settle(first, {"requests": 2, "tokens": 150})  # 50 tokens: 1 s at the cut rate
    assert limiter.debt_since(waiter) == pytest.approx(0.6)


def test_a_limit_learned_while_calls_wait_holds_back_none_it_was_not_charged() -> None:
    """The waiter was charged no tokens: a provider's report on the tokens limit learned since
    is no debt of its."""
    clock = FakeClock()
    limiter = Limiter([Limit(2, 1)], clock=clock)
    limiter.reserve(2)
    waiter = limiter.reserve(1)
    assert waiter.ready_at == pytest.approx(0.5)
    limiter.clamp("tokens", 100_000, 100_000, per_seconds=60, learn=True)
    limiter.clamp("tokens", 0, 100_000, reset=30.0, per_seconds=60)
    assert limiter.debt_since(waiter) == 0.0


def test_a_debt_holds_back_no_call_ahead_of_the_ones_it_delays() -> None:
    """The first waiter has 0.55 s to spare on tokens, the second none: 0.3 s of token debt
    holds the second back, and the first goes when it was told; the second keeps its place
    behind it either way."""
    clock = FakeClock()
    limiter = Limiter([Limit(2, 1), Limit(100, 1, "tokens")], clock=clock)
    first = limiter.reserve({"requests": 2, "tokens": 0})  # the requests all used
    ahead = limiter.reserve({"requests": 1, "tokens": 95})  # at 0.5 s, for its request
    behind = limiter.reserve({"requests": 1, "tokens": 100})  # at 1.45 s, for its tokens
    assert [ahead.ready_at, behind.ready_at] == [pytest.approx(0.5), pytest.approx(1.45)]
    limiter.settle(first, {"requests": 2, "tokens": 30})
    assert go_times(limiter, [ahead, behind]) == [pytest.approx(0.5), pytest.approx(1.75)]
    calls = [(0.0, [2.0, 30.0]), (0.5, [1.0, 95.0]), (1.75, [1.0, 100.0])]
    assert refused_by([(2, 1), (100, 1)], calls) == 0


def test_a_prompt_shorter_than_estimated_comes_back_only_as_far_as_the_provider_holds_it() -> None:
    """The estimate's 3 extra tokens were in the schedule alone. While the call was out, the
    provider's bucket filled up and lost refill that the schedule, 3 tokens short of full, went
    on counting; then a call took almost all of it. The settle charges the answer in full and
    gives the 3 tokens back only as far as the schedule then lacked: netted against the answer,
    they came back whole, and the next call went before the provider's bucket held it."""
    clock = FakeClock()
    limiter = Limiter([Limit(100, 1, "tokens")], clock=clock)
    provider = Bucket(100, 1, 0.0)
    call = limiter.reserve({"input_tokens": 57, "output_tokens": 0})  # no output limit
    provider.level -= 54  # the provider charges the real prompt
    clock.advance(0.555)  # the provider is full from 0.54 s, the schedule 1.5 tokens short
    provider.refill(0.555)
    limiter.reserve({"input_tokens": 98})
    provider.level -= 98
    limiter.settle(call, {"input_tokens": 54, "output_tokens": 30})
    provider.level -= 30  # the answer, charged when it ends
    assert limiter.levels()["100/1s tokens"] == pytest.approx(provider.level)
    assert limiter.wait_time({"input_tokens": 1}) == pytest.approx(provider.wait_for(1))
