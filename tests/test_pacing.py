"""Server guidance and adaptive pacing, and how every model key uses the provider-aware parts."""

from __future__ import annotations

from typing import Any

import pytest

import rate_limit_shield as rls
from rate_limit_shield import Limit, Limiter, Outcome, Registry, Verdict
from rate_limit_shield._bounded import CLASS_CACHE_MAX
from rate_limit_shield.llm import AdaptiveRate, Guide, LLMClassifier, RateLimitInfo
from rate_limit_shield.testing import FakeClock


class Response:
    """The shape of an httpx response as far as the shield reads it."""

    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


class ProviderError(Exception):
    """Shaped like an SDK's APIStatusError: a status, the HTTP response, the JSON body."""

    def __init__(self, status: int, headers: dict[str, str] | None = None, code: str = "") -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = Response(status, headers or {})
        self.body = {"code": code, "type": code, "message": "..."}


def throttled(retry_after: float, **headers: str) -> ProviderError:
    return ProviderError(429, {"retry-after": str(retry_after), **headers}, "rate_limit_exceeded")


# -- AdaptiveRate -------------------------------------------------------------------------------


def adaptive(clock: FakeClock, **options: Any) -> tuple[Limiter, AdaptiveRate]:
    limiter = Limiter([Limit(60, 60), Limit(10_000, 86_400)], clock=clock)
    return limiter, AdaptiveRate(limiter, clock, **options)


def test_a_throttle_cuts_the_rate_once_per_cooldown() -> None:
    clock = FakeClock()
    limiter, pacer = adaptive(clock)
    pacer.throttled()
    assert limiter.rate_factor == pytest.approx(0.7)
    pacer.throttled()  # the same burst of 429s: not cut again
    assert limiter.rate_factor == pytest.approx(0.7)
    clock.advance(1.0)
    pacer.throttled()
    # it had recovered 1 s of the 60 s window before this cut
    assert limiter.rate_factor == pytest.approx((0.7 + 1 / 60) * 0.7)


def test_the_rate_never_falls_below_the_floor() -> None:
    clock = FakeClock()
    limiter, pacer = adaptive(clock, floor=0.2, cooldown=0.0)
    for _ in range(20):
        pacer.throttled()
    assert limiter.rate_factor == pytest.approx(0.2)


def test_successes_let_the_rate_recover_linearly_over_the_shortest_window() -> None:
    clock = FakeClock()
    limiter, pacer = adaptive(clock)
    assert pacer.recovery == 60  # the rpm window, not the daily one
    pacer.throttled()
    pacer.succeeded()
    assert limiter.rate_factor == pytest.approx(0.7)  # no time has passed
    clock.advance(9.0)
    pacer.succeeded()
    assert limiter.rate_factor == pytest.approx(0.85)
    clock.advance(0.3)  # 0.5 %: below the step worth rescaling for
    pacer.succeeded()
    assert limiter.rate_factor == pytest.approx(0.85)
    clock.advance(60.0)
    pacer.succeeded()
    assert limiter.rate_factor == 1.0


def test_adaptive_pacing_needs_a_limit() -> None:
    with pytest.raises(ValueError, match="at least one limit"):
        AdaptiveRate(Limiter([]), FakeClock())


# -- Guide ----------------------------------------------------------------------------------------


def test_the_guide_clamps_the_bucket_to_the_remaining_quota_of_an_error() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60), Limit(10_000, 60, "tokens")], clock=clock)
    guide = Guide(limiter)
    headers = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-remaining-tokens": "500"}
    guide(Outcome.THROTTLED, throttled(1.0, **headers))
    assert limiter.levels() == {
        "60/60s requests": pytest.approx(3),
        "10000/60s tokens": pytest.approx(500),
    }


def test_the_guide_reads_raw_responses_and_skips_classes_without_headers() -> None:
    limiter = Limiter([Limit(60, 60)], clock=FakeClock())
    guide = Guide(limiter)
    guide(Outcome.SUCCESS, {"usage": {}})
    guide(Outcome.SUCCESS, Response(200, {"anthropic-ratelimit-requests-remaining": "7"}))
    assert limiter.available == pytest.approx(7)


def test_the_guide_remembers_a_bounded_number_of_classes_that_teach_nothing() -> None:
    guide = Guide(Limiter([Limit(60, 60)], clock=FakeClock()))
    for number in range(50_000):  # a class made on the fly for every result
        guide(Outcome.SUCCESS, type(f"Answer{number}", (), {})())
    assert 0 < len(guide.skip) <= CLASS_CACHE_MAX
    kind = type("Answer", (), {})
    guide(Outcome.SUCCESS, kind())
    assert kind in guide.skip


def test_the_guide_ignores_malformed_headers() -> None:
    limiter = Limiter([Limit(60, 60)], clock=FakeClock())
    Guide(limiter)(Outcome.SUCCESS, Response(200, {"x-ratelimit-remaining-requests": "-4"}))
    Guide(limiter)(Outcome.SUCCESS, Response(200, {"x-ratelimit-remaining-requests": "lots"}))
    assert limiter.available == 60


def test_the_guide_tells_the_adaptive_pacer_of_throttles_and_successes() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(60, 60)], clock=clock)
    guide = Guide(limiter, AdaptiveRate(limiter, clock))
    guide(Outcome.THROTTLED, throttled(1.0))
    assert limiter.rate_factor == pytest.approx(0.7)
    clock.advance(60.0)
    guide(Outcome.FAILURE, ProviderError(503))
    assert limiter.rate_factor == pytest.approx(0.7)  # only successes recover it
    guide(Outcome.SUCCESS, "ok")
    assert limiter.rate_factor == 1.0


GROQ = {  # requests per day (1000 of them), tokens per minute
    "x-groq-region": "us-east-1",
    "x-ratelimit-limit-requests": "1000",
    "x-ratelimit-remaining-requests": "999",
    "x-ratelimit-reset-requests": "1m26.4s",
    "x-ratelimit-limit-tokens": "12000",
    "x-ratelimit-remaining-tokens": "12000",
}


def test_a_per_day_limit_is_never_adopted_as_a_per_minute_one() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(2000, 60)], clock=clock)
    Guide(limiter, clock=clock)(Outcome.SUCCESS, Response(200, GROQ))
    assert limiter.available == pytest.approx(999)  # what is left today caps what goes now
    clock.advance(60.0)
    assert limiter.available == pytest.approx(2000)  # at 2000 a minute, not 1000


def test_a_per_day_limit_is_held_to_a_daily_limit_of_the_key() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(2000, 60), Limit(1500, 86_400)], clock=clock)
    Guide(limiter, clock=clock)(Outcome.SUCCESS, Response(200, GROQ))
    clock.advance(3600.0)
    assert limiter.levels() == {
        "2000/60s requests": pytest.approx(2000),
        "1500/86400s requests": pytest.approx(1000),  # Groq's 1000 a day, adopted
    }


def test_a_per_day_limit_lands_on_the_daily_limit_even_when_a_minute_limit_has_its_amount() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(1000, 60), Limit(14_400, 86_400)], clock=clock)
    Guide(limiter, clock=clock)(Outcome.SUCCESS, Response(200, GROQ))
    assert limiter.levels() == {
        "1000/60s requests": pytest.approx(1000),
        "14400/86400s requests": pytest.approx(999),  # Groq's 1000 a day, adopted
    }
    clock.advance(86.4)
    assert limiter.levels()["14400/86400s requests"] == pytest.approx(1000)


def test_what_remains_of_a_day_caps_the_keys_nearest_window() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(2000, 60), Limit(20_000, 3600)], clock=clock)
    Guide(limiter, clock=clock)(Outcome.SUCCESS, Response(200, GROQ))
    assert limiter.levels() == {
        "2000/60s requests": pytest.approx(2000),
        "20000/3600s requests": pytest.approx(999),
    }


def test_a_per_day_quota_with_nothing_left_holds_the_key_until_its_reset() -> None:
    clock = FakeClock()
    limiter = Limiter([Limit(2000, 60)], clock=clock)
    gone = {**GROQ, "x-ratelimit-remaining-requests": "0"}
    Guide(limiter, clock=clock)(Outcome.THROTTLED, Response(429, gone))
    assert limiter.wait_time() == pytest.approx(86.4)


def test_clamp_takes_rate_limit_info_of_every_unit() -> None:
    limits = [Limit(100, 60, "input_tokens"), Limit(50, 60, "output_tokens")]
    limiter = Limiter(limits, clock=FakeClock())
    info = RateLimitInfo.from_headers(
        {
            "anthropic-ratelimit-input-tokens-remaining": "10",
            "anthropic-ratelimit-output-tokens-remaining": "20",
        }
    )
    Guide(limiter).clamp(info)
    assert list(limiter.levels().values()) == [pytest.approx(10), pytest.approx(20)]


# -- what every model key does with them ----------------------------------------------------------


def configured(policies: dict[str, Any]) -> tuple[Registry, FakeClock]:
    clock = FakeClock()
    registry = Registry()
    registry.configure(policies, clock=clock)
    return registry, clock


def test_a_429_pauses_a_key_without_rate_limits_for_every_caller() -> None:
    registry, clock = configured({"default": {"retry": {"attempts": 2}}})
    shield = registry.key("gpt-4o").shield
    answers = iter([throttled(5.0), "first"])

    def call() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert shield.call(call) == "first"
    assert clock.sleeps[0] == pytest.approx(5.0)  # the pause, taken before the retry
    clock.sleeps.clear()
    other = rls.shielded(model="gpt-4o", registry=registry)(lambda: "second")
    registry.key("gpt-4o").limiter.pause(3.0)  # as a 429 seen by another caller would
    assert other() == "second"
    assert clock.sleeps == [pytest.approx(3.0)]


def test_model_keys_classify_with_the_provider_taxonomy() -> None:
    registry, _ = configured({"default": {"retry": {"attempts": 5}}})
    key = registry.key("gpt-4o")
    assert isinstance(key.classifier, LLMClassifier)
    calls = 0

    def bad_request() -> None:
        nonlocal calls
        calls += 1
        raise ProviderError(400, code="context_length_exceeded")

    with pytest.raises(ProviderError):
        key.shield.call(bad_request)
    assert calls == 1  # never retried

    def no_quota() -> None:
        raise ProviderError(429, code="insufficient_quota")

    with pytest.raises(rls.QuotaExhausted) as gone:
        key.shield.call(no_quota)
    assert isinstance(gone.value.__cause__, ProviderError)


def test_a_429_never_counts_against_the_breaker() -> None:
    registry, _ = configured(
        {"default": {"retry": None, "breaker": {"failure_threshold": 1}, "rpm": 600}}
    )
    shield = registry.key("gpt-4o").shield
    for _ in range(3):
        with pytest.raises(ProviderError):
            shield.call(lambda: (_ for _ in ()).throw(throttled(0.1)))
    assert registry.key("gpt-4o").breaker is not None
    assert registry.key("gpt-4o").breaker.state is rls.State.CLOSED
    with pytest.raises(ProviderError):
        shield.call(lambda: (_ for _ in ()).throw(ProviderError(503)))
    assert registry.key("gpt-4o").breaker.state is rls.State.OPEN


def test_a_token_limited_key_estimates_from_the_arguments_and_settles_from_usage() -> None:
    registry, _ = configured({"default": {"tpm": 10_000}})
    key = registry.key("gpt-4o")

    def create(**kwargs: Any) -> dict[str, Any]:
        assert key.limiter.available < 10_000 - 100  # the estimate is held during the call
        return {"usage": {"prompt_tokens": 30, "completion_tokens": 20}}

    messages = [{"role": "user", "content": "x" * 400}]
    key.shield.call(create, messages=messages, max_tokens=100)
    assert key.limiter.available == pytest.approx(10_000 - 50)


def test_a_request_bigger_than_a_limit_is_refused_before_it_is_sent() -> None:
    registry, _ = configured({"default": {"otpm": 1_000}})
    sent = []
    with pytest.raises(ValueError, match=r"\[gpt-4o\] cost .* exceeds the capacity"):
        registry.key("gpt-4o").shield.call(sent.append, max_tokens=4_000, messages=[])
    assert sent == []


def test_a_policy_may_bring_its_own_classifier_and_cost() -> None:
    class EverythingIgnored:
        def classify_result(self, result: object) -> Verdict:
            return Verdict(Outcome.SUCCESS)

        def classify_error(self, error: BaseException) -> Verdict:
            return Verdict(Outcome.IGNORED)

    classifier = EverythingIgnored()
    registry, _ = configured(
        {"default": {"tpm": 100, "classifier": classifier, "cost": lambda *a, **k: {"tokens": 60}}}
    )
    key = registry.key("m")
    assert key.classifier is classifier and key.shield.classifier is classifier
    key.shield.call(lambda: None)
    assert key.limiter.available == pytest.approx(40)


def test_an_adaptive_key_slows_down_after_a_throttle() -> None:
    registry, clock = configured({"default": {"rpm": 60, "adaptive": True, "retry": None}})
    key = registry.key("gpt-4o")
    with pytest.raises(ProviderError):
        key.shield.call(lambda: (_ for _ in ()).throw(throttled(1.0)))
    assert key.limiter.rate_factor == pytest.approx(0.7)
    assert key.limiter.paused_for == pytest.approx(1.0)
    clock.advance(60.0)
    key.shield.call(lambda: "ok")
    assert key.limiter.rate_factor == 1.0


def test_keys_are_not_adaptive_unless_asked() -> None:
    registry, _ = configured({"default": {"rpm": 60, "retry": None}})
    key = registry.key("gpt-4o")
    assert key.guide is not None and key.guide.adaptive is None
    with pytest.raises(ProviderError):
        key.shield.call(lambda: (_ for _ in ()).throw(throttled(1.0)))
    assert key.limiter.rate_factor == 1.0


def test_the_guide_reads_reset_dates_on_the_keys_clock() -> None:
    clock = FakeClock()  # its wall time is 2023-11-14T22:13:20Z
    limiter = Limiter([Limit(60, 60)], clock=clock)
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:14:20Z",  # full in 60 s
    }
    Guide(limiter, clock=clock)(Outcome.THROTTLED, Response(429, headers))
    assert limiter.wait_time() == pytest.approx(60.0)


def test_a_retry_after_date_is_read_on_the_keys_clock() -> None:
    registry, clock = configured({"default": {"retry": None}})
    key = registry.key("gpt-4o")
    when = "Tue, 14 Nov 2023 22:13:50 GMT"  # 30 s after the FakeClock's wall time
    with pytest.raises(ProviderError):
        key.shield.call(lambda: (_ for _ in ()).throw(ProviderError(429, {"Retry-After": when})))
    assert key.limiter.paused_for == pytest.approx(30.0)
    assert LLMClassifier(clock=clock).classify_error(
        ProviderError(429, {"Retry-After": when})
    ).retry_after == pytest.approx(30.0)
