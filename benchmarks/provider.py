"""Throughput under a provider's rate limits: the bare SDK, the SDK in tenacity, and ours.

Run from the repository root (tenacity is in the `bench` extra: `pip install -e '.[bench]'`; the
fleet load needs `redis-server` on PATH):

    python benchmarks/provider.py                 # all four loads, 3 arms x 20 s each: 5.5 minutes
    python benchmarks/provider.py --load fleet    # one load only: 70 to 95 s
    python benchmarks/provider.py --seconds 60    # a longer, steadier run: about 14 minutes
    python benchmarks/provider.py --quick         # 3 s per arm: a smoke run, the figures are noisy

Progress (which load and arm, the seconds elapsed, a dot every 5 s) goes to stderr, the tables
to stdout. Each arm of each load gets a fresh `FakeProvider` (full buckets) in a process of its
own, so that answering a storm of 429s costs the clients' event loop nothing, as a real
provider's work would not. Its buckets hold one second's worth and refill continuously: a
per-minute limit enforced a second at a time, as OpenAI does, and stated per minute in the
headers of every answer (20 requests a second is "limit 1200"). Four loads:

- requests: the provider allows 20 requests and 5,000 tokens per second per model; a call costs
  its prompt plus `max_tokens` (16, exactly what the provider answers, so nothing is refunded).
  Prompts cycle short, short, short, long (70 and 720 tokens with the answer): the mix averages
  232.5 tokens, so tokens allow 21.5 calls/s and the request limit binds on average, while the
  token limit binds whenever long prompts bunch up.
- tokens: the provider allows 20 requests and 3,000 tokens per second; calls stream (with
  `stream_options={"include_usage": True}`) and set no `max_tokens`, and the provider answers
  each with 10 to 500 tokens (uniform, seeded by `--seed`: every arm gets the same lengths in
  the order the provider admits calls) at 100 tokens per second, so a call lasts 0.1 to 5 s
  and costs its 54-token prompt plus its answer, 309 on average: about 10 calls/s, and the
  token limit binds. The provider admits such a call on its prompt, then charges its answer
  when its last token is written, as OpenAI and Anthropic settle an answer once it is complete
  (which may leave its bucket in debt). The shield reserves a call that sets no limit as the
  provider admits it, on its prompt (57 estimated), and charges its answer as a debt when its
  stream ends and reports its usage, seconds later: debts that the provider charges a moment
  before the shield hears of them, and that hold back the calls waiting then.
- zero-config: the requests load, with ours as a user who configures nothing has it:
  `rls.shield_client(client)` on a registry never configured, so the built-in policy (3
  attempts, the default retry budget) and no limit but what the provider's headers teach it.
- fleet: the requests load from 4 processes of 25 clients each (every arm), ours on the Redis
  backend (`configure(..., backend=url)` in each process, the provider's limits configured)
  of a `redis-server` the benchmark starts on a free port on 127.0.0.1 and stops by its PID.

`--clients` asyncio tasks (the fleet: 25 in each of its processes) share one process's
`openai.AsyncOpenAI` client and loop for `--seconds` from a start common to all processes, each
call timed from its first attempt to its final outcome, a success (a streamed answer read to its
end) or the error its caller sees:
- bare: the SDK's default retries (2), which honour the provider's `retry-after-ms`;
- tenacity, a typical production set-up: `max_retries=0`, `@tenacity.retry` on RateLimitError,
  APIConnectionError and InternalServerError, `wait_random_exponential(multiplier=0.5, max=10)`,
  `stop_after_attempt(6)`, `reraise=True`;
- ours (zero-config's is above): `max_retries=0`, `rls.shielded(client.chat.completions.create)`
  with the provider's limits as the model's policy, 6 attempts and `max_wait` 60 s, in memory
  or, in the fleet, on Redis.

Workers start no call after `--seconds`. A call counts when the provider admitted it within the
window W = seconds + grace (`--grace`, default 1 s: shorter than the time the calls queued at the
end need, so the provider stays busy) and it completed: a plain answer is admitted when it
arrives, a stream when its first chunk does. Streams admitted by W may finish for as long as the
longest answer takes, plus 2 s; calls still running at that cut-off are cancelled and not counted.
"allowed" is what the provider's buckets admit in W for the mix of calls completed: min over
buckets of (capacity + rate * W (+ the longest answer, the most the last call admitted without
max_tokens overdraws)) / mean cost per call, and "of allowed" the share of it completed,
in calls and tokens alike. 429s and requests are the provider's own counters; tokens/s are the
completed calls' tokens over W; latencies cover every counted call and every error. The end lines
check the targets of ours in each load (zero-config and fleet as the requests load: at least
95 % of allowed and at most 1 % of requests answered 429; tokens: 90 %): PASS or FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import openai
import tenacity
from progress import Progress

import rate_limit_shield as rls
from rate_limit_shield import Limit
from rate_limit_shield.testing import FakeProvider

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# The tests' server helper; mypy finds it only with MYPYPATH=tests.
from redis_server import RedisServer  # type: ignore[import-not-found,unused-ignore]

MODEL = "bench-model"
FILLER = "the quick brown fox jumps over the lazy dog "
RETRYABLE = (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError)
STREAM_SLACK = 2.0  # seconds a stream admitted at the window's end may run past its nominal end

Create = Callable[..., Awaitable[Any]]
Messages = list[dict[str, str]]


def prompt(size: int) -> Messages:
    """One user message of `size` bytes: size / 4 + 4 prompt tokens."""
    text = (FILLER * (size // len(FILLER) + 1))[:size]
    return [{"role": "user", "content": text}]


@dataclass(frozen=True)
class Load:
    """One workload: what the provider allows and answers, and what each call sends."""

    name: str
    requests: float  # the provider's limits per model, per `per_seconds`
    tokens: float
    per_seconds: float
    prompts: tuple[Messages, ...]  # cycled through by each client
    answer: tuple[int, int]  # the shortest and the longest answer, in tokens
    max_tokens: int | None  # what each call asks for (None, or no less than the longest answer)
    pace: float | None  # the answer streams at this many tokens per second; None: not streamed
    target: float  # the share of the allowed throughput our arm must reach
    ours: Arm  # our arm, run beside the bare SDK and tenacity
    processes: int = 1  # the clients run in this many processes...
    clients: int | None = None  # ...of this many each (None: --clients)
    on_redis: bool = False  # our arm's state lives on a redis-server of the benchmark's own

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (*PEERS, self.ours)

    def provider(self, seed: int) -> FakeProvider:
        return FakeProvider(
            requests=self.requests,
            tokens=self.tokens,
            per_seconds=self.per_seconds,
            completion_tokens=self.answer,
            seed=seed,
            stream_pace=self.pace,
        )

    def policy(self) -> list[Limit]:
        return [
            Limit(self.requests, self.per_seconds),
            Limit(self.tokens, self.per_seconds, "tokens"),
        ]

    def allowed(self, seconds: float, tokens_per_call: float) -> float:
        """Calls the buckets admit in `seconds` from full: the scarcer bucket decides. A call
        without max_tokens is admitted on its prompt, so the last one may overdraw the token
        bucket by up to the longest answer."""
        overdraft = self.answer[1] if self.max_tokens is None else 0
        return min(
            (amount + amount / self.per_seconds * seconds + extra) / cost
            for amount, extra, cost in (
                (self.requests, 0, 1.0),
                (self.tokens, overdraft, tokens_per_call),
            )
        )

    @property
    def planned_cost(self) -> float:
        """The mean tokens a call is charged, by the plan: its prompt and its mean answer."""
        prompts = statistics.fmean(FakeProvider.prompt_tokens(p) for p in self.prompts)
        return prompts + statistics.fmean(self.answer)

    @property
    def drain(self) -> float:
        """How long after the window a call it admitted may still run."""
        return 0.0 if self.pace is None else self.answer[1] / self.pace + STREAM_SLACK

    async def send(self, create: Create, messages: Messages) -> tuple[float, int]:
        """One call: when the provider admitted it, and the tokens its usage says it cost."""
        options: dict[str, Any] = {"model": MODEL, "messages": messages}
        if self.max_tokens is not None:
            options["max_tokens"] = self.max_tokens
        if self.pace is None:
            completion = await create(**options)
            return time.monotonic(), completion.usage.total_tokens
        stream = await create(**options, stream=True, stream_options={"include_usage": True})
        admitted, usage = math.nan, None
        async for chunk in stream:
            if math.isnan(admitted):
                admitted = time.monotonic()
            if chunk.usage is not None:  # the last chunk's
                usage = chunk.usage
        if usage is None:
            raise RuntimeError("the stream ended without its usage")
        return admitted, usage.total_tokens


# -- the provider, in a process of its own ---------------------------------------------------------


def serve(load: Load, seed: int, connection: Connection) -> None:
    """The child process: serve until told to stop, then send back the provider's counters."""
    with load.provider(seed) as provider:
        connection.send(provider.url)
        connection.recv()
        connection.send((provider.received, provider.statuses[429]))


class ProviderProcess:
    """A fresh FakeProvider in a child process; `counters()` stops it and returns
    (requests received, 429s answered)."""

    def __init__(self, load: Load, seed: int) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with an event loop
        self._connection, child = context.Pipe()
        self._process = context.Process(target=serve, args=(load, seed, child), daemon=True)

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


# -- the arms -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """How the SDK client is set up, and what its `chat.completions.create` becomes: `wrap` of
    the client, the load, and the load's Redis URL (None: in memory)."""

    name: str
    max_retries: int
    wrap: Callable[[openai.AsyncOpenAI, Load, str | None], Create]


def bare(sdk: openai.AsyncOpenAI, load: Load, backend: str | None) -> Create:
    return sdk.chat.completions.create


def with_tenacity(sdk: openai.AsyncOpenAI, load: Load, backend: str | None) -> Create:
    # An `async def` of our own: openai's `create` does not look like a coroutine function, so
    # tenacity would wrap it in its sync loop, which sees only the coroutine and retries nothing.
    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(RETRYABLE),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=10),
        stop=tenacity.stop_after_attempt(6),
        reraise=True,
    )
    async def create(**kwargs: Any) -> Any:
        return await sdk.chat.completions.create(**kwargs)

    return create


def shielded(sdk: openai.AsyncOpenAI, load: Load, backend: str | None) -> Create:
    """The provider's limits as the model's policy, in memory or on `backend`."""
    registry = rls.Registry()  # its own: a fresh limiter, as the provider's buckets are fresh
    registry.configure(
        {MODEL: {"limits": load.policy(), "retry": {"attempts": 6}, "max_wait": 60}},
        backend=backend,
    )
    create: Create = rls.shielded(registry=registry)(sdk.chat.completions.create)
    return create


def zero_config(sdk: openai.AsyncOpenAI, load: Load, backend: str | None) -> Create:
    """What a user who configures nothing gets: a registry never configured, so every setting
    is the built-in one and the limits are only what the provider's headers say."""
    create: Create = rls.shield_client(sdk, registry=rls.Registry()).chat.completions.create
    return create


PEERS = (
    Arm("bare SDK (2 retries)", openai.DEFAULT_MAX_RETRIES, bare),
    Arm("SDK + tenacity", 0, with_tenacity),
)
SHIELDED = Arm("@shielded", 0, shielded)


REQUEST_PROMPTS = tuple(prompt(size) for size in (200, 200, 200, 2_800))  # 54 and 704 tokens
REQUESTS = Load(
    "requests",
    requests=20,
    tokens=5_000,
    per_seconds=1.0,
    prompts=REQUEST_PROMPTS,
    answer=(16, 16),
    max_tokens=16,
    pace=None,
    target=0.95,
    ours=SHIELDED,
)
LOADS = {
    "requests": REQUESTS,
    "tokens": Load(
        "tokens",
        requests=20,
        tokens=3_000,
        per_seconds=1.0,
        prompts=(prompt(200),),
        answer=(10, 500),
        max_tokens=None,
        pace=100.0,
        target=0.90,
        ours=SHIELDED,
    ),
    "zero-config": replace(
        REQUESTS, name="zero-config", ours=Arm("shield_client, no config", 0, zero_config)
    ),
    "fleet": replace(
        REQUESTS,
        name="fleet",
        ours=Arm("@shielded on Redis", 0, shielded),
        processes=4,
        clients=25,
        on_redis=True,
    ),
}



# -- running an arm --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    admitted: float  # seconds from the arm's start; NaN for a call that failed
    latency: float
    cost: int  # tokens the provider charged it; 0 for a call that failed
    error: str | None  # the class of the exception its caller saw


@dataclass(frozen=True)
class Result:
    load: Load
    calls: list[Call]  # every call that ended before the cut-off
    window: float
    received: int
    throttled: int

    @property
    def completed(self) -> list[Call]:
        return [c for c in self.calls if c.error is None and c.admitted <= self.window]

    @property
    def counted(self) -> list[Call]:
        return [c for c in self.calls if c.error is not None or c.admitted <= self.window]

    @property
    def mean_cost(self) -> float:
        """Of the calls completed; of the planned mix when none was."""
        costs = [call.cost for call in self.completed]
        return statistics.fmean(costs) if costs else self.load.planned_cost

    @property
    def allowed(self) -> float:
        """The calls the provider admits in the window, of the mix completed."""
        return self.load.allowed(self.window, self.mean_cost)

    @property
    def fraction(self) -> float:
        return len(self.completed) / self.allowed

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.received if self.received else 0.0

    @property
    def errors(self) -> Counter[str]:
        return Counter(call.error for call in self.calls if call.error is not None)


async def worker(
    load: Load, create: Create, first: int, start: float, stop: float, calls: list[Call]
) -> None:
    """Call in a loop until `stop`, cycling through the load's prompts from `first`."""
    turn = first
    while (began := time.monotonic()) < stop:
        messages = load.prompts[turn % len(load.prompts)]
        turn += 1
        admitted, cost, error = math.nan, 0, None
        try:
            admitted, cost = await load.send(create, messages)
        except Exception as exc:
            error = type(exc).__name__
        ended = time.monotonic()
        calls.append(Call(admitted - start, ended - began, cost, error))


@dataclass(frozen=True)
class Plan:
    """What each process of an arm runs: its clients against the provider at `url`, our arm's
    state on `backend` (a Redis URL, or None: in memory), calls started for `seconds`, counted
    in the `window`."""

    url: str
    backend: str | None
    seconds: float
    clients: int
    window: float


async def drive(load: Load, arm: Arm, plan: Plan, ready: Callable[[], float]) -> list[Call]:
    """Set up, tell `ready()` so and start at the time it returns; the calls that ended by the
    cut-off."""
    calls: list[Call] = []
    async with openai.AsyncOpenAI(
        base_url=plan.url + "/v1", api_key="x", max_retries=arm.max_retries
    ) as sdk:
        create = arm.wrap(sdk, load, plan.backend)
        start = ready()
        await asyncio.sleep(start - time.monotonic())
        tasks = [
            asyncio.ensure_future(worker(load, create, index, start, start + plan.seconds, calls))
            for index in range(plan.clients)
        ]
        cut_off = start + plan.window + load.drain
        _, running = await asyncio.wait(tasks, timeout=cut_off - time.monotonic())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return calls


def member(load: Load, arm: Arm, plan: Plan, connection: Connection) -> None:
    """A child process of an arm: says when it is set up, starts its clients at the time its
    parent sends back (the same for every process), then sends its calls."""

    def ready() -> float:
        connection.send("ready")
        start: float = connection.recv()
        return start

    # The report counts every error a caller sees; the give-ups logged at WARNING would only
    # break the progress lines on stderr.
    logging.getLogger("rate_limit_shield").setLevel(logging.ERROR)
    connection.send(asyncio.run(drive(load, arm, plan, ready)))


START_MARGIN = 0.2  # seconds from the last process being ready to the common start


def run_clients(load: Load, arm: Arm, plan: Plan) -> list[Call]:
    """The calls of `load.processes` processes of `plan.clients` clients each, started together
    (time.monotonic is the same clock in every process), whatever their start-up took."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with an event loop
    pipes, members = [], []
    for _ in range(load.processes):
        mine, theirs = context.Pipe()
        members.append(context.Process(target=member, args=(load, arm, plan, theirs)))
        pipes.append((mine, theirs))
    for process in members:
        process.start()
    for _, theirs in pipes:
        theirs.close()  # so that a process dying shows here as EOFError, not a hang
    try:
        for mine, _ in pipes:
            mine.recv()
        start = time.monotonic() + START_MARGIN
        for mine, _ in pipes:
            mine.send(start)
        return [call for mine, _ in pipes for call in mine.recv()]
    finally:
        for process in members:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()


def run_arm(
    load: Load, arm: Arm, seconds: float, clients: int, grace: float, seed: int, backend: str | None
) -> Result:
    provider = ProviderProcess(load, seed)
    window = seconds + grace
    with provider as url:
        calls = run_clients(load, arm, Plan(url, backend, seconds, clients, window))
        received, throttled = provider.counters()
    return Result(load, calls, window, received, throttled)


@contextlib.contextmanager
def redis_for(load: Load) -> Iterator[str | None]:
    """The URL of a redis-server of our own for a load on Redis, stopped by its PID after it;
    None for a load in memory."""
    if not load.on_redis:
        yield None
        return
    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


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


def describe(load: Load, clients: int) -> str:
    per = f"per {load.per_seconds:g} s"
    limits = f"{load.requests:g} requests and {load.tokens:g} tokens {per}"
    lowest, highest = load.answer
    answer = f"{lowest}" if lowest == highest else f"{lowest} to {highest}"
    sends = "streams" if load.pace is not None else "plain calls"
    asks = f"max_tokens {load.max_tokens}" if load.max_tokens is not None else "no max_tokens"
    paced = f", streamed at {load.pace:g} tokens/s" if load.pace is not None else ""
    tokens_per_call = load.planned_cost
    bounds = (
        f"tokens allow {load.tokens / load.per_seconds / tokens_per_call:.1f} calls/s, "
        f"requests {load.requests / load.per_seconds:g}"
    )
    fleet = f"{load.processes} processes x {clients}" if load.processes > 1 else f"{clients}"
    return (
        f"load '{load.name}': provider {limits}; {sends} with {asks}, answers of {answer} "
        f"tokens{paced}; calls cost {tokens_per_call:g} tokens on average: {bounds}; "
        f"{fleet} clients; ours: {load.ours.name}"
    )


def check(target: str, passed: bool) -> None:
    print(f"{'PASS' if passed else 'FAIL'}  {target}")


def report(results: dict[str, Result], ours: Result) -> None:
    width = max(22, *(len(name) + 2 for name in results))
    header = (
        f"{'arm':<{width}}{'completed':>10}{'allowed':>9}{'of allowed':>11}{'tokens/s':>10}"
        f"{'requests':>10}{'429s':>7}{'429 %':>8}{'errors':>8}{'p50 s':>8}{'p95 s':>8}"
    )
    print(header)
    for name, result in results.items():
        latencies = [call.latency for call in result.counted]
        tokens = sum(call.cost for call in result.completed)
        print(
            f"{name:<{width}}{len(result.completed):>10}{result.allowed:>9.0f}"
            f"{result.fraction:>11.1%}{tokens / result.window:>10.0f}"
            f"{result.received:>10}{result.throttled:>7}{result.throttled_share:>8.1%}"
            f"{sum(result.errors.values()):>8}{percentile(latencies, 0.5):>8.2f}"
            f"{percentile(latencies, 0.95):>8.2f}"
        )
    print()
    for name, result in results.items():
        kinds = ", ".join(f"{kind} {count}" for kind, count in result.errors.most_common())
        print(f"errors surfaced, {name}: {kinds or 'none'}")
    print()
    name, target = ours.load.ours.name, ours.load.target
    check(
        f"{name} reaches at least {target:.0%} of the throughput the provider allows: "
        f"{ours.fraction:.1%}",
        ours.fraction >= target,
    )
    check(
        f"{name} gets at most 1 % of its requests answered 429: {ours.throttled_share:.2%}",
        ours.throttled_share <= 0.01,
    )
    # The provider refuses nothing but with a 429 and a hint here (no call is larger than a
    # bucket), so every error a caller sees is one that retrying later would have absorbed.
    check(
        f"{name} surfaces no error a retry could absorb: {sum(ours.errors.values())}",
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
    parser.add_argument(
        "--clients", type=int, default=50, help="concurrent async clients, but the fleet's (50)"
    )
    parser.add_argument("--grace", type=float, default=1.0, help="drain after --seconds (1)")
    parser.add_argument("--quick", action="store_true", help="3 s per arm, whatever --seconds says")
    parser.add_argument(
        "--load", choices=[*LOADS, "all"], default="all", help="which load to run (all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the answers' lengths (0)")
    options = parser.parse_args()
    if options.clients < 1:
        parser.error(f"--clients: {options.clients!r} must be at least 1")
    if not options.grace >= 0:
        parser.error(f"--grace: {options.grace!r} must be >= 0")
    seconds = 3.0 if options.quick else options.seconds
    loads = LOADS.values() if options.load == "all" else [LOADS[options.load]]

    print(f"{seconds:g} s per arm + {options.grace:g} s grace")
    progress = Progress()
    for load in loads:
        clients = load.clients or options.clients
        print(f"\n{describe(load, clients)}\n")
        results = {}
        with redis_for(load) as backend:
            for arm in load.arms:
                with progress.running(f"load '{load.name}', {arm.name}"):
                    results[arm.name] = run_arm(
                        load, arm, seconds, clients, options.grace, options.seed, backend
                    )
        report(results, results[load.ours.name])


if __name__ == "__main__":
    main()
