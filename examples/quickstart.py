"""A shielded call to a flaky fake LLM, printing what the shield did.

Run it with:  python examples/quickstart.py
"""

from __future__ import annotations

import random
import time

from rate_limit_shield import (
    CircuitBreaker,
    CircuitOpen,
    Event,
    Limit,
    Limiter,
    RateLimited,
    RetryPolicy,
    Shield,
)


class ProviderDown(Exception):
    """What a 503 from the provider looks like to us."""


class FakeLLM:
    """Fails the first two calls, throttles one, then answers; goes down for good later."""

    def __init__(self) -> None:
        self.calls = 0
        self.script = ["fail", "fail", "ok", "throttle", "ok", "ok"] + ["fail"] * 20

    def complete(self, prompt: str) -> str:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step == "fail":
            raise ProviderDown("503 Service Unavailable")
        if step == "throttle":
            raise RateLimited("429 Too Many Requests", retry_after=0.2)
        return f"summary of {prompt!r}"


def report(event: Event) -> None:
    detail = f" in {event.delay:.2f}s" if event.delay is not None else ""
    cause = f" after {type(event.error).__name__}: {event.error}" if event.error else ""
    print(f"    shield: {event.kind} (attempt {event.attempt}){detail}{cause}")


def main() -> None:
    random.seed(7)
    llm = FakeLLM()
    shield = Shield(
        Limiter([Limit(amount=20, per_seconds=1)]),  # 20 requests per second
        CircuitBreaker(failure_threshold=4, recovery_timeout=5.0),
        RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.5),
        timeout=3.0,
        name="fake-gpt",
        on_event=report,
    )
    for prompt in [
        "quarterly report",
        "release notes",
        "incident review",
        "design doc",
        "roadmap",
        "postmortem",
    ]:
        print(f"call: summarize {prompt!r}")
        started = time.monotonic()
        try:
            answer = shield.call(llm.complete, prompt)
            print(f"  -> {answer}  ({time.monotonic() - started:.2f}s)")
        except CircuitOpen as exc:
            print(f"  -> refused at once: {exc}")
        except ProviderDown as exc:
            print(f"  -> failed: {exc!r}; {' '.join(getattr(exc, '__notes__', []))}")
    print(f"provider saw {llm.calls} requests; breaker is {shield.breaker.state.value}")


if __name__ == "__main__":
    main()
