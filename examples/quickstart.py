"""A shielded call to a flaky fake LLM, printing what the shield did.

Run it with:  python examples/quickstart.py

The fake provider fails, throttles, goes down and comes back; one `Shield` with a rate limit,
a circuit breaker and a retry policy keeps the calls inside 20 requests per second, retries
what is worth retrying, stops calling a provider that is down and probes it back.
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
    """What a 503 from the provider looks like to the caller."""


class FakeLLM:
    """Plays a script of answers: "ok", "fail" (a 503) or "throttle" (a 429 with Retry-After)."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.requests = 0

    def complete(self, prompt: str) -> str:
        self.requests += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "fail":
            raise ProviderDown("503 Service Unavailable")
        if step == "throttle":
            raise RateLimited("429 Too Many Requests", retry_after=0.2)
        return f"summary of {prompt!r}"


def report(event: Event) -> None:
    """An event listener: one line per decision the shield made."""
    what = {
        "retry": f"attempt {event.attempt} failed, retrying in {event.delay or 0:.2f}s",
        "throttled": f"the server asked for a pause: key paused {event.delay or 0:.2f}s",
        "succeeded": f"attempt {event.attempt} succeeded",
        "gave_up": f"gave up after attempt {event.attempt}",
        "rejected": "refused without calling",
    }[event.kind]
    cause = f" ({type(event.error).__name__}: {event.error})" if event.error else ""
    print(f"    shield: {what}{cause}")


def summarize(shield: Shield, llm: FakeLLM, prompt: str) -> None:
    print(f"call: summarize {prompt!r}")
    started = time.monotonic()
    try:
        answer = shield.call(llm.complete, prompt)
        print(f"  -> {answer}  ({time.monotonic() - started:.2f}s)")
    except CircuitOpen as exc:
        print(f"  -> CircuitOpen, retry after {exc.retry_after:.1f}s")
    except ProviderDown as exc:
        print(f"  -> {exc!r}; {' '.join(getattr(exc, '__notes__', []))}")


def main() -> None:
    random.seed(7)  # the jitter of the backoff, for a repeatable demo
    llm = FakeLLM(["fail", "fail", "ok", "throttle", "ok"] + ["fail"] * 4)
    breaker = CircuitBreaker(failure_threshold=4, recovery_timeout=1.0, name="fake-gpt")
    shield = Shield(
        Limiter([Limit(amount=20, per_seconds=1)], name="fake-gpt"),  # 20 requests per second
        breaker,
        RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.5),
        timeout=3.0,
        name="fake-gpt",
        on_event=report,
    )
    for prompt in ["quarterly report", "release notes", "design doc", "roadmap", "postmortem"]:
        summarize(shield, llm, prompt)

    print(f"\n... {breaker.recovery_timeout:.0f}s later the provider is back")
    time.sleep(breaker.recovery_timeout)
    print(f"breaker: {breaker.state.value}; the next call is its probe")
    summarize(shield, llm, "incident review")
    print(f"breaker: {breaker.state.value}")

    print("\na burst of 40 calls against the 20 requests/s limit:")
    shield.on_event = None
    started = time.monotonic()
    for n in range(40):
        shield.call(llm.complete, f"page {n}")
    elapsed = time.monotonic() - started
    print(f"  -> 40 calls in {elapsed:.2f}s: what the bucket held at once, the rest paced at 20/s")
    print(f"\nthe provider saw {llm.requests} requests in all")


if __name__ == "__main__":
    main()
