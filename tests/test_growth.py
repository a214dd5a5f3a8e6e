"""Growth under unbounded names and classes: model keys made from each call's `model=` are
bounded (idle keys at rest are dropped, busy ones never), a new model costs the same however
many came before, and the caches kept per result class stay bounded."""

from __future__ import annotations

import contextlib
import gc
import threading
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rate_limit_shield as rls
from rate_limit_shield import stream
from rate_limit_shield._bounded import CLASS_CACHE_MAX, remember
from rate_limit_shield.errors import CircuitOpen, ConfigError, RateLimited
from rate_limit_shield.llm import classify
from rate_limit_shield.registry import Registry
from rate_limit_shield.shield import Shield
from rate_limit_shield.testing import FakeClock

AT_REST = {"retry": None}
"""No rate limit: a key on it is at rest as soon as its call has ended."""


def ask(*, model: str) -> str:
    return model


def registry_of(
    policies: dict[str, Any], max_keys: int | None = None
) -> tuple[Registry, FakeClock]:
    clock = FakeClock()
    registry = Registry()
    registry.configure(policies, clock=clock)
    if max_keys is not None:
        registry.max_keys = max_keys
    return registry, clock


def make_models(call: Callable[..., Any], count: int, prefix: str = "other") -> None:
    for index in range(count):
        call(model=f"{prefix}-{index}")


class Traced:
    """Memory allocated from `mark()` to the end of the block: still held, and at the peak.

    Memory allocated before the block is not counted when it is freed: replace it with traced
    memory before `mark()`."""

    held = peak = 0

    def __enter__(self) -> Traced:
        gc.collect()
        tracemalloc.start()
        self.mark()
        return self

    def mark(self) -> None:
        gc.collect()
        self._start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    def __exit__(self, *exc_info: object) -> None:
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.held, self.peak = current - self._start, peak - self._start


# -- item 11: model keys from each call --------------------------------------------------------


def test_a_new_model_costs_the_same_however_many_came_before() -> None:
    registry, _ = registry_of({"default": AT_REST}, max_keys=500)
    call = rls.shielded(ask, registry=registry)
    make_models(call, 10_000)
    with Traced() as more:
        make_models(call, 1_000, prefix="traced")  # the keys held from now on are traced
        more.mark()
        make_models(call, 500, prefix="more")
    # A copy of a per-model cache of 10,000 entries alone takes more than 250 KB.
    assert more.peak < 150_000


def test_memory_stays_bounded_under_unbounded_model_names() -> None:
    registry, clock = registry_of({"default": {"rpm": 60, "retry": None}}, max_keys=500)
    call = rls.shielded(ask, registry=registry)

    def spaced(start: int, count: int) -> None:
        for index in range(start, start + count):
            call(model=f"user-{index}")
            clock.advance(0.01)  # each bucket is full again one second after its call

    spaced(0, 2_000)
    with Traced() as more:
        spaced(2_000, 1_000)  # the keys held from now on are traced
        more.mark()
        spaced(3_000, 5_000)
    assert more.held < 2**20  # 5,000 keys kept would hold more than 8 MiB
    assert len(registry.snapshot()) <= 500


def throttled() -> None:
    error = ConnectionError("throttled")
    error.status_code = 429  # type: ignore[attr-defined]
    error.response = type("Response", (), {"headers": {"retry-after": "30"}})()  # type: ignore[attr-defined]
    raise error


def failing() -> None:
    raise ConnectionError("provider down")


BUSY = {
    # policy of the busy model, what its first call does, what its next call raises
    "drained bucket": ({"rpm": 1, "max_wait": 0, "retry": None}, None, RateLimited),
    "paused": ({"max_wait": 0, "retry": None}, throttled, RateLimited),
    "open breaker": (
        {"retry": None, "breaker": {"failure_threshold": 1}},
        failing,
        CircuitOpen,
    ),
    "counted failure": (
        {"retry": None, "breaker": {"failure_threshold": 2}},
        failing,
        None,  # a second failure opens it: the next call after that is refused
    ),
}


@pytest.mark.parametrize(("policy", "first", "refusal"), BUSY.values(), ids=BUSY.keys())
def test_a_key_that_is_not_at_rest_is_never_dropped(
    policy: dict[str, Any], first: Callable[[], None] | None, refusal: type[Exception] | None
) -> None:
    registry, _ = registry_of({"busy": policy, "default": AT_REST}, max_keys=3)

    @rls.shielded(registry=registry)
    def call(*, model: str, action: Callable[[], None] | None = None) -> str:
        if action is not None:
            action()
        return model

    def attempt(action: Callable[[], None] | None) -> None:
        with contextlib.suppress(ConnectionError):
            call(model="busy", action=action)

    attempt(first)
    make_models(call, 50)
    if refusal is None:
        attempt(failing)
        refusal = CircuitOpen
    with pytest.raises(refusal):
        call(model="busy")


def test_a_key_with_a_call_in_flight_on_its_bulkhead_is_never_dropped() -> None:
    policy = {"bulkhead": {"max_concurrent": 1, "max_wait": 0}, "retry": None}
    registry, _ = registry_of({"busy": policy, "default": AT_REST}, max_keys=3)
    inside: list[str] = []

    @rls.shielded(registry=registry)
    def call(*, model: str) -> str:
        if model == "busy" and not inside:
            inside.append("first")
            make_models(call, 50)  # while this call holds the bulkhead's only slot
            with pytest.raises(rls.BulkheadFull):
                call(model="busy")
        return model

    assert call(model="busy") == "busy"


def test_the_bound_is_exceeded_rather_than_dropping_busy_keys() -> None:
    registry, _ = registry_of({"default": {"rpm": 1, "max_wait": 0, "retry": None}}, max_keys=3)
    call = rls.shielded(ask, registry=registry)
    make_models(call, 10, prefix="drained")
    assert len(registry.snapshot()) == 10
    for index in range(10):
        with pytest.raises(RateLimited):
            call(model=f"drained-{index}")


def test_a_dropped_key_comes_back_fresh_and_shared_by_every_decorator() -> None:
    policies = {"m": {"rpm": 1, "max_wait": 0, "retry": None}, "default": AT_REST}
    registry, clock = registry_of(policies, max_keys=3)
    plain = rls.shielded(ask, registry=registry)
    costed = rls.shielded(ask, registry=registry, cost=lambda **kwargs: 1)
    assert costed(model="m") == "m"
    clock.advance(60)  # full again: at rest
    make_models(plain, 10)
    assert "m" not in registry.snapshot()
    assert plain(model="m") == "m"
    with pytest.raises(RateLimited):  # the decorator with its own options shares the new key
        costed(model="m")


def test_threads_churning_through_new_models_never_over_admit_a_busy_one() -> None:
    policies = {"hot": {"rpm": 50, "max_wait": 0, "retry": None}, "default": AT_REST}
    registry, _ = registry_of(policies, max_keys=5)
    call = rls.shielded(ask, registry=registry)
    admitted: list[str] = []

    def worker(number: int) -> None:
        for index in range(40):
            call(model=f"other-{number}-{index}")
            with contextlib.suppress(RateLimited):
                admitted.append(call(model="hot"))

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 50  # 320 tries, 50 admitted, on one key throughout


def test_a_key_handed_out_is_kept() -> None:
    registry, _ = registry_of({"default": AT_REST}, max_keys=3)
    held = registry.key("held")
    make_models(rls.shielded(ask, registry=registry), 10)
    assert registry.key("held") is held


def test_a_model_named_by_a_decorator_keeps_one_state_for_every_caller() -> None:
    registry, clock = registry_of({"default": {"rpm": 1, "max_wait": 0, "retry": None}}, max_keys=3)
    named = rls.shielded(model="m", registry=registry)(lambda: "named")
    per_call = rls.shielded(ask, registry=registry)
    assert named() == "named"
    clock.advance(60)
    make_models(per_call, 10)  # "m" is at rest, but its decorator holds its pipeline
    assert per_call(model="m") == "m"
    with pytest.raises(RateLimited):
        named()


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
def test_max_keys_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(ConfigError, match="max_keys"):
        Registry().max_keys = value  # type: ignore[assignment]


# -- item 12: caches per result class ----------------------------------------------------------


def test_per_class_caches_stay_bounded_under_classes_made_on_the_fly() -> None:
    registry, _ = registry_of({"default": {"rpm": 10**9}})
    key = registry.key("m")  # its pipeline: stream kinds, the taxonomy and the header guide
    assert key.guide is not None
    first = type("Made", (), {})
    gone = weakref.ref(first)
    key.shield.call(first)
    del first
    for index in range(50_000):
        key.shield.call(type(f"Made{index}", (), {}))
    assert len(stream.KINDS) <= CLASS_CACHE_MAX
    assert len(classify._PLAIN_RESULT_CLASSES) <= CLASS_CACHE_MAX
    assert len(key.guide.skip) <= CLASS_CACHE_MAX
    gc.collect()
    assert gone() is None  # no cache keeps a class made on the fly alive


def test_generators_are_streams_after_the_class_cache_was_emptied() -> None:
    def numbers() -> Iterator[int]:
        yield from (1, 2)

    for index in range(CLASS_CACHE_MAX + 1):
        stream.kind_of(type(f"Made{index}", (), {}))
    assert stream.kind_of(type(numbers())) == stream.SYNC
    assert list(Shield().call(numbers)) == [1, 2]


def test_a_class_cache_is_emptied_when_it_is_full() -> None:
    cache: dict[str, int] = {}
    for index, name in enumerate("abc"):
        remember(cache, name, index, limit=2)
    assert cache == {"c": 2}
