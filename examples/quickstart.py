"""Shielded calls to two flaky fake LLMs, printing what the shield did.

Run it with:  python examples/quickstart.py

Policies are configured once, per model or pattern; one decorated function serves every model
named by its `model=` argument. The fake "gpt" fails, throttles, goes down and comes back; the
shield retries what is worth retrying, stops calling it while it is down, falls back to the fake
"claude" meanwhile, probes gpt back, and paces a burst to the configured requests per minute.
"""

from __future__ import annotations

import random
import time

import rate_limit_shield as rls


class ProviderDown(Exception):
    """What a 503 from the provider looks like to the caller."""


class FakeLLM:
    """Plays a script of answers: "ok", "fail" (a 503) or "throttle" (a 429 with Retry-After)."""

    def __init__(self, name: str, script: list[str]) -> None:
        self.name = name
        self.script = script
        self.requests = 0

    def complete(self, prompt: str) -> str:
        self.requests += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "fail":
            raise ProviderDown("503 Service Unavailable")
        if step == "throttle":
            raise rls.RateLimited("429 Too Many Requests", retry_after=0.2)
        return f"{self.name}: summary of {prompt!r}"


PROVIDERS = {
    "fake-gpt-4o": FakeLLM("gpt", ["fail", "fail", "ok", "throttle", "ok"] + ["fail"] * 4),
    "fake-claude": FakeLLM("claude", []),
}


def report(event: rls.Event) -> None:
    """An event listener: one line per decision the shield made."""
    what = {
        "retry": f"attempt {event.attempt} failed, retrying in {event.delay or 0:.2f}s",
        "throttled": f"the server asked for a pause: key paused {event.delay or 0:.2f}s",
        "succeeded": f"attempt {event.attempt} succeeded",
        "gave_up": f"gave up after attempt {event.attempt}",
        "rejected": "refused without calling",
        "fallback": f"falling back to {event.fallback}",
        "fell_back": f"{event.fallback} answered instead",
    }[event.kind]
    cause = f" ({type(event.error).__name__}: {event.error})" if event.error else ""
    print(f"    {event.key}: {what}{cause}")


rls.configure(
    {
        "fake-gpt*": {
            "limits": [rls.Limit(20, per_seconds=1, burst=10)],  # 20 per second, bursts of 10
            "retry": {"attempts": 3, "base_delay": 0.05, "max_delay": 0.5},
            "breaker": {"failure_threshold": 4, "recovery_timeout": 1.0},
            "timeout": 3.0,  # for a whole call: attempts and waits included
            "fallbacks": ["fake-claude"],
        },
        "fake-claude": {"rpm": 600, "bulkhead": {"max_concurrent": 4}},
    },
    on_event=report,
)


@rls.shielded  # the policy comes from the call's `model=` argument
def complete(prompt: str, *, model: str) -> str:
    return PROVIDERS[model].complete(prompt)


def summarize(prompt: str) -> None:
    print(f"call: summarize {prompt!r}")
    started = time.monotonic()
    try:
        answer = complete(prompt, model="fake-gpt-4o")
        print(f"  -> {answer}  ({time.monotonic() - started:.2f}s)")
    except ProviderDown as exc:
        print(f"  -> {exc!r}; {' '.join(getattr(exc, '__notes__', []))}")


def main() -> None:
    random.seed(7)  # the jitter of the backoff, for a repeatable demo
    for prompt in ["quarterly report", "release notes", "design doc", "roadmap", "postmortem"]:
        summarize(prompt)

    gpt = rls.default_registry().key("fake-gpt-4o")
    print(f"\n... 1s later gpt is back; its breaker is {gpt.breaker.state.value}")
    time.sleep(1.0)
    print(f"breaker: {gpt.breaker.state.value}; the next call is its probe")
    summarize("incident review")
    print(f"breaker: {gpt.breaker.state.value}")

    print("\na burst of 40 calls against gpt's limit of 20 requests per second:")
    rls.configure({**rls.default_registry().policies})  # the same policies, without the report
    started = time.monotonic()
    for n in range(40):
        complete(f"page {n}", model="fake-gpt-4o")
    elapsed = time.monotonic() - started
    print(f"  -> 40 calls in {elapsed:.2f}s: what the bucket held at once, the rest paced at 20/s")
    seen = ", ".join(f"{llm.name} {llm.requests}" for llm in PROVIDERS.values())
    print(f"\nrequests the providers saw: {seen}")


if __name__ == "__main__":
    main()
