"""The demo (`rate-limit-shield demo`): the quickstart scenario, against the fake provider.

One shielded function calls a fake "gpt" and a fake "claude" over plain HTTP: the fake
OpenAI-style provider serves them in this process, and no SDK is needed. Scripted faults on the
provider show each thing the shield does, in five stages: it retries a 503; waits out a 429's
Retry-After; opens gpt's breaker when gpt goes down and falls back to claude meanwhile; lets a
probe through once the breaker's open time is over, which closes it; and paces a burst to gpt's
rate limit, so that the provider, whose limit is the same, throttles none of it.

`run` plays it on a registry of its own (the default one is left alone), and reports its
`Progress` after every step, for a view to show: the command line's, or any other.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from .clock import SYSTEM_CLOCK, Clock
from .decorators import shielded
from .events import BREAKER, FALLBACK, REJECTED, RETRY, THROTTLED, Event
from .limiter import Limit
from .registry import Registry
from .testing import FakeProvider

__all__ = ["FULL", "QUICK", "GPT", "CLAUDE", "ModelState", "Progress", "Timing", "run"]

GPT = "fake-gpt-4o"
CLAUDE = "fake-claude"
MODELS = (GPT, CLAUDE)
_HTTP_TIMEOUT = 10.0
_WAIT_STEP = 0.1  # how often the wait for the breaker's open time to end reports
_PAST_THE_END = 0.001


class Timing(NamedTuple):
    """The scenario's times and sizes: the full run's let a person follow each stage."""

    base_delay: float  # the retries' backoff starts there...
    max_delay: float  # ...and grows up to there
    throttle: float  # the 429's Retry-After
    recovery: float  # how long gpt's breaker stays open
    rate: int  # gpt's requests per second, at the shield and at the provider
    burst: int  # how many of them the shield lets go at once
    calls: int  # the burst's size


FULL = Timing(0.25, 1.0, 1.0, 3.0, rate=10, burst=5, calls=55)
QUICK = Timing(0.05, 0.2, 0.2, 0.5, rate=20, burst=10, calls=30)


class ModelState(NamedTuple):
    """What one model went through so far: calls made for it, answers it gave, the shield's
    decisions on it, requests its provider saw, and its breaker, bucket and pause now."""

    model: str
    calls: int
    answered: int
    retries: int
    throttled: int
    refused: int
    fell_back: int
    requests: int
    breaker: str
    left: float
    paused_for: float


class Progress(NamedTuple):
    """Where the demo is: stage `stage` of `stages` (0 before the first), `done` of its `total`
    steps, what it is doing now, every line of what happened so far (each stage's heading, then
    what happened in it, indented), each model's state, and the provider's answers by status."""

    stage: int
    stages: int
    title: str
    done: int
    total: int
    doing: str
    log: tuple[str, ...]
    models: tuple[ModelState, ...]
    elapsed: float
    statuses: dict[int, int]


class _Answer(NamedTuple):
    model: str
    text: str


class _Demo:
    """One run: the provider, the registry and its shielded function, and what happened."""

    def __init__(
        self,
        provider: FakeProvider,
        timing: Timing,
        clock: Clock,
        report: Callable[[Progress], None],
    ) -> None:
        self.provider = provider
        self.timing = timing
        self.clock = clock
        self.report = report
        self.started = clock.monotonic()
        self.stage, self.title, self.done, self.total, self.doing = 0, "", 0, 0, ""
        self.log: list[str] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.registry = Registry()
        self.registry.configure(self._policies(), clock=clock, on_event=self._event)
        url = provider.url + FakeProvider.OPENAI_PATH
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1

        @shielded(registry=self.registry)  # the policy of each call's `model=`
        def complete(prompt: str, *, model: str) -> _Answer:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
            request = urllib.request.Request(
                url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
            )
            try:
                with opener.open(request, timeout=_HTTP_TIMEOUT) as response:
                    answer = json.load(response)
            except urllib.error.HTTPError as error:  # its status and headers tell the shield
                error.read()
                error.close()
                raise
            return _Answer(model, answer["choices"][0]["message"]["content"])

        self.complete = complete

    def _policies(self) -> dict[str, dict[str, Any]]:
        timing = self.timing
        return {
            GPT: {
                "limits": [Limit(timing.rate, per_seconds=1, burst=timing.burst)],
                "retry": {
                    "attempts": 3,
                    "base_delay": timing.base_delay,
                    "max_delay": timing.max_delay,
                },
                "breaker": {"failure_threshold": 4, "recovery_timeout": timing.recovery},
                "timeout": 10 * timing.recovery,  # for a whole call: attempts and waits included
                "fallbacks": [CLAUDE],
            },
            CLAUDE: {"rpm": 600, "bulkhead": {"max_concurrent": 4}},
        }

    # -- what happened -----------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        self.counts[event.key, event.kind] += 1
        line = _EVENT_LINES.get(event.kind)
        if line is not None:
            cause = f" ({_cause(event.error)})" if event.error is not None else ""
            self.say(f"{event.key}: {line(event)}{cause}")

    def say(self, line: str, *, heading: bool = False) -> None:
        """Log `line`: a stage's heading as is, what happened in it indented."""
        self.log.append(line if heading else "  " + line)
        self.show()

    def show(self) -> None:
        self.report(self.progress())

    def progress(self) -> Progress:
        # The models first: reading a breaker may move it (open to half-open), which logs a line
        # and reports; the log read after it has that line too, so no report goes back in time.
        models = tuple(self._state(model) for model in MODELS)
        return Progress(
            stage=self.stage,
            stages=len(_STAGES),
            title=self.title,
            done=self.done,
            total=self.total,
            doing=self.doing,
            log=tuple(self.log),
            models=models,
            elapsed=self.clock.monotonic() - self.started,
            statuses=dict(self.provider.statuses),
        )

    def _state(self, model: str) -> ModelState:
        key = self.registry.key(model)
        counts = self.counts
        return ModelState(
            model=model,
            calls=counts[model, "call"],
            answered=counts[model, "answered"],
            retries=counts[model, RETRY],
            throttled=counts[model, THROTTLED],
            refused=counts[model, REJECTED],
            fell_back=counts[model, FALLBACK],
            requests=self.provider.received_by_model().get(model, 0),
            breaker="-" if key.breaker is None else key.breaker.state.value,
            left=min(key.limiter.levels().values()),
            paused_for=key.limiter.paused_for,
        )

    # -- what it does --------------------------------------------------------------------------

    def begin(self, title: str, total: int) -> None:
        self.stage += 1
        self.title, self.done, self.total, self.doing = title, 0, total, ""
        self.say(f"[{self.stage}/{len(_STAGES)}] {title}", heading=True)

    def call(self, prompt: str, *, quiet: bool = False) -> _Answer:
        self.doing = f"calling {GPT}: {prompt}"
        self.counts[GPT, "call"] += 1
        self.show()
        started = self.clock.monotonic()
        answer = self.complete(prompt, model=GPT)
        self.counts[answer.model, "answered"] += 1
        self.done += 1
        self.doing = ""
        if not quiet:
            took = self.clock.monotonic() - started
            self.say(f"{GPT}: {prompt!r} answered by {answer.model} in {took:.2f}s")
        self.show()
        return answer

    def wait(self, seconds: float, why: str) -> None:
        """Sleep `seconds` in `_steps(seconds)` steps, reporting the time left at each."""
        steps = _steps(seconds)
        for step in range(steps):
            self.doing = f"{why}: {seconds * (1 - step / steps):.1f}s left"
            self.show()
            self.clock.sleep(seconds / steps)
            self.done += 1
        self.doing = ""


def _steps(seconds: float) -> int:
    return max(1, round(seconds / _WAIT_STEP))


def _cause(error: BaseException) -> str:
    """An error in a few words: its HTTP status, or the refusal and when it ends."""
    status = getattr(error, "code", None)
    if isinstance(status, int):
        return f"HTTP {status}"
    retry_after = getattr(error, "retry_after", None)
    when = f": retry after {retry_after:.2f}s" if isinstance(retry_after, float) else ""
    return f"{type(error).__name__}{when}"


_EVENT_LINES: dict[str, Callable[[Event], str]] = {
    RETRY: lambda event: f"attempt {event.attempt} failed, retrying in {event.delay or 0:.2f}s",
    THROTTLED: lambda event: f"throttled: the key pauses {event.delay or 0:.2f}s",
    REJECTED: lambda event: "refused without calling",
    FALLBACK: lambda event: f"falling back to {event.fallback}",
    BREAKER: lambda event: f"breaker {' -> '.join(event.transition or ())}: {event.reason}",
}
"""The events the demo tells of, one line each (the rest are counted only)."""


def _retries(demo: _Demo) -> None:
    demo.begin(f"{GPT} answers 503 twice: the shield retries with backoff", 1)
    demo.provider.fail(503, times=2, model=GPT)
    demo.call("quarterly report")


def _throttle(demo: _Demo) -> None:
    retry_after = demo.timing.throttle
    demo.begin(f"a 429 with Retry-After {retry_after:g}s: the key pauses, then retries", 1)
    demo.provider.throttle(retry_after, model=GPT)
    demo.call("release notes")


def _outage(demo: _Demo) -> None:
    demo.begin(f"{GPT} goes down: its breaker opens, {CLAUDE} answers meanwhile", 3)
    demo.provider.fail(503, times=4, model=GPT)  # 3 attempts, then the 4th failure opens it
    for prompt in ("design doc", "roadmap", "postmortem"):
        demo.call(prompt)


def _recovery(demo: _Demo) -> None:
    recovery = demo.timing.recovery
    breaker = demo.registry.key(GPT).breaker
    assert breaker is not None
    # What is left of the open time, and a moment: steps that add up to it exactly may fall
    # short of its end by a rounding error.
    left = (breaker.retry_after or 0.0) + _PAST_THE_END
    title = f"{recovery:g}s later the breaker lets one probe through; it closes"
    demo.begin(title, _steps(left) + 1)
    demo.wait(left, f"{GPT}'s breaker is open")
    demo.call("incident review")


def _burst(demo: _Demo) -> None:
    timing = demo.timing
    demo.begin(
        f"{timing.calls} calls at once: {timing.burst} go, the rest paced at {timing.rate}/s",
        timing.calls,
    )
    started = demo.clock.monotonic()
    throttled = demo.provider.statuses[429]
    for number in range(1, timing.calls + 1):
        demo.call(f"page {number}", quiet=True)
        if number % timing.burst == 0 or number == timing.calls:
            demo.say(f"{number} calls in {demo.clock.monotonic() - started:.2f}s")
    refused = demo.provider.statuses[429] - throttled
    demo.say(f"the provider, whose limit is {timing.rate}/s too, throttled {refused} of them")


_STAGES = (_retries, _throttle, _outage, _recovery, _burst)


def run(
    report: Callable[[Progress], None], *, timing: Timing = FULL, clock: Clock | None = None
) -> Progress:
    """Play the scenario, calling `report(progress)` after every step; returns the last
    progress. `clock` (default: the system's) times the shield and the provider alike: a
    `testing.FakeClock` plays it without waiting."""
    clock = clock if clock is not None else SYSTEM_CLOCK
    with FakeProvider(requests=timing.rate, per_seconds=1, clock=clock) as provider:
        demo = _Demo(provider, timing, clock, report)
        for stage in _STAGES:
            stage(demo)
        demo.title, demo.doing = "done", ""
        demo.show()
        return demo.progress()

