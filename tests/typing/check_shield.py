"""Checked by `mypy --strict tests/typing`: the shield keeps the wrapped function's types."""

from __future__ import annotations

from typing_extensions import assert_type

from rate_limit_shield import CircuitBreaker, Shield, State, TokenBucket


def complete(prompt: str, max_tokens: int = 16) -> str:
    return prompt[:max_tokens]


async def acomplete(prompt: str) -> list[str]:
    return [prompt]


async def check() -> None:
    shield = Shield()
    assert_type(shield.call(complete, "hi", max_tokens=3), str)
    assert_type(await shield.acall(acomplete, "hi"), list[str])
    assert_type(shield.call(complete, "hi", tokens=2.0), str)
    assert_type(await shield.acall(acomplete, "hi", tokens={"requests": 1}), list[str])
    assert_type(TokenBucket(10, 1).try_acquire(), bool)
    assert_type(CircuitBreaker().state, State)


def check_arguments_are_checked() -> None:
    shield = Shield()
    # Each ignore below is needed: with --strict an unneeded one is an error, so these lines
    # prove that wrong arguments to the wrapped function are caught through the shield.
    shield.call(complete, 42)  # type: ignore[call-overload]
    shield.call(complete, "hi", max_tokens="3")  # type: ignore[arg-type]
    shield.call(complete, "hi", temperature=0.2)  # type: ignore[call-arg]
