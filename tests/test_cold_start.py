"""Cold start of a shielded client with nothing configured: its first call goes alone.

Before any answer, a key knows nothing of its provider's limits: calls made together would all
go out at once, past a provider's burst. The first goes alone, the others wait for its answer
(or, when it fails without one, the next goes alone); once the key has heard, calls flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

import rate_limit_shield as rls
from rate_limit_shield import RateLimited
from rate_limit_shield.testing import FakeProvider

CALLS = 50  # together, more than the provider's burst of 20
HI = [{"role": "user", "content": "hi"}]
REAL_TIMEOUT = 30.0  # real seconds for threads that take milliseconds


def test_many_sync_calls_at_once_on_a_cold_key_get_no_429() -> None:
    with (
        _cold() as provider,
        openai.OpenAI(base_url=provider.url + "/v1", api_key="k", max_retries=0) as sdk,
    ):
        client = rls.shield_client(sdk)
        errors = _at_once(
            lambda: client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
        )
        assert errors == []
        assert provider.statuses == {200: CALLS}


def test_many_async_calls_at_once_on_a_cold_key_get_no_429() -> None:
    async def main(client: Any) -> None:
        await asyncio.gather(
            *(
                client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
                for _ in range(CALLS)
            )
        )

    with _cold() as provider:
        sdk = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="k", max_retries=0)
        asyncio.run(main(rls.shield_client(sdk)))
        assert provider.statuses == {200: CALLS}


def test_a_key_that_has_heard_lets_calls_go_together() -> None:
    """Once warm, calls are not serialised: two made at once are in flight together."""
    with _cold() as provider:
        client, together = _counting_client(provider)
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
        assert together(2) == 2


def test_a_key_with_configured_limits_has_no_gate() -> None:
    with _cold() as provider:
        rls.configure({"default": {"rpm": 600}})
        _, together = _counting_client(provider)
        assert together(2) == 2


def test_a_first_call_that_fails_without_an_answer_lets_the_next_go_alone() -> None:
    with _cold() as provider:
        rls.configure({"default": {"retry": None}})
        refused: list[httpx.Request] = []

        def refuse_the_first(request: httpx.Request) -> None:
            if not refused:
                refused.append(request)
                raise httpx.ConnectError("refused", request=request)

        http = httpx.Client(event_hooks={"request": [refuse_the_first]})
        sdk = openai.OpenAI(base_url=provider.url + "/v1", api_key="k", http_client=http)
        errors = _at_once(lambda: rls.shield_client(sdk).chat.completions.create(
            model="gpt-4o", messages=HI, max_tokens=5
        ))
        assert [type(error) for error in errors] == [openai.APIConnectionError]
        assert provider.statuses == {200: CALLS - 1}


def test_a_waiter_gives_up_after_its_max_wait() -> None:
    """Real time: the first call is held by the provider; the other waits 0.05 s, no more."""
    with _cold() as provider:
        rls.configure({"default": {"max_wait": 0.05, "retry": None}})
        release = threading.Event()
        first = threading.Event()

        def hold_the_first(request: httpx.Request) -> None:
            if not first.is_set():
                first.set()
                release.wait(REAL_TIMEOUT)

        http = httpx.Client(event_hooks={"request": [hold_the_first]})
        client = rls.shield_client(
            openai.OpenAI(base_url=provider.url + "/v1", api_key="k", http_client=http)
        )
        pioneer = threading.Thread(
            target=client.chat.completions.create,
            kwargs={"model": "gpt-4o", "messages": HI, "max_tokens": 5},
        )
        pioneer.start()
        assert first.wait(REAL_TIMEOUT)
        with pytest.raises(RateLimited, match="first call"):
            client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5)
        release.set()
        pioneer.join(REAL_TIMEOUT)
        assert provider.statuses == {200: 1}


@contextlib.contextmanager
def _cold() -> Iterator[FakeProvider]:
    """A provider with a burst of 20, and a default registry never used. Real time: the calls
    are concurrent, and a FakeClock advanced by one thread's wait would let the next go out
    ahead of the provider's own refill (its answers arrive in real time)."""
    with rls.testing.isolated(), FakeProvider(requests=20, per_seconds=1) as provider:
        rls.configure({"default": {}}, clock=rls.SYSTEM_CLOCK)
        yield provider


def _at_once(call: Callable[[], object], calls: int = CALLS) -> list[BaseException]:
    """Make `calls` calls from as many threads at once; the errors they raised."""
    start = threading.Barrier(calls)
    errors: list[BaseException] = []

    def one() -> None:
        start.wait(REAL_TIMEOUT)
        try:
            call()
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REAL_TIMEOUT)
    return errors


def _counting_client(provider: FakeProvider) -> tuple[Any, Callable[[int], int]]:
    """A shielded client, and `together(n)`: how many of `n` calls made at once were in flight
    together (each request waits up to a real second for the others to be sent)."""
    barrier: list[threading.Barrier] = []
    met: list[bool] = []

    def meet(request: httpx.Request) -> None:
        if barrier:
            try:
                barrier[0].wait(1.0)
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)

    http = httpx.Client(event_hooks={"request": [meet]})
    client = rls.shield_client(
        openai.OpenAI(base_url=provider.url + "/v1", api_key="k", http_client=http)
    )

    def together(calls: int) -> int:
        barrier.append(threading.Barrier(calls))
        errors = _at_once(
            lambda: client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=5),
            calls,
        )
        assert errors == []
        return calls if all(met) else 1

    return client, together
