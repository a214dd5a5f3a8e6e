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
    """A clock whose first sleep ends with `settle()` having charged a debt, as a stream that
    ends while a call waits does."""

    def __init__(self) -> None:
        super().__init__()
        self.settle = lambda: None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.sleeps) == 1:
            self.settle()


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
    provider = Bucket(2, 1, 0.0)  # the provider's requests, which saw `first` at 0
    provider.level -= 1
    refused = 0
    for when in times:
        provider.refill(when)
        if provider.wait_for(1) > 1e-9:
            refused += 1
        else:
            provider.level -= 1
    assert refused == 0, times


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
