"""What the Prometheus and OpenTelemetry tests share: one scenario of calls through
`@rls.shielded` on a FakeClock (a throttle then a success, retries given up, an open circuit,
fallbacks), whose errors carry a planted API key in their message, their request's headers and
a URL, so that the tests can check that it reaches no metric label nor span attribute."""

from __future__ import annotations

from typing import Any

import httpx2
import openai

import rate_limit_shield as rls
from rate_limit_shield import Registry
from rate_limit_shield.testing import FakeClock

__all__ = [
    "SECRET", "POLICIES", "secret_error", "new_registry", "run_scenario", "run_paced",
]  # fmt: skip

SECRET = "sk-planted-4f9a1c0e7d3b"
"""An API key that must never leave the errors carrying it."""

POLICIES: dict[str, Any] = {
    "gpt-4o": {
        "rpm": 600,
        "retry": {"attempts": 3},
        "breaker": {"failure_threshold": 3, "recovery_timeout": 30},
        "fallbacks": ["claude-3"],
    },
    "gpt-4o-mini": {"rpm": 600, "retry": {"attempts": 2}},
    "claude-3": {"retry": None},
    "paced": {"limits": [{"amount": 60, "per_seconds": 60, "burst": 1}], "breaker": None},
}


def rate_limit_error(retry_after: str) -> openai.RateLimitError:
    """A 429 as the OpenAI SDK raises it: its request carries the key, as every SDK error's does."""
    request = httpx2.Request(
        "POST",
        f"https://user:{SECRET}@api.openai.com/v1/chat/completions",
        headers={"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET},
    )
    response = httpx2.Response(429, headers={"retry-after": retry_after}, request=request)
    body = {"message": f"Rate limit reached for key {SECRET}", "code": "rate_limit_exceeded"}
    return openai.RateLimitError(f"Rate limit reached for key {SECRET}", response=response,
                                 body=body)  # fmt: skip


def secret_error() -> ConnectionError:
    return ConnectionError(f"connection to redis://:{SECRET}@cache:6379/0 reset")


def new_registry() -> tuple[Registry, FakeClock]:
    clock = FakeClock()
    registry = Registry()
    registry.configure(POLICIES, clock=clock)
    return registry, clock


class Provider:
    """Raises the errors scripted for a model, in turn, then answers."""

    def __init__(self, script: dict[str, list[Exception]]) -> None:
        self.script = script

    def answer(self, model: str) -> str:
        errors = self.script.get(model)
        if errors:
            raise errors.pop(0)
        return f"answer from {model}"


def run_scenario(registry: Registry) -> None:
    """Three calls. gpt-4o-mini: a 429 asking for 2 s (a throttle and a retry), then a success
    on the second attempt. gpt-4o: three failures (two retries, a give-up, the circuit opens),
    then claude-3 answers as its fallback. gpt-4o again: refused (circuit open), and claude-3
    answers again."""
    provider = Provider(
        {"gpt-4o-mini": [rate_limit_error("2")], "gpt-4o": [secret_error() for _ in range(3)]}
    )

    @rls.shielded(registry=registry)
    def complete(*, model: str) -> str:
        return provider.answer(model)

    assert complete(model="gpt-4o-mini") == "answer from gpt-4o-mini"
    assert complete(model="gpt-4o") == "answer from claude-3"
    assert complete(model="gpt-4o") == "answer from claude-3"


def run_paced(registry: Registry) -> None:
    """Two calls at once on "paced", one request a second: the second waits 1 s."""

    @rls.shielded(model="paced", registry=registry)
    def ping() -> str:
        return "pong"

    assert ping() == ping() == "pong"
