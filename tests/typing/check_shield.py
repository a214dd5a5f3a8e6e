"""Checked by `mypy --strict tests/typing`: the shield keeps the wrapped function's types."""

from __future__ import annotations

from typing_extensions import assert_type

from rate_limit_shield import Shield


def complete(prompt: str, max_tokens: int = 16) -> str:
    return prompt[:max_tokens]


async def acomplete(prompt: str) -> list[str]:
    return [prompt]


async def check() -> None:
    shield = Shield()
    assert_type(shield.call(complete, "hi", max_tokens=3), str)
    assert_type(await shield.acall(acomplete, "hi"), list[str])
