"""Throughput under a provider's rate limits: the bare SDK, the SDK in tenacity, and @shielded.

Run from the repository root (tenacity is in the `bench` extra: `pip install -e '.[bench]'`):

    python benchmarks/provider.py            # 3 arms x 20 s, 50 clients: about 70 s
    python benchmarks/provider.py --quick    # 3 arms x 3 s: a smoke run, the figures are noisy

Each arm gets a fresh `FakeProvider` (full buckets) in a process of its own, so that answering a
storm of 429s costs the clients' event loop nothing, as a real provider's work would not. The
provider allows 20 requests and 5,000 tokens per second per model (token buckets of one second's
worth, refilled continuously); a call costs its prompt plus `max_tokens` (16, exactly what the
provider answers, so nothing is refunded). Prompts cycle short, short, short, long (70 and 720
tokens with the answer): the mix averages 232.5 tokens, so tokens allow 21.5 calls/s and the
request limit binds on average, while the token limit binds whenever long prompts bunch up.

`--clients` asyncio tasks share one `openai.AsyncOpenAI` client and loop for `--seconds`, each
call timed from its first attempt to its final outcome, a success or the error its caller sees:
- bare: the SDK's default retries (2), which honour the provider's `retry-after-ms`;
- tenacity, a typical production set-up: `max_retries=0`, `@tenacity.retry` on RateLimitError,
  APIConnectionError and InternalServerError, `wait_random_exponential(multiplier=0.5, max=10)`,
  `stop_after_attempt(6)`, `reraise=True`;
- shielded: `max_retries=0`, `rls.shielded(client.chat.completions.create)` with the provider's
  advertised limits as the model's policy, 6 attempts and `max_wait` 60 s.

Workers start no call after `--seconds`; calls then in flight may finish until `--grace` later
(default 1 s, shorter than the 2.5 s that 50 queued calls need at 20/s, so the provider stays
busy), and those still running are then cancelled and not counted. So every counted call ended,
and was admitted by the provider, within the window W = seconds + grace. "allowed" is what the
provider's buckets admit in W for the mix of calls completed: min over buckets of
(capacity + rate * W) / mean cost per call. 429s and requests are the provider's own counters;
latencies cover every counted call, successes and errors. The end lines check the targets of the
shielded arm: PASS or FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import openai
import tenacity

import rate_limit_shield as rls
from rate_limit_shield import Limit
from rate_limit_shield.testing import FakeProvider

MODEL = "bench-model"
MAX_TOKENS = 16  # also the provider's answer length: a call is charged prompt + 16, no refund
PROMPT_BYTES = (200, 200, 200, 2_800)  # 54 and 704 prompt tokens (bytes / 4, + 4 per message)
FILLER = "the quick brown fox jumps over the lazy dog "
RETRYABLE = (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError)

Create = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Limits:
    """The provider's limits per model: what it enforces, what the policy says, what it allows."""

    requests: float
    tokens: float
    per_seconds: float

    def provider(self) -> FakeProvider:
        return FakeProvider(
            requests=self.requests,
            tokens=self.tokens,
            per_seconds=self.per_seconds,
            completion_tokens=MAX_TOKENS,
        )

    def policy(self) -> list[Limit]:
        return [
            Limit(self.requests, self.per_seconds),
            Limit(self.tokens, self.per_seconds, "tokens"),
        ]

    def allowed(self, seconds: float, tokens_per_call: float) -> float:
        """Calls the buckets admit in `seconds` from full: the scarcer bucket decides."""
        return min(
            (amount + amount / self.per_seconds * seconds) / cost
            for amount, cost in ((self.requests, 1.0), (self.tokens, tokens_per_call))
        )


LIMITS = Limits(requests=20, tokens=5_000, per_seconds=1.0)


def prompt(size: int) -> list[dict[str, str]]:
    text = (FILLER * (size // len(FILLER) + 1))[:size]
    return [{"role": "user", "content": text}]


PROMPTS = [prompt(size) for size in PROMPT_BYTES]
COSTS = [FakeProvider.prompt_tokens(messages) + MAX_TOKENS for messages in PROMPTS]


# -- the provider, in a process of its own ---------------------------------------------------------


def serve(limits: Limits, connection: Connection) -> None:
    """The child process: serve until told to stop, then send back the provider's counters."""
    with limits.provider() as provider:
        connection.send(provider.url)
        connection.recv()
        connection.send((provider.received, provider.statuses[429]))


class ProviderProcess:
    """A fresh FakeProvider in a child process; `counters()` stops it and returns
    (requests received, 429s answered)."""

    def __init__(self, limits: Limits) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with an event loop
        self._connection, child = context.Pipe()
        self._process = context.Process(target=serve, args=(limits, child), daemon=True)

    def __enter__(self) -> str:
        self._process.start()
        url: str = self._connection.recv()
        return url

    def counters(self) -> tuple[int, int]:
        self._connection.send("stop")
        received, throttled = self._connection.recv()
        return int(received), int(throttled)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:  # the child still waits to be told to stop
            self._process.terminate()
        self._process.join()
        self._connection.close()


# -- the three arms --------------------------------------------------------------------------------


def with_tenacity(sdk_create: Create) -> Create:
    # An `async def` of our own: openai's `create` does not look like a coroutine function, so
    # tenacity would wrap it in its sync loop, which sees only the coroutine and retries nothing.
    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(RETRYABLE),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=10),
        stop=tenacity.stop_after_attempt(6),
        reraise=True,
    )
    async def create(**kwargs: Any) -> Any:
        return await sdk_create(**kwargs)

    return create


def shielded(sdk_create: Create) -> Create:
    registry = rls.Registry()  # its own: a fresh limiter, as the provider's buckets are fresh
    registry.configure(
        {MODEL: {"limits": LIMITS.policy(), "retry": {"attempts": 6}, "max_wait": 60}}
    )
    create: Create = rls.shielded(registry=registry)(sdk_create)
    return create


@dataclass(frozen=True)
class Arm:
    """How the SDK client is set up, and what wraps its `chat.completions.create`."""

    max_retries: int
    wrap: Callable[[Create], Create]


ARMS = {
    "bare SDK (2 retries)": Arm(openai.DEFAULT_MAX_RETRIES, lambda create: create),
    "SDK + tenacity": Arm(0, with_tenacity),
    "@shielded": Arm(0, shielded),
}


# -- running an arm --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    end: float  # seconds from the arm's start
    latency: float
    cost: int  # tokens the provider charges it
    error: str | None  # the class of the exception its caller saw


@dataclass(frozen=True)
class Result:
    calls: list[Call]
    window: float
    received: int
    throttled: int

    @property
    def completed(self) -> list[Call]:
        return [call for call in self.calls if call.error is None]

    @property
    def allowed(self) -> float:
        """What the provider admits in the window, of the mix of calls completed (of the
        planned mix when none was)."""
        costs = [call.cost for call in self.completed] or COSTS
        return LIMITS.allowed(self.window, statistics.fmean(costs))

    @property
    def errors(self) -> Counter[str]:
        return Counter(call.error for call in self.calls if call.error is not None)


async def worker(create: Create, first: int, start: float, stop: float, calls: list[Call]) -> None:
    """Call in a loop until `stop`, cycling through the prompts from `first`."""
    turn = first
    while (began := time.monotonic()) < stop:
        index = turn % len(PROMPTS)
        turn += 1
        error = None
        try:
            await create(model=MODEL, messages=PROMPTS[index], max_tokens=MAX_TOKENS)
        except Exception as exc:
            error = type(exc).__name__
        ended = time.monotonic()
        calls.append(Call(ended - start, ended - began, COSTS[index], error))


async def drive(arm: Arm, url: str, seconds: float, clients: int, grace: float) -> list[Call]:
    """Run the clients against the provider at `url`; the calls that ended within the window."""
    calls: list[Call] = []
    async with openai.AsyncOpenAI(
        base_url=url + "/v1", api_key="x", max_retries=arm.max_retries
    ) as sdk:
        create = arm.wrap(sdk.chat.completions.create)
        start = time.monotonic()
        tasks = [
            asyncio.ensure_future(worker(create, index, start, start + seconds, calls))
            for index in range(clients)
        ]
        _, running = await asyncio.wait(tasks, timeout=seconds + grace)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return [call for call in calls if call.end <= seconds + grace]


def run_arm(arm: Arm, seconds: float, clients: int, grace: float) -> Result:
    provider = ProviderProcess(LIMITS)
    with provider as url:
        calls = asyncio.run(drive(arm, url, seconds, clients, grace))
        received, throttled = provider.counters()
    return Result(calls, seconds + grace, received, throttled)


# -- the report ------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (linear interpolation); NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def throttled_share(result: Result) -> float:
    return result.throttled / result.received if result.received else 0.0


def check(target: str, passed: bool) -> None:
    print(f"{'PASS' if passed else 'FAIL'}  {target}")


def report(results: dict[str, Result]) -> None:
    header = (
        f"{'arm':<22}{'completed':>10}{'allowed':>9}{'fraction':>10}{'requests':>10}"
        f"{'429s':>7}{'429 %':>8}{'errors':>8}{'p50 s':>8}{'p95 s':>8}"
    )
    print(header)
    for name, result in results.items():
        latencies = [call.latency for call in result.calls]
        completed = len(result.completed)
        print(
            f"{name:<22}{completed:>10}{result.allowed:>9.0f}{completed / result.allowed:>10.3f}"
            f"{result.received:>10}{result.throttled:>7}{throttled_share(result):>8.1%}"
            f"{sum(result.errors.values()):>8}{percentile(latencies, 0.5):>8.2f}"
            f"{percentile(latencies, 0.95):>8.2f}"
        )
    print()
    for name, result in results.items():
        kinds = ", ".join(f"{kind} {count}" for kind, count in result.errors.most_common())
        print(f"errors surfaced, {name}: {kinds or 'none'}")
    print()
    ours = results["@shielded"]
    check(
        f"@shielded completes at least 95 % of the allowed calls: "
        f"{len(ours.completed) / ours.allowed:.1%}",
        len(ours.completed) >= 0.95 * ours.allowed,
    )
    check(
        f"@shielded gets at most 1 % of its requests answered 429: {throttled_share(ours):.2%}",
        throttled_share(ours) <= 0.01,
    )
    # The provider refuses nothing but with a 429 and a hint here (no call is larger than a
    # bucket), so every error a caller sees is one that retrying later would have absorbed.
    check(
        f"@shielded surfaces no error a retry could absorb: {sum(ours.errors.values())}",
        not ours.errors,
    )


def positive(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=positive, default=20.0, help="load per arm (20)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent async clients (50)")
    parser.add_argument("--grace", type=float, default=1.0, help="drain after --seconds (1)")
    parser.add_argument("--quick", action="store_true", help="3 s per arm, whatever --seconds says")
    options = parser.parse_args()
    if options.clients < 1:
        parser.error(f"--clients: {options.clients!r} must be at least 1")
    if not options.grace >= 0:
        parser.error(f"--grace: {options.grace!r} must be >= 0")
    seconds = 3.0 if options.quick else options.seconds

    mean = statistics.fmean(COSTS)
    print(
        f"provider: {LIMITS.requests:g} requests and {LIMITS.tokens:g} tokens per "
        f"{LIMITS.per_seconds:g} s; calls cost {' / '.join(map(str, COSTS))} tokens "
        f"(mean {mean:g}): tokens allow {LIMITS.tokens / LIMITS.per_seconds / mean:.1f} calls/s, "
        f"requests {LIMITS.requests / LIMITS.per_seconds:g}"
    )
    print(f"{options.clients} clients, {seconds:g} s per arm + {options.grace:g} s grace\n")
    results = {
        name: run_arm(arm, seconds, options.clients, options.grace) for name, arm in ARMS.items()
    }
    report(results)


if __name__ == "__main__":
    main()
