"""The decorators on every kind of callable, stacked and shared, and streams through them.

Timing runs on a `FakeClock` (the `shield_clock` fixture, `isolated()` or a registry's clock).
Real time only where threads really run at the same time (generous bounds), and in one test
of the real clock's own state, which waits for nothing.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest

import rate_limit_shield as rls
from rate_limit_shield import (
    Bulkhead,
    BulkheadFull,
    CircuitBreaker,
    CircuitOpen,
    ConfigError,
    Limit,
    Limiter,
    RateLimited,
    Registry,
    RetryPolicy,
    State,
)
from rate_limit_shield.testing import FakeClock, isolated

PATIENCE = 10.0
"""Seconds a thread may take to reach a state: generous, only a failing test waits that long."""

Decorator = Callable[[Any], Any]
Factory = Callable[[FakeClock], Decorator]


class Boom(Exception):
    """The provider failed."""


class Body:
    """What a decorated callable does on each call: fails `failures` times, then returns "ok".

    `on_call` runs first on every call (to block a thread in flight, for example).
    """

    def __init__(self, failures: float = 0, on_call: Callable[[], object] | None = None) -> None:
        self.failures = failures
        self.on_call = on_call
        self.calls = 0
        self.errors: list[Boom] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.on_call is not None:
            self.on_call()
        if self.calls <= self.failures:
            error = Boom(f"failure {self.calls}")
            self.errors.append(error)
            raise error
        return "ok"


# -- SDK-like objects ---------------------------------------------------------------------------


class Stream:
    """Like the SDKs' sync streams: found by its class name, iterated, closed."""

    def __init__(self, source: Iterator[Any]) -> None:
        self._source = source
        self.response = SimpleNamespace(headers={"x-request-id": "req-1"})
        self.closed = False

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        return next(self._source)

    def close(self) -> None:
        self.closed = True


class AsyncStream:
    """Like the SDKs' async streams: found by its class name, iterated, closed by awaiting."""

    def __init__(self, source: Iterator[Any]) -> None:
        self._source = source
        self.response = SimpleNamespace(headers={"x-request-id": "req-1"})
        self.closed = False

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:
        await asyncio.sleep(0)
        try:
            return next(self._source)
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        self.closed = True


class Completions:
    def __init__(self, body: Body) -> None:
        self._body = body

    def create(self, *, model: str, **params: Any) -> str:
        return self._body()


class FakeClient:
    """`client.chat.completions.create`, as the OpenAI SDK spells it."""

    def __init__(self, body: Body) -> None:
        self.chat = SimpleNamespace(completions=Completions(body))


def produce(body: Body) -> Iterator[str]:
    yield body()


# -- every kind of callable -----------------------------------------------------------------------
# Each builder decorates a callable of its kind whose work is `body`, and returns a function that
# calls it with `model=` and runs the call to its end: awaited, or its stream read to the end.

Call = Callable[[str], Any]


def sync_function(decorate: Decorator, body: Body) -> Call:
    @decorate
    def complete(*, model: str) -> str:
        return body()

    return lambda model: complete(model=model)


def async_function(decorate: Decorator, body: Body) -> Call:
    @decorate
    async def complete(*, model: str) -> str:
        await asyncio.sleep(0)
        return body()

    return lambda model: asyncio.run(complete(model=model))


def instance_method(decorate: Decorator, body: Body) -> Call:
    class Client:
        @decorate
        def complete(self, *, model: str) -> str:
            return body()

    return lambda model: Client().complete(model=model)


def class_method(decorate: Decorator, body: Body) -> Call:
    class Client:
        @decorate
        @classmethod
        def complete(cls, *, model: str) -> str:
            return body()

    return lambda model: Client.complete(model=model)


def static_method(decorate: Decorator, body: Body) -> Call:
    class Client:
        @decorate
        @staticmethod
        def complete(*, model: str) -> str:
            return body()

    return lambda model: Client.complete(model=model)


def sdk_bound_method(decorate: Decorator, body: Body) -> Call:
    create = decorate(FakeClient(body).chat.completions.create)
    return lambda model: create(model=model, messages=[])


def generator_function(decorate: Decorator, body: Body) -> Call:
    @decorate
    def stream(*, model: str) -> Iterator[str]:
        yield body()

    return lambda model: list(stream(model=model))


def async_generator_function(decorate: Decorator, body: Body) -> Call:
    @decorate
    async def stream(*, model: str) -> Any:
        yield body()

    async def read(model: str) -> list[str]:
        return [item async for item in stream(model=model)]

    return lambda model: asyncio.run(read(model))


def returns_sdk_stream(decorate: Decorator, body: Body) -> Call:
    @decorate
    def create(*, model: str) -> Stream:
        return Stream(produce(body))

    return lambda model: list(create(model=model))


def returns_sdk_async_stream(decorate: Decorator, body: Body) -> Call:
    @decorate
    async def create(*, model: str) -> AsyncStream:
        return AsyncStream(produce(body))

    async def read(model: str) -> list[str]:
        return [item async for item in await create(model=model)]

    return lambda model: asyncio.run(read(model))


class Kind(NamedTuple):
    build: Callable[[Decorator, Body], Call]
    streams: bool = False

    def delivered(self, value: str) -> Any:
        """What a call returns when the body returns `value`: a stream's items are a list."""
        return [value] if self.streams else value


KINDS = {
    "sync function": Kind(sync_function),
    "async function": Kind(async_function),
    "instance method": Kind(instance_method),
    "classmethod": Kind(class_method),
    "staticmethod": Kind(static_method),
    "SDK bound method": Kind(sdk_bound_method),
    "generator function": Kind(generator_function, streams=True),
    "async generator function": Kind(async_generator_function, streams=True),
    "returns a Stream": Kind(returns_sdk_stream, streams=True),
    "returns an AsyncStream": Kind(returns_sdk_async_stream, streams=True),
}


def cases(table: dict[str, Any]) -> Any:
    return pytest.mark.parametrize("case", table.values(), ids=table.keys())


each_kind = pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())


# -- model policies on the default registry, inside isolated() ---------------------------------

POLICIES = {
    "retrying": {"retry": {"attempts": 3}, "breaker": None},
    "breaking": {"retry": None, "breaker": {"failure_threshold": 2, "recovery_timeout": 30}},
    "limited": {"rpm": 1, "max_wait": 0, "retry": None, "breaker": None},
    "bulkheaded": {"bulkhead": {"max_concurrent": 1}, "retry": None, "breaker": None},
    "everything": {
        "rpm": 1,
        "max_wait": 0,
        "retry": {"attempts": 3},
        "breaker": {"failure_threshold": 1},
        "bulkhead": {"max_concurrent": 1},
    },
}


@pytest.fixture
def clock(shield_clock: FakeClock) -> FakeClock:
    """Fresh default-registry state on a FakeClock, with `POLICIES` (undone after the test)."""
    rls.configure(POLICIES)
    return shield_clock


def shielded_variants(model: str) -> dict[str, Factory]:
    """The three ways `@shielded` names a model, each naming `model` (the call passes it too)."""
    return {
        "@shielded(model=name)": lambda clock: rls.shielded(model=model),
        "@shielded": lambda clock: rls.shielded,
        "@shielded(model=callable)": lambda clock: rls.shielded(model=lambda *a, **kw: model),
    }


# -- each decorator applied to each kind --------------------------------------------------------

RETRY: dict[str, Factory] = {
    "@retry": lambda clock: rls.retry,
    "@retry()": lambda clock: rls.retry(),
    "@retry(attempts=3)": lambda clock: rls.retry(attempts=3),
    "@retry(RetryPolicy)": lambda clock: rls.retry(RetryPolicy(3, base_delay=0.1)),
    "@retry(model=)": lambda clock: rls.retry(model="retrying"),
    **shielded_variants("retrying"),
}


@each_kind
@cases(RETRY)
def test_retry_decorators_retry_every_kind(clock: FakeClock, kind: Kind, case: Factory) -> None:
    body = Body(failures=2)
    call = kind.build(case(clock), body)
    assert call("retrying") == kind.delivered("ok")
    assert body.calls == 3
    assert len(clock.sleeps) == 2  # two backoffs, on the FakeClock


@each_kind
@cases(RETRY)
def test_retry_decorators_raise_the_last_error_with_a_note(
    clock: FakeClock, kind: Kind, case: Factory
) -> None:
    body = Body(failures=math.inf)
    call = kind.build(case(clock), body)
    with pytest.raises(Boom) as raised:
        call("retrying")
    assert raised.value is body.errors[-1]
    assert body.calls == 3
    assert "gave up after 3 attempt(s): attempts used up" in " ".join(raised.value.__notes__)


BREAKER: dict[str, tuple[Factory, int]] = {
    "@breaker": (lambda clock: rls.breaker, 5),
    "@breaker()": (lambda clock: rls.breaker(), 5),
    "@breaker(CircuitBreaker)": (lambda clock: rls.breaker(CircuitBreaker(2, clock=clock)), 2),
    "@breaker(failure_threshold=2)": (lambda clock: rls.breaker(failure_threshold=2), 2),
    "@breaker(model=)": (lambda clock: rls.breaker(model="breaking"), 2),
    **{name: (factory, 2) for name, factory in shielded_variants("breaking").items()},
}


@each_kind
@cases(BREAKER)
def test_breaker_decorators_open_on_every_kind(
    clock: FakeClock, kind: Kind, case: tuple[Factory, int]
) -> None:
    factory, threshold = case
    body = Body(failures=math.inf)
    call = kind.build(factory(clock), body)
    for _ in range(threshold):
        with pytest.raises(Boom):
            call("breaking")
    with pytest.raises(CircuitOpen):
        call("breaking")
    assert body.calls == threshold


RATE_LIMITED: dict[str, Factory] = {
    "@rate_limited(rpm=1)": lambda clock: rls.rate_limited(rpm=1, max_wait=0),
    "@rate_limited(Limiter)": lambda clock: rls.rate_limited(
        Limiter([Limit(1, 60)], clock=clock), max_wait=0
    ),
    "@rate_limited(model=)": lambda clock: rls.rate_limited(model="limited"),
    **shielded_variants("limited"),
}


@each_kind
@cases(RATE_LIMITED)
def test_rate_limited_decorators_refuse_past_the_rate_on_every_kind(
    clock: FakeClock, kind: Kind, case: Factory
) -> None:
    body = Body()
    call = kind.build(case(clock), body)
    assert call("limited") == kind.delivered("ok")
    with pytest.raises(RateLimited) as raised:
        call("limited")
    assert raised.value.retry_after == pytest.approx(60.0)
    assert body.calls == 1


BULKHEAD: dict[str, Factory] = {
    "@bulkhead(max_concurrent=1)": lambda clock: rls.bulkhead(max_concurrent=1),
    "@bulkhead(Bulkhead)": lambda clock: rls.bulkhead(Bulkhead(1)),
    "@bulkhead(model=)": lambda clock: rls.bulkhead(model="bulkheaded"),
    **shielded_variants("bulkheaded"),
}


@each_kind
@cases(BULKHEAD)
def test_bulkhead_decorators_refuse_a_second_call_in_flight_on_every_kind(
    clock: FakeClock, kind: Kind, case: Factory
) -> None:
    entered, leave = threading.Event(), threading.Event()

    def stay_in_flight() -> None:
        entered.set()
        assert leave.wait(PATIENCE)

    body = Body(on_call=stay_in_flight)
    call = kind.build(case(clock), body)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(call, "bulkheaded")
        assert entered.wait(PATIENCE)
        try:
            with pytest.raises(BulkheadFull):
                call("bulkheaded")
        finally:
            leave.set()
        assert first.result(PATIENCE) == kind.delivered("ok")
    assert body.calls == 1
    assert call("bulkheaded") == kind.delivered("ok")  # the slot came back


# -- metadata and binding ---------------------------------------------------------------------


def complete(prompt: str, *, model: str = "m", max_tokens: int = 512) -> str:
    """Complete a prompt."""
    return prompt


async def acomplete(prompt: str, *, model: str = "m", max_tokens: int = 512) -> str:
    """Complete a prompt, asynchronously."""
    return prompt


def stream_completion(prompt: str, *, model: str = "m") -> Iterator[str]:
    """Stream a completion."""
    yield prompt


async def astream_completion(prompt: str, *, model: str = "m") -> Any:
    """Stream a completion, asynchronously."""
    yield prompt


FUNCTIONS = [complete, acomplete, stream_completion, astream_completion]

DECORATORS: dict[str, Callable[[], Decorator]] = {
    "@shielded": lambda: rls.shielded,
    "@shielded(model=)": lambda: rls.shielded(model="gpt-4o"),
    "@retry": lambda: rls.retry,
    "@retry(attempts=2)": lambda: rls.retry(attempts=2),
    "@breaker": lambda: rls.breaker,
    "@breaker(failure_threshold=2)": lambda: rls.breaker(failure_threshold=2),
    "@rate_limited(rpm=60)": lambda: rls.rate_limited(rpm=60),
    "@bulkhead(max_concurrent=2)": lambda: rls.bulkhead(max_concurrent=2),
}
each_decorator = pytest.mark.parametrize("make", DECORATORS.values(), ids=DECORATORS.keys())

KIND_PREDICATES = [
    inspect.iscoroutinefunction,
    inspect.isgeneratorfunction,
    inspect.isasyncgenfunction,
]


@each_decorator
@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda fn: fn.__name__)
def test_decorated_function_keeps_its_metadata(make: Callable[[], Decorator], fn: Any) -> None:
    decorated = make()(fn)
    for attribute in ("__name__", "__qualname__", "__doc__", "__module__"):
        assert getattr(decorated, attribute) == getattr(fn, attribute)
    assert inspect.signature(decorated) == inspect.signature(fn)
    assert [predicate(decorated) for predicate in KIND_PREDICATES] == [
        predicate(fn) for predicate in KIND_PREDICATES
    ]


METHODS = ["complete", "from_class", "static"]


def build_client(decorate: Decorator) -> type:
    class Client:
        def complete(self, prompt: str, *, model: str = "m") -> tuple[object, str]:
            """An instance method."""
            return self, prompt

        @classmethod
        def from_class(cls, prompt: str, *, model: str = "m") -> tuple[object, str]:
            """A classmethod."""
            return cls, prompt

        @staticmethod
        def static(prompt: str, *, model: str = "m") -> tuple[object, str]:
            """A staticmethod."""
            return None, prompt

    for name in METHODS:
        setattr(Client, name, decorate(Client.__dict__[name]))
    return Client


@each_decorator
@pytest.mark.parametrize("name", METHODS)
def test_decorated_methods_keep_their_metadata(make: Callable[[], Decorator], name: str) -> None:
    plain, decorated = build_client(lambda fn: fn), build_client(make())
    for reach in (lambda cls: getattr(cls, name), lambda cls: getattr(cls(), name)):
        got, expected = reach(decorated), reach(plain)
        assert got.__name__ == expected.__name__
        assert got.__qualname__ == expected.__qualname__
        assert got.__doc__ == expected.__doc__
        assert inspect.signature(got) == inspect.signature(expected)


@each_decorator
def test_decorated_methods_bind_self_and_cls(
    clock: FakeClock, make: Callable[[], Decorator]
) -> None:
    client_class = build_client(make())

    class Subclass(client_class):  # type: ignore[misc, valid-type]
        pass

    client = Subclass()
    assert client.complete("a", model="gpt-4o") == (client, "a")
    assert Subclass.from_class("b", model="gpt-4o") == (Subclass, "b")
    assert client.from_class("c", model="gpt-4o") == (Subclass, "c")
    assert Subclass.static("d", model="gpt-4o") == (None, "d")
    assert client.static("e", model="gpt-4o") == (None, "e")


def test_wrapped_sdk_method_keeps_its_metadata() -> None:
    create = FakeClient(Body()).chat.completions.create
    wrapped = rls.shielded(create)
    assert (wrapped.__name__, wrapped.__qualname__) == ("create", "Completions.create")
    assert inspect.signature(wrapped) == inspect.signature(create)


# -- the async wrapper --------------------------------------------------------------------


def test_async_wrapper_is_a_coroutine_function_that_starts_nothing_until_awaited(
    clock: FakeClock,
) -> None:
    body = Body()

    @rls.retry(attempts=3)
    async def fetch() -> str:
        return body()

    coroutine = fetch()
    assert inspect.iscoroutine(coroutine)
    assert body.calls == 0
    assert asyncio.run(coroutine) == "ok"
    assert body.calls == 1


def test_async_failure_raised_on_await_is_retried(clock: FakeClock) -> None:
    body = Body(failures=2)

    @rls.retry(attempts=3, backoff="constant", base_delay=1.0)
    async def fetch() -> str:
        await asyncio.sleep(0)  # the failure comes after a suspension, as real I/O does
        return body()

    assert asyncio.run(fetch()) == "ok"
    assert body.calls == 3
    assert clock.sleeps == [1.0, 1.0]


def test_async_failure_raised_on_await_counts_on_the_breaker(clock: FakeClock) -> None:
    body = Body(failures=math.inf)

    @rls.breaker(failure_threshold=1)
    async def fetch() -> str:
        await asyncio.sleep(0)
        return body()

    with pytest.raises(Boom):
        asyncio.run(fetch())
    with pytest.raises(CircuitOpen):
        asyncio.run(fetch())
    assert body.calls == 1


# -- stacking --------------------------------------------------------------------------------


def test_retry_outside_a_breaker_retries_into_its_circuit_open(clock: FakeClock) -> None:
    body = Body(failures=math.inf)

    @rls.retry(attempts=5, backoff="constant", base_delay=1.0)
    @rls.breaker(failure_threshold=2)
    def fetch() -> str:
        return body()

    with pytest.raises(CircuitOpen) as raised:
        fetch()
    assert body.calls == 2  # attempts 3 to 5 met the open circuit of the inner layer
    assert clock.sleeps == [1.0] * 4
    assert "gave up after 5 attempt(s)" in " ".join(raised.value.__notes__)


def test_breaker_outside_a_retry_counts_each_whole_call_once(clock: FakeClock) -> None:
    body = Body(failures=math.inf)

    @rls.breaker(failure_threshold=2)
    @rls.retry(attempts=3, backoff="constant", base_delay=1.0)
    def fetch() -> str:
        return body()

    for _ in range(2):
        with pytest.raises(Boom):
            fetch()
    with pytest.raises(CircuitOpen):
        fetch()
    assert body.calls == 6


def test_rate_limit_inside_a_retry_is_charged_once_per_attempt(clock: FakeClock) -> None:
    limiter = Limiter([Limit(5, 3600)], clock=clock)
    body = Body(failures=2)

    @rls.retry(attempts=3, backoff="constant", base_delay=1.0)
    @rls.rate_limited(limiter)
    def fetch() -> str:
        return body()

    assert fetch() == "ok"
    assert limiter.available == pytest.approx(2.0, abs=0.01)


def test_rate_limit_outside_a_retry_is_charged_once_per_call(clock: FakeClock) -> None:
    limiter = Limiter([Limit(5, 3600)], clock=clock)
    body = Body(failures=2)

    @rls.rate_limited(limiter)
    @rls.retry(attempts=3, backoff="constant", base_delay=1.0)
    def fetch() -> str:
        return body()

    assert fetch() == "ok"
    assert limiter.available == pytest.approx(4.0, abs=0.01)


def test_retry_outside_a_rate_limit_waits_out_its_refusal(clock: FakeClock) -> None:
    @rls.retry(attempts=2, backoff="none", base_delay=0.0)
    @rls.rate_limited(rpm=1, max_wait=0)
    def fetch() -> str:
        return "ok"

    assert fetch() == "ok"
    assert fetch() == "ok"  # the inner RateLimited is a throttle: retried after its hint
    assert clock.sleeps == [pytest.approx(60.0)]


def test_three_stacked_layers_each_apply(clock: FakeClock) -> None:
    body = Body(failures=1)

    @rls.retry(attempts=3, backoff="constant", base_delay=1.0)
    @rls.breaker(failure_threshold=5)
    @rls.rate_limited(rpm=60)
    def fetch(url: str) -> str:
        return body() + url

    assert fetch("/a") == "ok/a"
    assert body.calls == 2
    assert clock.sleeps == [1.0]


# -- shared live primitives -------------------------------------------------------------------


def test_functions_decorated_with_one_circuit_breaker_share_its_state(clock: FakeClock) -> None:
    cb = CircuitBreaker(failure_threshold=2, clock=clock)
    failing, healthy = Body(failures=math.inf), Body()

    @rls.breaker(cb)
    def first() -> str:
        return failing()

    @rls.breaker(cb)
    def second() -> str:
        return healthy()

    for _ in range(2):
        with pytest.raises(Boom):
            first()
    with pytest.raises(CircuitOpen):
        second()
    assert healthy.calls == 0
    assert cb.state is State.OPEN


@pytest.fixture
def registry() -> Registry:
    """Its own registry on a FakeClock: gpt-4o gets one request a minute and a touchy breaker."""
    own = Registry()
    own.configure(
        {
            "gpt-4o": {"rpm": 1, "max_wait": 0, "retry": None, "breaker": {"failure_threshold": 1}},
            "claude-3": {"rpm": 1, "max_wait": 0, "retry": None},
        },
        clock=FakeClock(),
    )
    return own


def test_functions_for_one_model_share_its_limiter(registry: Registry) -> None:
    @rls.shielded(model="gpt-4o", registry=registry)
    def summarize() -> str:
        return "summary"

    @rls.rate_limited(model="gpt-4o", registry=registry)
    def translate() -> str:
        return "translation"

    assert summarize() == "summary"
    with pytest.raises(RateLimited):
        translate()


def test_functions_for_one_model_share_its_breaker(registry: Registry) -> None:
    @rls.breaker(model="gpt-4o", registry=registry)
    def failing() -> str:
        raise Boom("down")

    @rls.shielded(model="gpt-4o", registry=registry)
    def healthy() -> str:
        return "ok"

    with pytest.raises(Boom):
        failing()
    assert registry.key("gpt-4o").breaker.state is State.OPEN
    with pytest.raises(CircuitOpen):
        healthy()


def test_bare_shielded_keeps_each_called_model_apart(registry: Registry) -> None:
    @rls.shielded(registry=registry)
    def chat(*, model: str) -> str:
        return model

    assert chat(model="gpt-4o") == "gpt-4o"
    assert chat(model="claude-3") == "claude-3"  # its own limiter still has its permit
    with pytest.raises(RateLimited):
        chat(model="gpt-4o")


def test_shielded_model_callable_picks_the_model_from_the_call(registry: Registry) -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def pick(prompt: str, *, tier: str) -> str:
        seen.append(((prompt,), {"tier": tier}))
        return {"best": "gpt-4o", "cheap": "claude-3"}[tier]

    @rls.shielded(model=pick, registry=registry)
    def ask(prompt: str, *, tier: str) -> str:
        return prompt

    assert ask("a", tier="best") == "a"
    assert ask("b", tier="cheap") == "b"
    with pytest.raises(RateLimited) as raised:
        ask("c", tier="best")
    assert raised.value.key == "gpt-4o"
    assert seen[0] == (("a",), {"tier": "best"})


def test_bare_shielded_falls_back_when_the_model_is_refused() -> None:
    registry = Registry()
    registry.configure(
        {"primary": {"fallbacks": ["backup"], "retry": None}, "backup": {"retry": None}},
        clock=FakeClock(),
    )
    registry.key("primary").breaker.force_open()

    @rls.shielded(registry=registry)
    def chat(*, model: str) -> str:
        return model

    assert chat(model="primary") == "backup"


def test_decorators_follow_a_new_configuration(registry: Registry) -> None:
    @rls.shielded(model="gpt-4o", registry=registry)
    def summarize() -> str:
        return "summary"

    summarize()
    with pytest.raises(RateLimited):
        summarize()
    registry.configure({"gpt-4o": {"rpm": 100, "max_wait": 0}})
    assert summarize() == "summary"


# -- a decorator's own primitives use the registry's clock --------------------------------------


def test_own_retry_sleeps_on_the_isolated_clock() -> None:
    body = Body(failures=2)

    @rls.retry(attempts=3, backoff="constant", base_delay=2.0)
    def fetch() -> str:
        return body()

    with isolated() as clock:
        assert fetch() == "ok"
    assert clock.sleeps == [2.0, 2.0]


def test_own_rate_limit_waits_on_the_isolated_clock() -> None:
    @rls.rate_limited(rpm=1)
    def fetch() -> str:
        return "ok"

    with isolated() as clock:
        assert [fetch(), fetch()] == ["ok", "ok"]
    assert clock.sleeps == [pytest.approx(60.0)]
    assert clock.monotonic() == pytest.approx(60.0)


def test_own_async_rate_limit_waits_on_the_isolated_clock() -> None:
    @rls.rate_limited(rpm=1)
    async def fetch() -> str:
        return "ok"

    async def twice() -> list[str]:
        return [await fetch(), await fetch()]

    with isolated() as clock:
        assert asyncio.run(twice()) == ["ok", "ok"]
    assert clock.sleeps == [pytest.approx(60.0)]


def test_each_isolated_block_gives_a_decorator_fresh_primitives() -> None:
    @rls.rate_limited(rpm=1, max_wait=0)
    def fetch() -> str:
        return "ok"

    for _ in range(2):
        with isolated():
            assert fetch() == "ok"
            with pytest.raises(RateLimited):
                fetch()


def test_isolated_block_leaves_a_decorators_own_state_as_it_was() -> None:
    # On the real clock: one permit a minute, and this test takes far less than a minute.
    @rls.rate_limited(rpm=1, max_wait=0)
    def fetch() -> str:
        return "ok"

    assert fetch() == "ok"
    with isolated():
        assert fetch() == "ok"
    with pytest.raises(RateLimited):
        fetch()  # the permit spent before the block is still spent after it


def test_configure_keeps_a_decorators_own_state(registry: Registry) -> None:
    @rls.rate_limited(rpm=1, max_wait=0, registry=registry)
    def fetch() -> str:
        return "ok"

    fetch()
    registry.configure({"gpt-4o": {"rpm": 100}}, clock=registry.clock)
    with pytest.raises(RateLimited):
        fetch()


def test_registry_reset_gives_a_decorator_fresh_primitives(registry: Registry) -> None:
    @rls.rate_limited(rpm=1, max_wait=0, registry=registry)
    def fetch() -> str:
        return "ok"

    fetch()
    registry.reset()
    assert fetch() == "ok"


# -- streams ----------------------------------------------------------------------------------


class Feed:
    """The provider's streams: opening n delivers `scripts[n]` (the last one repeats); an
    exception in a script is raised there."""

    def __init__(self, *scripts: list[Any]) -> None:
        self.scripts = scripts
        self.opened = 0

    def open(self) -> Iterator[Any]:
        script = self.scripts[min(self.opened, len(self.scripts) - 1)]
        self.opened += 1
        for item in script:
            if isinstance(item, BaseException):
                raise item
            yield item


class StreamKind:
    """Builds a streaming callable of one kind and drives its streams, through one async API so
    that each scenario is written once for sync and async streams."""

    def __init__(self, build: Callable[[Decorator, Feed], Callable[..., Any]]) -> None:
        self.build = build

    async def open(self, fn: Callable[..., Any]) -> Any:
        return fn(model="m")

    async def next(self, stream: Any) -> Any:
        return next(stream)

    async def read_all(self, stream: Any) -> list[Any]:
        return list(stream)

    async def close(self, stream: Any) -> None:
        stream.close()


class AsyncStreamKind(StreamKind):
    async def open(self, fn: Callable[..., Any]) -> Any:
        opened = fn(model="m")
        return await opened if inspect.isawaitable(opened) else opened

    async def next(self, stream: Any) -> Any:
        return await anext(stream)

    async def read_all(self, stream: Any) -> list[Any]:
        return [item async for item in stream]

    async def close(self, stream: Any) -> None:
        closing = getattr(stream, "aclose", None) or stream.close  # an async generator's name
        await closing()


def build_generator_function(decorate: Decorator, feed: Feed) -> Callable[..., Any]:
    @decorate
    def stream(*, model: str) -> Iterator[Any]:
        yield from feed.open()

    return stream


def build_async_generator_function(decorate: Decorator, feed: Feed) -> Callable[..., Any]:
    @decorate
    async def stream(*, model: str) -> Any:
        for item in feed.open():
            yield item

    return stream


def build_returns_stream(decorate: Decorator, feed: Feed) -> Callable[..., Any]:
    @decorate
    def create(*, model: str) -> Stream:
        return Stream(feed.open())

    return create


def build_returns_async_stream(decorate: Decorator, feed: Feed) -> Callable[..., Any]:
    @decorate
    async def create(*, model: str) -> AsyncStream:
        return AsyncStream(feed.open())

    return create


GENERATOR = StreamKind(build_generator_function)
ASYNC_GENERATOR = AsyncStreamKind(build_async_generator_function)
SDK_STREAM = StreamKind(build_returns_stream)
SDK_ASYNC_STREAM = AsyncStreamKind(build_returns_async_stream)
STREAM_KINDS = {
    "generator function": GENERATOR,
    "async generator function": ASYNC_GENERATOR,
    "returns a Stream": SDK_STREAM,
    "returns an AsyncStream": SDK_ASYNC_STREAM,
}
each_stream_kind = pytest.mark.parametrize("kind", STREAM_KINDS.values(), ids=STREAM_KINDS.keys())
each_sdk_stream_kind = pytest.mark.parametrize(
    "kind", [SDK_STREAM, SDK_ASYNC_STREAM], ids=["Stream", "AsyncStream"]
)


async def spin(rounds: int = 10) -> None:
    """Let the loop run a few turns (an async generator's finalizer closes it in a task)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Provider(NamedTuple):
    """A model `m` on its own registry: retried, with a breaker, one stream at a time."""

    registry: Registry
    clock: FakeClock

    @property
    def key(self) -> rls.Key:
        return self.registry.key("m")

    def decorate(self) -> Decorator:
        return rls.shielded(model="m", registry=self.registry)


@pytest.fixture
def provider() -> Provider:
    clock = FakeClock()
    registry = Registry()
    registry.configure(
        {
            "m": {
                "retry": {"attempts": 3, "backoff": "constant", "base_delay": 1.0},
                "breaker": {"failure_threshold": 2, "recovery_timeout": 10},
                "bulkhead": {"max_concurrent": 1},
            }
        },
        clock=clock,
    )
    return Provider(registry, clock)


@each_stream_kind
# Sync streams driven from the async harness, on a FakeClock: the retry delay blocks nothing.
@pytest.mark.filterwarnings("ignore:rate_limit_shield. the sync call:RuntimeWarning")
def test_stream_failing_before_its_first_item_is_retried(
    provider: Provider, kind: StreamKind
) -> None:
    feed = Feed([Boom("connection reset")], ["a", "b"])
    fn = kind.build(provider.decorate(), feed)

    async def scenario() -> list[Any]:
        return await kind.read_all(await kind.open(fn))

    assert asyncio.run(scenario()) == ["a", "b"]
    assert feed.opened == 2
    assert provider.clock.sleeps == [1.0]


@each_stream_kind
def test_stream_failing_after_an_item_raises_with_a_note_and_is_not_retried(
    provider: Provider, kind: StreamKind
) -> None:
    error = Boom("stream cut")
    feed = Feed(["a", error], ["never", "read"])
    fn = kind.build(provider.decorate(), feed)

    async def scenario() -> None:
        stream = await kind.open(fn)
        assert await kind.next(stream) == "a"
        with pytest.raises(Boom) as raised:
            await kind.next(stream)
        assert raised.value is error

    asyncio.run(scenario())
    assert feed.opened == 1
    assert provider.clock.sleeps == []
    assert any("after delivering items" in note for note in error.__notes__)


@each_stream_kind
def test_stream_failing_after_an_item_counts_on_the_breaker(
    provider: Provider, kind: StreamKind
) -> None:
    feed = Feed(["a", Boom("stream cut")])
    fn = kind.build(provider.decorate(), feed)

    async def fail_midway() -> None:
        with pytest.raises(Boom):
            await kind.read_all(await kind.open(fn))

    asyncio.run(fail_midway())
    assert provider.key.breaker.snapshot()["consecutive_failures"] == 1
    asyncio.run(fail_midway())
    assert provider.key.breaker.state is State.OPEN


@each_stream_kind
def test_stream_holds_its_bulkhead_slot_while_open(provider: Provider, kind: StreamKind) -> None:
    feed = Feed(["a", "b"])
    fn = kind.build(provider.decorate(), feed)
    bulkhead = provider.key.bulkhead

    async def scenario() -> None:
        stream = await kind.open(fn)
        assert await kind.next(stream) == "a"
        assert bulkhead.in_flight == 1
        with pytest.raises(BulkheadFull):
            await kind.next(await kind.open(fn))
        assert await kind.read_all(stream) == ["b"]
        assert bulkhead.in_flight == 0

    asyncio.run(scenario())


# Each ending gets the one stream in a list, and keeps it there unless dropping it is the point.


async def read_to_the_end(kind: StreamKind, streams: list[Any]) -> None:
    assert await kind.read_all(streams[0]) == ["b"]


async def fail(kind: StreamKind, streams: list[Any]) -> None:
    with pytest.raises(Boom):
        await kind.read_all(streams[0])


async def close(kind: StreamKind, streams: list[Any]) -> None:
    await kind.close(streams[0])


async def drop(kind: StreamKind, streams: list[Any]) -> None:
    streams.clear()  # the last reference
    gc.collect()
    await spin()


ENDINGS = {
    "read to the end": (["a", "b"], read_to_the_end),
    "fails": (["a", Boom("stream cut")], fail),
    "closed": (["a", "b"], close),
    "garbage-collected": (["a", "b"], drop),
}


@each_stream_kind
@pytest.mark.parametrize("ending", ENDINGS.values(), ids=ENDINGS.keys())
def test_stream_gives_its_bulkhead_slot_back_however_it_ends(
    provider: Provider, kind: StreamKind, ending: tuple[list[Any], Any]
) -> None:
    script, end = ending
    fn = kind.build(provider.decorate(), Feed(script))
    bulkhead = provider.key.bulkhead

    async def scenario() -> None:
        streams = [await kind.open(fn)]
        assert await kind.next(streams[0]) == "a"
        assert bulkhead.in_flight == 1
        await end(kind, streams)
        assert bulkhead.in_flight == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", [GENERATOR, SDK_STREAM], ids=["generator function", "Stream"])
def test_break_out_of_a_for_loop_gives_the_slot_back(provider: Provider, kind: StreamKind) -> None:
    fn = kind.build(provider.decorate(), Feed(["a", "b"]))
    for item in fn(model="m"):
        assert item == "a"
        assert provider.key.bulkhead.in_flight == 1
        break
    assert provider.key.bulkhead.in_flight == 0


def test_with_block_closes_a_sync_sdk_stream(provider: Provider) -> None:
    create = SDK_STREAM.build(provider.decorate(), Feed(["a", "b"]))
    with create(model="m") as stream:
        assert next(stream) == "a"
        assert provider.key.bulkhead.in_flight == 1
    assert stream.closed
    assert provider.key.bulkhead.in_flight == 0


def test_async_with_block_closes_an_async_sdk_stream(provider: Provider) -> None:
    create = SDK_ASYNC_STREAM.build(provider.decorate(), Feed(["a", "b"]))

    async def scenario() -> AsyncStream:
        async with await create(model="m") as stream:
            assert await anext(stream) == "a"
            assert provider.key.bulkhead.in_flight == 1
        return stream

    assert asyncio.run(scenario()).closed
    assert provider.key.bulkhead.in_flight == 0


@each_sdk_stream_kind
def test_closing_the_guard_closes_the_sdk_stream(provider: Provider, kind: StreamKind) -> None:
    fn = kind.build(provider.decorate(), Feed(["a", "b"]))

    async def scenario() -> Any:
        stream = await kind.open(fn)
        await kind.next(stream)
        await kind.close(stream)
        return stream

    assert asyncio.run(scenario()).closed


@each_stream_kind
def test_half_open_probe_is_held_until_the_stream_ends(
    provider: Provider, kind: StreamKind
) -> None:
    fn = kind.build(provider.decorate(), Feed(["a", "b"]))
    breaker = provider.key.breaker
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.OPEN
    provider.clock.advance(10)

    async def scenario() -> None:
        probe = await kind.open(fn)
        assert await kind.next(probe) == "a"
        with pytest.raises(CircuitOpen):  # the one probe slot is still taken
            await kind.next(await kind.open(fn))
        assert breaker.state is State.HALF_OPEN
        await kind.read_all(probe)
        assert breaker.state is State.CLOSED

    asyncio.run(scenario())


@each_sdk_stream_kind
def test_sdk_stream_attributes_stay_reachable_through_the_guard(
    provider: Provider, kind: StreamKind
) -> None:
    fn = kind.build(provider.decorate(), Feed(["a", "b"]))

    async def scenario() -> None:
        stream = await kind.open(fn)
        assert isinstance(stream, (Stream, AsyncStream))
        assert stream.response.headers["x-request-id"] == "req-1"
        assert stream.closed is False
        await kind.read_all(stream)

    asyncio.run(scenario())


@each_stream_kind
def test_empty_stream_ends_at_once_and_gives_its_slot_back(
    provider: Provider, kind: StreamKind
) -> None:
    fn = kind.build(provider.decorate(), Feed([]))

    async def scenario() -> list[Any]:
        return await kind.read_all(await kind.open(fn))

    assert asyncio.run(scenario()) == []
    assert provider.key.bulkhead.in_flight == 0


# -- the kill switch --------------------------------------------------------------------------


@pytest.fixture
def disabled() -> Iterator[None]:
    rls.disable()
    yield
    rls.enable()


@each_kind
def test_disable_makes_shielded_a_pass_through_on_every_kind(
    clock: FakeClock, disabled: None, kind: Kind
) -> None:
    body = Body(failures=math.inf)
    call = kind.build(rls.shielded(model="everything"), body)
    for _ in range(3):  # neither retried, nor rate limited, nor cut off by the breaker
        with pytest.raises(Boom):
            call("everything")
    assert body.calls == 3
    assert clock.sleeps == []


def occupied_bulkhead() -> Bulkhead:
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    return bulkhead


SINGLE_PARTS: dict[str, Callable[[], Decorator]] = {
    "@retry(attempts=3)": lambda: rls.retry(attempts=3),
    "@breaker(failure_threshold=1)": lambda: rls.breaker(failure_threshold=1),
    "@rate_limited(rpm=1)": lambda: rls.rate_limited(rpm=1, max_wait=0),
    "@bulkhead(full Bulkhead)": lambda: rls.bulkhead(occupied_bulkhead()),
    "@shielded without a model": lambda: rls.shielded,
}


@pytest.mark.parametrize("make", SINGLE_PARTS.values(), ids=SINGLE_PARTS.keys())
def test_disable_makes_each_decorator_a_pass_through(
    clock: FakeClock, disabled: None, make: Callable[[], Decorator]
) -> None:
    body = Body(failures=math.inf)
    fetch = make()(body)
    for _ in range(3):
        with pytest.raises(Boom):
            fetch()
    assert body.calls == 3


def test_enable_restores_every_decorator(clock: FakeClock) -> None:
    body = Body(failures=math.inf)

    @rls.retry(attempts=3)
    def fetch() -> str:
        return body()

    rls.disable()
    try:
        assert not rls.is_enabled()
        with pytest.raises(Boom):
            fetch()
        assert body.calls == 1
    finally:
        rls.enable()
    assert rls.is_enabled()
    with pytest.raises(Boom):
        fetch()
    assert body.calls == 4


ENV_PROBE = """
import rate_limit_shield as rls

calls = []

@rls.retry(attempts=3, backoff="none", base_delay=0)
def fetch():
    calls.append(1)
    raise RuntimeError("down")

try:
    fetch()
except RuntimeError:
    pass
print(rls.is_enabled(), len(calls))
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", "False 1"), ("true", "False 1"), (" Yes ", "False 1"), ("on", "False 1"),
     ("0", "True 3"), ("", "True 3")],
)  # fmt: skip
def test_disabled_environment_variable_is_read_at_import(value: str, expected: str) -> None:
    env = {**os.environ, "RATE_LIMIT_SHIELD_DISABLED": value}
    env.pop("RATE_LIMIT_SHIELD_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", ENV_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == expected


# -- bad arguments ----------------------------------------------------------------------------


def starts(text: str) -> str:
    return "^" + re.escape(text)


BAD_ARGUMENTS: dict[str, tuple[Callable[[], object], str]] = {
    "@rate_limited()": (lambda: rls.rate_limited(), starts("@rate_limited: give a Limiter")),
    "@bulkhead()": (lambda: rls.bulkhead(), starts("@bulkhead: give a Bulkhead")),
    "@breaker(failure_rate=1.5)": (
        lambda: rls.breaker(failure_rate=1.5),
        starts("@breaker.failure_rate: 1.5 is not in (0, 1]"),
    ),
    "@retry(attempts=0)": (lambda: rls.retry(attempts=0), starts("@retry.attempts: 0 is not")),
    "@retry(attemps=3)": (lambda: rls.retry(attemps=3), starts("@retry: unknown key 'attemps'")),
    "@rate_limited(rpm=0)": (
        lambda: rls.rate_limited(rpm=0),
        starts("@rate_limited.rpm: 0 is not"),
    ),
    "@bulkhead(max_concurrent=0)": (
        lambda: rls.bulkhead(max_concurrent=0),
        starts("@bulkhead.max_concurrent: 0 is not"),
    ),
    "@breaker(cb, failure_threshold=3)": (
        lambda: rls.breaker(CircuitBreaker(), failure_threshold=3),
        starts("@breaker: give one of a CircuitBreaker or keyword arguments, not several"),
    ),
    "@bulkhead(Bulkhead, model=)": (
        lambda: rls.bulkhead(Bulkhead(1), model="gpt-4o"),
        starts("@bulkhead: give one of a Bulkhead or model=, not several"),
    ),
    '@retry("x")': (lambda: rls.retry("x"), "^@retry: .*'x'"),
    '@breaker("x")': (lambda: rls.breaker("x"), "^@breaker: .*'x'"),
    "@rate_limited bare": (
        lambda: rls.rate_limited(complete),
        starts("@rate_limited: expected a Limiter"),
    ),
    "@bulkhead bare": (lambda: rls.bulkhead(complete), starts("@bulkhead: expected a Bulkhead")),
    "@shielded(model=42)": (lambda: rls.shielded(model=42), starts("model=42 is not")),
    '@shielded(model="")': (lambda: rls.shielded(model=""), starts("model='' is not")),
}


@pytest.mark.parametrize(("decorate", "pattern"), BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_decorator_arguments_are_config_errors_naming_them(
    decorate: Callable[[], object], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        decorate()


def test_bare_shielded_call_without_a_model_is_a_config_error(clock: FakeClock) -> None:
    body = Body()

    @rls.shielded
    def chat(prompt: str) -> str:
        return body()

    @rls.shielded
    async def achat(prompt: str) -> str:
        return body()

    with pytest.raises(ConfigError, match="no model for this call"):
        chat("hi")
    with pytest.raises(ConfigError, match="no model for this call"):
        asyncio.run(achat("hi"))
    assert body.calls == 0


# -- what a call gives back -------------------------------------------------------------------


@each_decorator
def test_call_returns_the_functions_own_result(
    clock: FakeClock, make: Callable[[], Decorator]
) -> None:
    reply = object()

    @make()
    def chat(*, model: str) -> object:
        return reply

    assert chat(model="gpt-4o") is reply


def test_rate_limited_retry_after_counts_down(clock: FakeClock) -> None:
    @rls.rate_limited(rpm=1, max_wait=0)
    def fetch() -> str:
        return "ok"

    fetch()
    clock.advance(15)
    with pytest.raises(RateLimited) as raised:
        fetch()
    assert raised.value.retry_after == pytest.approx(45.0)


def test_circuit_open_retry_after_counts_down_to_the_probe(clock: FakeClock) -> None:
    body = Body(failures=1)

    @rls.breaker(failure_threshold=1, recovery_timeout=30)
    def fetch() -> str:
        return body()

    with pytest.raises(Boom):
        fetch()
    clock.advance(10)
    with pytest.raises(CircuitOpen) as raised:
        fetch()
    assert raised.value.retry_after == pytest.approx(20.0)
    clock.advance(20)
    assert fetch() == "ok"  # the probe goes through
    assert body.calls == 2


def test_retry_stopped_by_its_opened_breaker_raises_circuit_open_from_the_error(
    clock: FakeClock,
) -> None:
    body = Body(failures=math.inf)

    @rls.shielded(model="everything")
    def fetch() -> str:
        return body()

    with pytest.raises(CircuitOpen) as raised:
        fetch()
    assert body.calls == 1
    assert raised.value.__cause__ is body.errors[0]
    assert raised.value.key == "everything"
