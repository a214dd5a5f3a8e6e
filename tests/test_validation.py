"""Misconfiguration is refused where it is written: at `configure`, in a policy or a TOML file,
or when decorating, with a `ConfigError` naming the key path and the value, never later in the
middle of a call with another error in place of the function's own."""

from __future__ import annotations

import asyncio
import gc
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rate_limit_shield as rls
from rate_limit_shield import Bulkhead, ConfigError, Limit, Policy, Registry
from rate_limit_shield.outcome import SUCCESS, Outcome, Verdict
from rate_limit_shield.testing import FakeClock


def starts(text: str) -> str:
    return "^" + re.escape(text)


# -- limits that cannot admit even one request --------------------------------------------------

NO_ROOM_FOR_ONE: dict[str, tuple[dict[str, Any], str]] = {
    "rpm 0.5": ({"rpm": 0.5}, 'policies["m"].rpm: 0.5 holds less than one request'),
    "rpm 1e-300": ({"rpm": 1e-300}, 'policies["m"].rpm: 1e-300 holds less than one request'),
    "rpd 0.9": ({"rpd": 0.9}, 'policies["m"].rpd: 0.9 holds less than one request'),
    "tpm 0.5": ({"tpm": 0.5}, 'policies["m"].tpm: 0.5 holds less than one token'),
    "itpm 0.5": ({"itpm": 0.5}, 'policies["m"].itpm: 0.5 holds less than one input token'),
    "otpm 0.5": ({"otpm": 0.5}, 'policies["m"].otpm: 0.5 holds less than one output token'),
    "limits burst 0.2": (
        {"limits": [{"amount": 10, "per_seconds": 60, "burst": 0.2}]},
        'policies["m"].limits[0].burst: 0.2 holds less than one request',
    ),
    "limits amount 0.5": (
        {"limits": [{"amount": 0.5, "per_seconds": 1, "unit": "tokens"}]},
        'policies["m"].limits[0].amount: 0.5 holds less than one token',
    ),
    "Limit burst 0.2": (
        {"limits": [Limit(100, 60, "output_tokens", burst=0.2)]},
        'policies["m"].limits[0]: Limit(amount=100, per_seconds=60, unit=\'output_tokens\', '
        "burst=0.2) holds less than one output token",
    ),
    "Limit amount 0.5": (
        {"limits": [Limit(1000, 60), Limit(0.5, 60)]},
        'policies["m"].limits[1]: Limit(amount=0.5, per_seconds=60',
    ),
}


@pytest.mark.parametrize(
    ("policy", "message"), NO_ROOM_FOR_ONE.values(), ids=NO_ROOM_FOR_ONE.keys()
)
def test_a_limit_holding_less_than_one_unit_is_refused_at_configure(
    policy: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=starts(message)):
        Registry().configure({"m": policy})


def test_a_limit_below_one_suggests_the_same_rate_as_one_per_longer_period() -> None:
    with pytest.raises(ConfigError) as raised:
        Registry().configure({"m": {"rpm": 0.5}, "t": {"otpm": 0.25}})
    assert str(raised.value).endswith(
        '(for one request every 120s: limits=[{"amount": 1, "per_seconds": 120}])'
    )
    with pytest.raises(ConfigError) as raised:
        Registry().configure({"t": {"otpm": 0.25}})
    assert str(raised.value).endswith(
        'limits=[{"amount": 1, "per_seconds": 240, "unit": "output_tokens"}])'
    )


def test_a_limit_of_exactly_one_is_accepted() -> None:
    registry = Registry()
    registry.configure({"m": {"rpm": 1, "limits": [Limit(1000, 60, "tokens", burst=1)]}})
    assert registry.key("m").limiter.try_acquire()


def test_a_policy_built_directly_refuses_a_limit_below_one() -> None:
    with pytest.raises(ConfigError, match=starts("Policy.tpm: 0.25 holds less than one token")):
        Policy(tpm=0.25)


def test_rate_limited_refuses_a_rate_below_one() -> None:
    with pytest.raises(ConfigError, match=starts("@rate_limited.rpm: 0.5 holds less than one")):
        rls.rate_limited(rpm=0.5)
    with pytest.raises(ConfigError, match=starts("@rate_limited.limits[0]: Limit(amount=5")):
        rls.rate_limited(limits=[Limit(5, 1, burst=0.5)])


def test_a_toml_rate_below_one_is_refused_naming_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text('[policies."gpt-4o"]\nrpm = 0.5\n')
    with pytest.raises(
        ConfigError, match=starts(f'{path}: policies["gpt-4o"].rpm: 0.5 holds less than one')
    ):
        Registry().configure_from_file(path)


# -- bulkheads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1e12, 8.0])
def test_a_float_max_concurrent_is_refused(amount: float) -> None:
    where = 'policies["m"].bulkhead.max_concurrent'
    with pytest.raises(ConfigError, match=starts(f"{where}: {amount} is not an integer")):
        Registry().configure({"m": {"bulkhead": {"max_concurrent": amount}}})


def test_a_huge_max_concurrent_allocates_nothing_and_works() -> None:
    registry = Registry()
    registry.configure({"m": {"bulkhead": {"max_concurrent": 10**12}}})
    bulkhead = registry.key("m").bulkhead
    assert bulkhead is not None
    assert bulkhead.try_acquire() and bulkhead.try_acquire()
    assert bulkhead.snapshot() == {"max_concurrent": 10**12, "in_flight": 2, "waiting": 0}
    bulkhead.release()
    bulkhead.release()
    assert bulkhead.in_flight == 0
    with pytest.raises(RuntimeError, match="released more often than acquired"):
        bulkhead.release()


def test_a_bulkhead_grants_exactly_its_slots_and_reuses_released_ones() -> None:
    bulkhead = Bulkhead(3)
    assert [bulkhead.try_acquire() for _ in range(4)] == [True, True, True, False]
    bulkhead.release()
    assert bulkhead.in_flight == 2
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    for _ in range(3):
        bulkhead.release()
    with pytest.raises(RuntimeError):
        bulkhead.release()
    assert [bulkhead.try_acquire() for _ in range(4)] == [True, True, True, False]


# -- decorator arguments --------------------------------------------------------------------------


class Classifies:
    """A classifier of its own: every result a success, every error a failure."""

    def classify_result(self, result: object) -> Verdict:
        return SUCCESS

    def classify_error(self, error: BaseException) -> Verdict:
        return Verdict(Outcome.FAILURE)


BAD_ARGUMENTS: dict[str, tuple[Callable[[], object], str]] = {
    "@retry(on=5)": (
        lambda: rls.retry(on=5),  # type: ignore[call-overload]
        "@retry.on: 5 is not an exception class",
    ),
    '@retry(on="ConnectionError")': (
        lambda: rls.retry(on="ConnectionError"),  # type: ignore[call-overload]
        "@retry.on: 'ConnectionError' is not an exception class",
    ),
    "@retry(on=(ValueError, 5))": (
        lambda: rls.retry(on=(ValueError, 5)),  # type: ignore[arg-type]
        "@retry.on: (<class 'ValueError'>, 5) is not an exception class",
    ),
    '@retry(ignore="x")': (
        lambda: rls.retry(ignore="x"),  # type: ignore[call-overload]
        "@retry.ignore: 'x' is not an exception class",
    ),
    "@retry(retry_if_result=5)": (
        lambda: rls.retry(retry_if_result=5),  # type: ignore[call-overload]
        "@retry.retry_if_result: 5 is not callable",
    ),
    "@retry(on_event=5)": (
        lambda: rls.retry(attempts=2, on_event=5),  # type: ignore[call-overload]
        "@retry.on_event: 5 is not callable",
    ),
    "@retry(classifier=1)": (
        lambda: rls.retry(classifier=1),  # type: ignore[call-overload]
        "@retry.classifier: 1 is not a classifier",
    ),
    "@shielded(cost=5)": (
        lambda: rls.shielded(cost=5),  # type: ignore[call-overload]
        "@shielded.cost: 5 is not callable",
    ),
    "@shielded(usage=5)": (
        lambda: rls.shielded(usage=5),  # type: ignore[call-overload]
        "@shielded.usage: 5 is not callable",
    ),
    "@shielded(classifier=1)": (
        lambda: rls.shielded(classifier=1),  # type: ignore[call-overload]
        "@shielded.classifier: 1 is not a classifier",
    ),
    '@shielded(on_event="log")': (
        lambda: rls.shielded(on_event="log"),  # type: ignore[call-overload]
        "@shielded.on_event: 'log' is not callable",
    ),
    "@breaker(classifier=3)": (
        lambda: rls.breaker(classifier=3),  # type: ignore[call-overload]
        "@breaker.classifier: 3 is not a classifier",
    ),
    "@rate_limited(cost=5)": (
        lambda: rls.rate_limited(rpm=60, cost=5),  # type: ignore[arg-type]
        "@rate_limited.cost: 5 is not callable",
    ),
    "@rate_limited(usage=5)": (
        lambda: rls.rate_limited(rpm=60, usage=5),  # type: ignore[arg-type]
        "@rate_limited.usage: 5 is not callable",
    ),
    '@shielded("gpt-4o")': (
        lambda: rls.shielded("gpt-4o"),  # type: ignore[call-overload]
        "@shielded: the model is a keyword argument: write @shielded(model='gpt-4o')",
    ),
    '@rate_limited("gpt-4o")': (
        lambda: rls.rate_limited("gpt-4o"),  # type: ignore[arg-type]
        "@rate_limited: the model is a keyword argument: write @rate_limited(model='gpt-4o')",
    ),
    '@retry("gpt-4o")': (
        lambda: rls.retry("gpt-4o"),  # type: ignore[call-overload]
        "@retry: the model is a keyword argument: write @retry(model='gpt-4o')",
    ),
    "@shielded(5)": (
        lambda: rls.shielded(5),  # type: ignore[call-overload]
        "@shielded: expected a function, got 5",
    ),
}


@pytest.mark.parametrize(("decorate", "message"), BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_decorator_arguments_are_refused_when_decorating(
    decorate: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError, match=starts(message)):
        decorate()


def test_good_decorator_arguments_are_accepted(shield_clock: FakeClock) -> None:
    seen: list[object] = []

    @rls.retry(on=(ConnectionError, TimeoutError), ignore=ValueError, retry_if_result=not_)
    @rls.breaker(classifier=Classifies())
    @rls.shielded(model="m", cost=lambda: 1, usage=lambda result: None, on_event=seen.append)
    def fetch() -> str:
        return "ok"

    assert fetch() == "ok"


def not_(value: object) -> bool:
    return not value


# -- classes are not decorated ------------------------------------------------------------------


class Client:
    def __init__(self) -> None:
        self.made = True


DECORATORS: dict[str, Callable[[], Callable[[Any], Any]]] = {
    "shielded": lambda: rls.shielded,
    "shielded(model=)": lambda: rls.shielded(model="m"),
    "rate_limited": lambda: rls.rate_limited(rpm=60),
    "breaker": lambda: rls.breaker,
    "breaker()": lambda: rls.breaker(failure_threshold=2),
    "retry": lambda: rls.retry,
    "retry()": lambda: rls.retry(attempts=2),
    "bulkhead": lambda: rls.bulkhead(max_concurrent=2),
}


@pytest.mark.parametrize("decorator", DECORATORS.values(), ids=DECORATORS.keys())
def test_decorating_a_class_is_refused(decorator: Callable[[], Callable[[Any], Any]]) -> None:
    with pytest.raises(ConfigError, match=r": Client is a class, not a function; decorate "):
        decorator()(Client)


# -- a coroutine never awaited ------------------------------------------------------------------


@pytest.mark.parametrize("decorator", DECORATORS.values(), ids=DECORATORS.keys())
def test_a_coroutine_never_awaited_is_named_after_the_users_function(
    shield_clock: FakeClock, decorator: Callable[[], Callable[[Any], Any]]
) -> None:
    async def summarize(*, model: str = "m") -> str:
        return "summary"

    decorated = decorator()(summarize)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coroutine = decorated(model="m")
        assert coroutine.__qualname__ == summarize.__qualname__
        del coroutine
        gc.collect()
    messages = [str(warning.message) for warning in caught]
    assert any("summarize' was never awaited" in message for message in messages), messages
    assert not any("asynchronous" in message for message in messages), messages


def test_the_decorated_coroutine_still_runs(shield_clock: FakeClock) -> None:
    @rls.shielded(model="m")
    async def summarize() -> str:
        return "summary"

    assert asyncio.run(summarize()) == "summary"
