"""What does a shared rate permit cost? Our Redis limiter against a raw EVALSHA and the peers.

Run from the repository root (needs `redis-server` on PATH; peers: `pip install -e '.[bench]'`):

    python benchmarks/redis_backend.py           # 15 rounds of 1,000 calls per case
    python benchmarks/redis_backend.py --quick   # 3 rounds of 200: a smoke run, noisy figures

Starts its own `redis-server` on 127.0.0.1 (persistence off, as the tests' fixture does) and
runs every case against it in the same run, single-threaded, on limits so large that nothing is
refused, after 300 warm-up calls each. Every round runs every case once, so a slow spell of the
shared machine is spread over all of them. Per case: ops/s of its best round, p50 / p99 latency
over all calls, the CPU time per call of this client (its thread) and of the server (its main
thread, from INFO cpu) as medians over the rounds, round trips per call (requests the client
sent, counted by a wrapper around its connections), and the bytes its keys hold (MEMORY USAGE,
summed) after 10,000 weighted acquires (weight 100) on an empty server. CPU times are the
steadier figures on a shared machine: wall-clock ones move a lot between runs.

The floor is a raw EVALSHA of `return 1` through redis-py's command call (`evalsha`) on a client
made as ours is (`from_url`: the same socket options); the second row sends it the keys and
arguments of our one-limit acquire, to show what the request's size alone costs. Our limiter
does not go through that command call: it sends its pre-encoded request on a connection it
holds. The third floor row does that with the trivial script: one request and one reply on a
held connection, the least any one-round-trip design can cost on this client, so the bound for
every target. The peers run as their documentation sets them up. The end lines check the
targets: PASS or MISS, and the bound each target has; a missing peer prints "not installed".
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from progress import Progress

from rate_limit_shield import Limit
from rate_limit_shield.backends.redis import RedisLimiter, from_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
# The tests' server helper; mypy finds it only with MYPYPATH=tests.
from redis_server import RedisServer, RoundTrips  # type: ignore[import-not-found,unused-ignore]

HUGE = 10**9  # an amount per minute that no benchmark can exhaust
WEIGHT = 100  # tokens per weighted acquire
WARM_UP = 300  # calls per case before measuring: connections made, scripts loaded, caches warm
MEMORY_CALLS = 10_000

FLOOR = "raw EVALSHA 'return 1' (floor)"
FLOOR_ARGS = "raw EVALSHA 'return 1', our arguments"
FLOOR_HELD = "held connection, 'return 1' (bound)"
ONE = "ours: try_acquire(), rpm"
TWO = "ours: try_acquire(tokens), rpm+tpm"
SLIDING = "limits: sliding window counter hit"
MOVING = "limits: moving window hit"
PYRATE = "pyrate-limiter: RedisBucket try_acquire"


@dataclass
class Case:
    """A call to time and a weighted call to fill memory with, on a counted client."""

    name: str
    call: Callable[[], Any]
    weighted: Callable[[], Any]
    trips: RoundTrips


def floor(url: str, case: str, words: tuple[bytes, ...]) -> Case:
    """EVALSHA of `return 1` through redis-py's `evalsha`, on a client made as ours is: with no
    arguments, or with `words`, the keys and arguments of our one-limit acquire (the same
    request size, without the script's work)."""
    client, _ = from_url(url)
    trips = RoundTrips(client)
    sha = client.script_load("return 1")
    numkeys = 1 if words else 0

    def call() -> Any:
        return client.evalsha(sha, numkeys, *words)

    return Case(case, call, call, trips)


def held_floor(url: str) -> Case:
    """EVALSHA of `return 1` as one pre-encoded request and its reply on a connection held out
    of the pool: no pool, no command call, no check; what no one-round-trip call can beat."""
    client, _ = from_url(url)
    trips = RoundTrips(client)
    sha = client.script_load("return 1")
    connection: Any = client.connection_pool.get_connection()
    request = connection.pack_command("EVALSHA", sha, 0)

    def call() -> Any:
        connection.send_packed_command(request, check_health=False)
        return connection.read_response()

    return Case(FLOOR_HELD, call, call, trips)


def our_words(url: str) -> tuple[bytes, ...]:
    """The keys and arguments our one-limit `try_acquire` sends (its private call builder)."""
    client, _ = from_url(url)
    limiter = RedisLimiter([Limit(HUGE, 60)], client=client, name="words", local_share=1.0)
    return limiter._reserve_call(1, 0.0)[2][1]


def ours(url: str, case: str, limits: list[Limit], cost: Any, weighted: Any) -> Case:
    client, _ = from_url(url)
    trips = RoundTrips(client)
    # A given local share: no heartbeat, so the key bytes are the rate state's alone.
    limiter = RedisLimiter(limits, client=client, name=case, local_share=1.0)
    return Case(
        case, lambda: limiter.try_acquire(cost), lambda: limiter.try_acquire(weighted), trips
    )


def limits_case(url: str, strategy: str, case: str) -> Case:
    """limits as its documentation sets it up: `storage_from_string` and a strategy on it."""
    limits = importlib.import_module("limits")
    storage = importlib.import_module("limits.storage").storage_from_string(url)
    trips = RoundTrips(storage.storage)
    limiter = getattr(importlib.import_module("limits.strategies"), strategy)(storage)
    item = limits.RateLimitItemPerMinute(HUGE)
    return Case(
        case,
        lambda: limiter.hit(item, "bench"),
        lambda: limiter.hit(item, "bench", cost=WEIGHT),
        trips,
    )


def pyrate_case(url: str) -> Case:
    pyrate = importlib.import_module("pyrate_limiter")
    client = redis.Redis.from_url(url)
    trips = RoundTrips(client)
    rates = [pyrate.Rate(HUGE, pyrate.Duration.MINUTE)]
    limiter = pyrate.Limiter(pyrate.RedisBucket.init(rates, client, "bench"))
    return Case(
        PYRATE,
        lambda: limiter.try_acquire("bench", blocking=False),
        lambda: limiter.try_acquire("bench", weight=WEIGHT, blocking=False),
        trips,
    )


def build(url: str) -> dict[str, Case | None]:
    """Every case, or None for a peer that is not installed."""
    builders: dict[str, Callable[[], Case]] = {
        FLOOR: lambda: floor(url, FLOOR, ()),
        FLOOR_ARGS: lambda: floor(url, FLOOR_ARGS, our_words(url)),
        FLOOR_HELD: lambda: held_floor(url),
        ONE: lambda: ours(url, ONE, [Limit(HUGE, 60)], 1, WEIGHT),
        TWO: lambda: ours(
            url,
            TWO,
            [Limit(HUGE, 60), Limit(HUGE, 60, unit="tokens")],
            {"requests": 1, "tokens": 1},
            {"requests": 1, "tokens": WEIGHT},
        ),
        SLIDING: lambda: limits_case(url, "SlidingWindowCounterRateLimiter", SLIDING),
        MOVING: lambda: limits_case(url, "MovingWindowRateLimiter", MOVING),
        PYRATE: lambda: pyrate_case(url),
    }
    cases: dict[str, Case | None] = {}
    for name, make in builders.items():
        try:
            cases[name] = make()
        except ImportError:
            cases[name] = None
    return cases


@dataclass
class Figures:
    ops: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    client_us: float = 0.0
    server_us: float = 0.0
    trips: float = 0.0
    key_bytes: int = 0


def server_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the server's main thread has used (all threads on servers before 6.2)."""
    info = client.info("cpu")
    thread = "_main_thread" if "used_cpu_sys_main_thread" in info else ""
    return float(info[f"used_cpu_sys{thread}"]) + float(info[f"used_cpu_user{thread}"])


def measure(
    cases: dict[str, Case], stats: redis.Redis, rounds: int, calls: int, progress: Progress
) -> dict[str, Figures]:
    """Best-round ops/s, latency percentiles over all calls, median CPU per call of the client
    and of the server, and requests sent per call (a dot on stderr per round)."""
    progress.step(f"warming up {len(cases)} cases")
    samples: dict[str, list[int]] = {name: [] for name in cases}
    client_cpu: dict[str, list[float]] = {name: [] for name in cases}
    server: dict[str, list[float]] = {name: [] for name in cases}
    best: dict[str, int] = {}
    sent: dict[str, float] = {}
    for case in cases.values():
        for _ in range(WARM_UP):
            case.call()
    progress.done()
    progress.step(f"{rounds} rounds of every case")
    for _ in range(rounds):
        for name, case in cases.items():
            case.trips.reset()
            clock = time.perf_counter_ns
            latencies = samples[name]
            server_before = server_cpu(stats)
            cpu_before = time.thread_time_ns()
            started = clock()
            for _ in range(calls):
                before = clock()
                case.call()
                latencies.append(clock() - before)
            total = clock() - started
            client_cpu[name].append((time.thread_time_ns() - cpu_before) / calls / 1e3)
            server[name].append((server_cpu(stats) - server_before) / calls * 1e6)
            best[name] = min(best.get(name, total), total)
            sent[name] = case.trips.sends / calls
        progress.dot()
    progress.done()
    figures = {}
    for name in cases:
        cuts = statistics.quantiles(samples[name], n=100)
        figures[name] = Figures(
            calls / best[name] * 1e9,
            cuts[49] / 1e3,
            cuts[98] / 1e3,
            statistics.median(client_cpu[name]),
            statistics.median(server[name]),
            sent[name],
        )
    return figures


def key_bytes(client: redis.Redis, case: Case) -> int:
    """Bytes of every key after `MEMORY_CALLS` weighted calls on an empty server."""
    client.flushall()
    for _ in range(MEMORY_CALLS):
        case.weighted()
    return sum(client.memory_usage(key) or 0 for key in client.scan_iter(count=1000))


def check(target: str, value: float, passes: bool, bound: str = "") -> None:
    print(f"{'PASS' if passes else 'MISS'}  {target}: {value:.3g}{bound}")


def report(built: dict[str, Case | None], figures: dict[str, Figures], heading: str) -> None:
    floor_ops = figures[FLOOR].ops
    width = max(map(len, built)) + 2
    print(f"{heading}\n")
    print(
        f"{'case':<{width}}{'ops/s':>8}{'x floor':>9}{'p50 us':>8}{'p99 us':>8}"
        f"{'cpu us':>8}{'srv us':>8}{'trips':>7}{'key bytes':>12}"
    )
    for name in built:
        if name not in figures:
            print(f"{name:<{width}}{'not installed':>13}")
            continue
        row = figures[name]
        print(
            f"{name:<{width}}{row.ops:8.0f}{row.ops / floor_ops:8.2f}x{row.p50_us:8.1f}"
            f"{row.p99_us:8.1f}{row.client_us:8.1f}{row.server_us:8.1f}{row.trips:7.2f}"
            f"{row.key_bytes:12,}"
        )

    bound_ops = figures[FLOOR_HELD].ops
    print()
    for name in (ONE, TWO):
        ratio = figures[name].ops / floor_ops
        check(f"{name} at least 0.85x the floor", ratio, ratio >= 0.85)
        check(f"{name}: one round trip per acquire", figures[name].trips, figures[name].trips == 1)
        for peer in (SLIDING, MOVING):
            if peer not in figures:
                print(f"SKIP  {name} at least 1.5x {peer}: limits is not installed")
                continue
            ratio = figures[name].ops / figures[peer].ops
            bound = (
                f"  (bound: a held connection's trivial call makes "
                f"{bound_ops / figures[peer].ops:.3g}x; redis-py's floor "
                f"{floor_ops / figures[peer].ops:.3g}x)"
            )
            check(f"{name} at least 1.5x {peer}", ratio, ratio >= 1.5, bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 200 calls: a smoke run")
    rounds, calls = (3, 200) if parser.parse_args().quick else (15, 1_000)

    server = RedisServer()
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        built = build(server.url)
        cases = {name: case for name, case in built.items() if case is not None}
        progress = Progress()
        figures = measure(cases, client, rounds, calls, progress)
        with progress.running(f"{MEMORY_CALLS:,} weighted calls per case, for the bytes held"):
            for name, case in cases.items():
                figures[name].key_bytes = key_bytes(client, case)
    finally:
        server.close()
    heading = f"redis-server on 127.0.0.1, {rounds} rounds of {calls} calls, single-threaded"
    report(built, figures, heading)


if __name__ == "__main__":
    main()
