"""Pacing with no limits configured: a key learns its provider's limits from the headers."""

from __future__ import annotations

from typing import Any

import openai
import pytest

import rate_limit_shield as rls
from rate_limit_shield import Limit, Limiter, Outcome, Registry
from rate_limit_shield.limiter import learned_limit
from rate_limit_shield.llm import Guide
from rate_limit_shield.testing import FakeClock, FakeProvider
from rate_limit_shield.testing.provider.buckets import Bucket

LEARNED = Limit(1176, 60, "requests", burst=15)
"""1,200 a minute in slices of 1 s: 2 % less in rate, a quarter second's refill less in burst."""
INTERVAL = 60 / 1176


class Response:
    """An HTTP response as far as the guide reads it."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.status_code = 200
        self.headers = headers


def openai_headers(remaining: int, reset: str = "50ms", limit: int = 1200) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": reset,
        "x-ratelimit-limit-tokens": "600000",
        "x-ratelimit-remaining-tokens": "599000",
        "x-ratelimit-reset-tokens": "100ms",
    }


def learner(clock: FakeClock, limits: list[Limit] | None = None) -> tuple[Limiter, Guide]:
    limiter = Limiter(limits or [], clock=clock, name="gpt-4o")
    return limiter, Guide(limiter, clock=clock, learns=("requests",))


def taken_at_once(limiter: Limiter) -> int:
    taken = 0
    while taken < 10_000 and limiter.try_acquire():
        taken += 1
    return taken


# -- the limiter ----------------------------------------------------------------------------------


def test_a_limiter_without_limits_learns_the_providers_requests_limit_in_slices_of_a_second() -> (
    None
):
    clock = FakeClock()
    limiter, guide = learner(clock)
    assert taken_at_once(limiter) == 10_000  # nothing configured, nothing learned: unlimited

    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))

    assert limiter.limits == (LEARNED,)  # the tokens it reports are not the key's to learn
    assert taken_at_once(limiter) == 14  # the burst lacks the one the provider answered
    clock.advance(INTERVAL)  # one request's worth
    assert taken_at_once(limiter) == 1


def test_what_remains_of_the_providers_window_holds_a_slice_of_it() -> None:
    """A slice lacks what its window lacks; a window short of more than a slice leaves it
    empty, as a bucket of the whole window would be soon at the same rate."""
    clock = FakeClock()
    limiter, guide = learner(clock)
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1190)))
    assert limiter.levels() == {str(LEARNED): pytest.approx(5)}
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=5, reset="59s")))
    assert limiter.levels() == {str(LEARNED): pytest.approx(0)}
    assert limiter.wait_time() == pytest.approx(INTERVAL)


def test_calls_sent_on_a_learned_burst_survive_a_stall_on_their_way_to_the_provider() -> None:
    """A provider's bucket that is full while calls are on their way loses the refill meanwhile,
    and the calls sent in that time arrive together: after a stall of a quarter second right
    after the provider's report, none of those a learned limit let go is refused."""
    clock = FakeClock()
    provider = Bucket(20, 1, clock.monotonic())  # 1,200 a minute in slices of a second
    provider.level -= 1  # the call the report answers
    limiter, guide = learner(clock)
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=provider.remaining())))
    stalled_until = clock.monotonic() + 0.25
    arrivals: list[float] = []
    for _ in range(300):  # three seconds, in steps of 10 ms
        arrivals += [max(clock.monotonic(), stalled_until)] * taken_at_once(limiter)
        clock.advance(0.01)
    refused = 0
    for arrival in arrivals:
        provider.refill(arrival)
        if provider.level >= 1.0:
            provider.level -= 1.0
        else:
            refused += 1
    assert len(arrivals) > 3 * 19  # paced at the provider's rate, less `HEADROOM`
    assert refused == 0


def test_a_report_without_the_providers_limit_teaches_no_limit() -> None:
    limiter, _ = learner(FakeClock())
    limiter.clamp("requests", 3, learn=True)
    assert limiter.limits == ()


def test_a_limiter_learns_only_when_asked_to() -> None:
    limiter = Limiter([], clock=FakeClock())
    Guide(limiter, clock=FakeClock())(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))
    assert limiter.limits == ()


def test_a_learned_limit_lapses_a_window_after_the_last_report() -> None:
    clock = FakeClock()
    limiter, guide = learner(clock)
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))
    clock.advance(30.0)
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))  # kept a window longer
    clock.advance(59.0)
    assert limiter.limits == (LEARNED,)
    assert taken_at_once(limiter) == 15
    clock.advance(1.0)
    assert taken_at_once(limiter) == 10_000
    assert limiter.limits == ()


def test_a_learned_limit_lapses_at_the_providers_reset_when_it_is_later() -> None:
    clock = FakeClock()
    limiter, guide = learner(clock)
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=0, reset="90s")))
    clock.advance(60.0)
    assert limiter.limits == (LEARNED,)
    clock.advance(30.0)
    assert limiter.try_acquire()
    assert limiter.limits == ()


def test_a_new_amount_from_the_provider_reshapes_the_learned_limit() -> None:
    clock = FakeClock()
    limiter, guide = learner(clock)
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=599, limit=600)))
    assert limiter.limits == (learned_limit("requests", 600, 60),)
    assert taken_at_once(limiter) == 6  # a burst of 7.5 lacks the one answered


def test_a_minute_limit_learned_beside_a_configured_one_of_another_unit() -> None:
    clock = FakeClock()
    tokens = Limit(600_000, 60, "tokens")
    limiter, guide = learner(clock, [tokens])
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))
    assert limiter.limits == (tokens, LEARNED)
    assert limiter.try_acquire({"requests": 14, "tokens": 1000})
    assert not limiter.try_acquire({"requests": 1, "tokens": 1000})


def test_a_learned_limit_never_replaces_a_configured_one() -> None:
    clock = FakeClock()
    limiter, guide = learner(clock, [Limit(60, 60)])
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))
    assert limiter.limits == (Limit(60, 60),)


def test_reservations_made_before_a_limit_was_learned_or_after_it_lapsed_settle() -> None:
    clock = FakeClock()
    limiter, guide = learner(clock, [Limit(100_000, 60, "tokens")])
    before = limiter.reserve({"requests": 1, "tokens": 1000})
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))
    waiting = [limiter.reserve({"requests": 1, "tokens": 100}) for _ in range(25)]
    assert waiting[-1].delay == pytest.approx((25 - 14) * INTERVAL)
    limiter.settle(before, {"requests": 1, "tokens": 10})
    clock.advance(60.0)
    assert limiter.try_acquire({"requests": 1, "tokens": 1})  # lapsed
    limiter.settle(waiting[-1], {"requests": 1, "tokens": 50})
    limiter.cancel(waiting[-2])
    assert limiter.limits == (Limit(100_000, 60, "tokens"),)
    assert limiter.levels()["100000/60s tokens"] == pytest.approx(100_000, rel=1e-3)


def test_a_waiter_holds_a_learned_limit_until_its_turn() -> None:
    """A learned limit does not lapse while a call still waits on its schedule: a caller that
    came later would otherwise go first."""
    clock = FakeClock()
    limiter, guide = learner(clock)
    guide(Outcome.SUCCESS, Response(openai_headers(remaining=1199)))
    last = [limiter.reserve() for _ in range(1300)][-1]
    clock.advance(60.0)
    assert limiter.limits == (LEARNED,)
    assert limiter.wait_time() == pytest.approx(last.ready_at - clock.monotonic() + INTERVAL)


# -- the model key --------------------------------------------------------------------------------


def test_every_key_has_a_guide_that_learns_requests_and_tokens_only_if_it_estimates_them() -> (
    None
):
    clock = FakeClock()
    registry = Registry()
    registry.configure({"default": {}, "counted": {"itpm": 100_000}}, clock=clock)
    headers = Response(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-input-tokens-limit": "50000",
            "anthropic-ratelimit-input-tokens-remaining": "49000",
            "anthropic-ratelimit-output-tokens-limit": "10000",
            "anthropic-ratelimit-output-tokens-remaining": "10000",
        }
    )
    for name in ("plain", "counted"):
        key = registry.key(name)
        assert key.guide is not None
        key.guide(Outcome.SUCCESS, headers)
    assert [str(limit) for limit in registry.key("plain").limiter.limits] == [
        "49/60s requests burst 1"
    ]
    assert [str(limit) for limit in registry.key("counted").limiter.limits] == [
        "100000/60s input_tokens",  # configured: the provider's lower amount adopted
        "49/60s requests burst 1",
        "9800/60s output_tokens",
    ]


def test_a_key_with_nothing_configured_is_paced_after_its_first_answer() -> None:
    clock = FakeClock()
    registry = Registry()
    registry.configure({"default": {"retry": None}}, clock=clock)
    key = registry.key("gpt-4o")
    sent: list[float] = []

    def create(**_: Any) -> Response:
        sent.append(clock.monotonic())
        return Response(openai_headers(remaining=1200 - len(sent), reset="0s"))

    for _ in range(60):
        key.shield.call(create, model="gpt-4o")

    assert sent[:15] == [0.0] * 15  # the first answer teaches: the 14 its burst holds go on
    assert sent[15] == pytest.approx(INTERVAL)
    assert sent[-1] == pytest.approx((60 - 15) * INTERVAL)


# -- end to end: the real SDK against a provider that enforces its limit in slices ----------------


def test_a_zero_config_client_is_paced_at_the_providers_rate_without_a_429() -> None:
    with (
        rls.testing.isolated() as clock,
        FakeProvider(requests=20, per_seconds=1, clock=clock) as provider,
        openai.OpenAI(base_url=provider.url + "/v1", api_key="k", max_retries=0) as sdk,
    ):
        client = rls.shield_client(sdk)
        for _ in range(100):
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
        assert provider.statuses == {200: 100}
        assert clock.monotonic() == pytest.approx((100 - 15) * INTERVAL, abs=0.1)


# -- on Redis -------------------------------------------------------------------------------------


def test_a_limit_learned_on_redis_is_shared_and_lapses_as_in_memory(redis_url: str) -> None:
    backend = pytest.importorskip("rate_limit_shield.backends.redis")
    client, aclient = backend.from_url(redis_url)
    clock = FakeClock()  # the learned limits lapse on the local clock; Redis keeps the schedule
    fleet = [
        backend.RedisLimiter([], client=client, aclient=aclient, name="gpt-4o", clock=clock)
        for _ in range(2)
    ]
    for limiter in fleet:
        Guide(limiter, clock=clock, learns=("requests",))(
            Outcome.SUCCESS, Response(openai_headers(remaining=1199, limit=60))
        )
        assert limiter.limits == (learned_limit("requests", 60, 60),)
    first, second = fleet
    assert first.try_acquire()
    assert not second.try_acquire()  # the one the first took was the burst of both
    assert second.wait_time() == pytest.approx(1.0, abs=0.2)
    clock.advance(60.0)
    assert second.try_acquire() and second.try_acquire()
    assert second.limits == ()
    assert first.limits == (learned_limit("requests", 60, 60),)
