"""Checked by `mypy --strict tests/typing`: decorated functions keep their own signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from typing_extensions import assert_type

import rate_limit_shield as rls


@rls.shielded(model="gpt-4o")
def summarize(text: str, *, limit: int = 100) -> str:
    return text[:limit]


@rls.shielded
async def chat(*, model: str, prompt: str) -> list[str]:
    return [model, prompt]


@rls.retry(attempts=3)
@rls.breaker(failure_threshold=5, recovery_timeout=30)
@rls.rate_limited(rpm=60)
@rls.bulkhead(max_concurrent=4)
def fetch(url: str) -> bytes:
    return url.encode()


@rls.retry
def bare(n: int) -> int:
    return n


@rls.shielded(model="gpt-4o")
def tokens(n: int) -> Iterator[str]:
    yield from ["token"] * n


@rls.shielded(model="gpt-4o")
async def atokens(n: int) -> AsyncIterator[str]:
    for _ in range(n):
        yield "token"


class Client:
    @rls.shielded(model="claude-3")
    def complete(self, prompt: str) -> str:
        return prompt

    @rls.retry(attempts=2)
    async def acomplete(self, prompt: str) -> str:
        return prompt

    @rls.breaker(failure_threshold=2)
    @classmethod
    def build(cls, name: str) -> Client:
        return cls()

    @rls.bulkhead(max_concurrent=1)
    @staticmethod
    def version(major: int) -> str:
        return str(major)

    @rls.retry
    @classmethod
    def default(cls) -> Client:
        return cls()

    @rls.shielded
    @staticmethod
    def ask(*, model: str) -> str:
        return model


def create(*, model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"model": model, "messages": messages}


async def check() -> None:
    assert_type(summarize("hi", limit=3), str)
    assert_type(await chat(model="gpt-4o", prompt="hi"), list[str])
    assert_type(fetch("u"), bytes)
    assert_type(bare(1), int)
    assert_type(tokens(2), Iterator[str])
    assert_type(atokens(2), AsyncIterator[str])
    client = Client()
    assert_type(client.complete("hi"), str)
    assert_type(await client.acomplete("hi"), str)
    assert_type(Client.build("x"), Client)
    assert_type(Client.version(3), str)
    assert_type(Client.default(), Client)
    assert_type(Client.ask(model="m"), str)
    wrapped = rls.shielded(create)
    assert_type(wrapped(model="gpt-4o", messages=[]), dict[str, Any])
    own = rls.shielded(create, registry=rls.Registry())
    assert_type(own(model="gpt-4o", messages=[]), dict[str, Any])
    decorator = rls.retry(attempts=2)
    assert_type(decorator(bare)(2), int)


async def check_arguments_are_checked() -> None:
    # Each ignore below is needed: with --strict an unneeded one is an error, so these lines
    # prove that wrong arguments are caught through the decorators.
    summarize(42)  # type: ignore[arg-type]
    summarize("hi", limit="3")  # type: ignore[arg-type]
    fetch("u", timeout=1)  # type: ignore[call-arg]
    await chat(prompt="hi")  # type: ignore[call-arg]
    Client().complete(1)  # type: ignore[arg-type]
    Client.version("3")  # type: ignore[arg-type]
    rls.retry(attemps=3)  # type: ignore[call-overload]
    rls.breaker(failure_rate="high")  # type: ignore[call-overload]
