"""What does guarding one successful call cost? Our primitives and Shield against the peers.

Run from the repository root (the peers are the `bench` extra: `pip install -e '.[bench]'`):

    python benchmarks/overhead.py           # 15 rounds of ~0.06 s per case: under a minute
    python benchmarks/overhead.py --quick   # 3 short rounds: a smoke run, the figures are noisy

Each case runs N successful calls in one loop timed with `time.perf_counter_ns`, N sized so that
a run lasts the target time, and prints the best ns per call over the rounds (noise only ever
adds time, so the minimum is the figure that repeats); every round runs every case once, so a
slow spell of the machine is spread over all cases. Nothing is subtracted: the
bare-function rows are the floor (the loop plus the call of `f`). Async cases `await` in a loop
inside one running event loop. All use the real system clock and limits so large that nothing
is ever refused. "ours/peer" divides our comparable figure by the peer's (below 1: we are
cheaper); peers that wrap `f` pay its call too, our single-primitive rows do not. limits' moving
window keeps one entry per hit for a second, so at this call rate its figure grows with the run
length; the composed peer therefore uses limits' O(1) sliding window counter. A missing peer
prints "not installed". The end lines check the performance targets: PASS or MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import Any

import wrapt
from progress import Progress

import rate_limit_shield as rls
from rate_limit_shield import (
    Bulkhead,
    CircuitBreaker,
    Limit,
    Limiter,
    Outcome,
    RetryPolicy,
    Shield,
    TokenBucket,
)

HUGE = 1e12  # capacity and rate that no benchmark can exhaust


def f() -> int:
    return 1


async def af() -> int:
    return 1


class LockBucket:
    """The reference for `TokenBucket.try_acquire`: a textbook bucket under a threading.Lock."""

    __slots__ = ("capacity", "lock", "rate", "stamp", "tokens")

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = self.tokens = capacity
        self.rate = rate
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def try_acquire(self, cost: float = 1.0) -> bool:
        with self.lock:
            now = time.monotonic()
            tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if tokens < cost:
                self.tokens = tokens
                return False
            self.tokens = tokens - cost
            return True


def full_shield() -> Shield:
    bucket, bulkhead = TokenBucket(HUGE, HUGE), Bulkhead(1_000_000)
    return Shield(bucket, CircuitBreaker(), RetryPolicy(), bulkhead=bulkhead)


# The same four parts as `full_shield`, as a model's policy (no retry budget: neither has one).
POLICY = {
    "limits": [Limit(HUGE, 1.0, burst=HUGE)],
    "breaker": {},
    "retry": {"budget": None},
    "bulkhead": {"max_concurrent": 1_000_000},
}
rls.configure({"bench-model": POLICY, "budgeted-model": {**POLICY, "retry": {}}})


@wrapt.decorator
def passthrough(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """The reference for one decorator layer: a wrapt wrapper that only calls through."""
    return wrapped(*args, **kwargs)


def takes_model(model: str) -> int:
    return 1


def stacked() -> Callable[[], int]:
    """Three single-part decorators, the way the peers compose: retry, breaker, rate limit."""
    return rls.retry(attempts=3)(rls.breaker()(rls.rate_limited(limits=[Limit(HUGE, 1.0)])(f)))


def peer(module: str) -> Any:
    """An optional peer's module; ImportError marks the case "not installed"."""
    return importlib.import_module(module)


def tenacity_retry() -> Any:
    tenacity = peer("tenacity")
    return tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential())


def stamina_retry() -> Any:
    stamina = peer("stamina")
    stamina.set_testing(False)
    return stamina.retry(on=Exception, attempts=3)


def backoff_retry() -> Any:
    backoff = peer("backoff")
    return backoff.on_exception(backoff.expo, Exception, max_tries=3)


def limits_hit(strategy: str) -> Callable[[], bool]:
    """`hit` on a huge per-second limit in limits' MemoryStorage with the named strategy."""
    limits = peer("limits")
    limiter = getattr(peer("limits.strategies"), strategy)(peer("limits.storage").MemoryStorage())
    item = limits.RateLimitItemPerSecond(int(HUGE))
    return partial(limiter.hit, item)


def pyrate_try_acquire() -> Callable[[], bool]:
    pyrate = peer("pyrate_limiter")  # v4 API: Limiter(Rate(...)).try_acquire(name, blocking=...)
    limiter = pyrate.Limiter(pyrate.Rate(int(HUGE), pyrate.Duration.SECOND))
    return partial(limiter.try_acquire, "key", blocking=False)


def composed() -> Callable[[], int]:
    """The peers' way to get our pipeline: a limits hit, then pybreaker, in a tenacity loop."""
    tenacity, hit = peer("tenacity"), limits_hit("SlidingWindowCounterRateLimiter")
    breaker_call = peer("pybreaker").CircuitBreaker().call
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential()
    )

    def guarded() -> int:
        for attempt in retrying:
            with attempt:
                if not hit():
                    raise RuntimeError("rate limited")
                result: int = breaker_call(f)
        return result

    return guarded


@dataclass(frozen=True)
class Case:
    name: str
    body: str  # the statement timed; runs as `async def` when it awaits
    names: Callable[[], dict[str, Any]]  # builds the objects the body uses
    vs: str | None = None  # for a peer: the name of our case it is compared with
    around: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext


@contextlib.contextmanager
def disabled() -> Any:
    rls.disable()
    try:
        yield
    finally:
        rls.enable()


BARE, ABARE = "bare f()", "await af()"
BUCKET, LOCK_BUCKET = "TokenBucket.try_acquire()", "threading.Lock bucket (reference)"
RESERVE, AACQUIRE = "Limiter.reserve(1)", "await Limiter.aacquire(1)"
BREAKER = "CircuitBreaker.acquire()+record()"
RETRY, ARETRY = "Shield(retry=...).call(f)", "await Shield(retry=...).acall(af)"
SHIELD, ASHIELD = "Shield.call(f), all parts", "await Shield.acall(af), all parts"
COMPOSED = "tenacity+pybreaker+limits composed"
WRAPT = "bare wrapt layer (reference)"
SHIELDED, ASHIELDED = "@shielded(model=...) f()", "await @shielded(model=...) af()"
STACKED = "@retry @breaker @rate_limited f()"
DISABLED = "@shielded f() after rls.disable()"

CASES = [
    Case(BARE, "f()", lambda: {"f": f}),
    Case(BUCKET, "try_acquire()", lambda: {"try_acquire": TokenBucket(HUGE, HUGE).try_acquire}),
    Case(RESERVE, "reserve(1)", lambda: {"reserve": Limiter([Limit(HUGE, 1.0)]).reserve}),
    Case(
        BREAKER,
        "record(acquire(), Outcome.SUCCESS)",
        lambda: {
            "acquire": (breaker := CircuitBreaker()).acquire,
            "record": breaker.record,
            "Outcome": Outcome,
        },
    ),
    Case(
        "Bulkhead.try_acquire()+release()",
        "try_acquire(); release()",
        lambda: {
            "try_acquire": (bulkhead := Bulkhead(1_000_000)).try_acquire,
            "release": bulkhead.release,
        },
    ),
    Case(RETRY, "call(f)", lambda: {"call": Shield(retry=RetryPolicy()).call, "f": f}),
    Case(SHIELD, "call(f)", lambda: {"call": full_shield().call, "f": f}),
    Case(WRAPT, "g()", lambda: {"g": passthrough(f)}),
    Case(SHIELDED, "g()", lambda: {"g": rls.shielded(model="bench-model")(f)}),
    Case(
        "@shielded, model= from the call",
        "g(model='bench-model')",
        lambda: {"g": rls.shielded(takes_model)},
    ),
    Case(
        "@shielded, with the default retry budget",
        "g()",
        lambda: {"g": rls.shielded(model="budgeted-model")(f)},
    ),
    Case(STACKED, "g()", lambda: {"g": stacked()}),
    Case(DISABLED, "g()", lambda: {"g": rls.shielded(model="bench-model")(f)}, around=disabled),
    Case("tenacity @retry", "g()", lambda: {"g": tenacity_retry()(f)}, RETRY),
    Case("stamina.retry", "g()", lambda: {"g": stamina_retry()(f)}, RETRY),
    Case("backoff.on_exception", "g()", lambda: {"g": backoff_retry()(f)}, RETRY),
    Case(
        "pybreaker CircuitBreaker().call(f)",
        "call(f)",
        lambda: {"call": peer("pybreaker").CircuitBreaker().call, "f": f},
        BREAKER,
    ),
    Case(
        "circuitbreaker @circuit", "g()", lambda: {"g": peer("circuitbreaker").circuit(f)}, BREAKER
    ),
    Case(
        "limits moving window hit",
        "hit()",
        lambda: {"hit": limits_hit("MovingWindowRateLimiter")},
        BUCKET,
    ),
    Case(
        "limits sliding window counter hit",
        "hit()",
        lambda: {"hit": limits_hit("SlidingWindowCounterRateLimiter")},
        BUCKET,
    ),
    Case("pyrate-limiter try_acquire", "hit()", lambda: {"hit": pyrate_try_acquire()}, BUCKET),
    Case(
        LOCK_BUCKET,
        "try_acquire()",
        lambda: {"try_acquire": LockBucket(HUGE, HUGE).try_acquire},
        BUCKET,
    ),
    Case(COMPOSED, "guarded()", lambda: {"guarded": composed()}, SHIELD),
    Case(f"{COMPOSED}, vs three decorators", "guarded()", lambda: {"guarded": composed()}, STACKED),
    Case(ABARE, "await af()", lambda: {"af": af}),
    Case(
        AACQUIRE,
        "await aacquire(1)",
        lambda: {"aacquire": Limiter([Limit(HUGE, 1.0)]).aacquire},
    ),
    Case(ARETRY, "await acall(af)", lambda: {"acall": Shield(retry=RetryPolicy()).acall, "af": af}),
    Case(ASHIELD, "await acall(af)", lambda: {"acall": full_shield().acall, "af": af}),
    Case(ASHIELDED, "await g()", lambda: {"g": rls.shielded(model="bench-model")(af)}),
    Case("tenacity @retry (async)", "await g()", lambda: {"g": tenacity_retry()(af)}, ARETRY),
    Case("stamina.retry (async)", "await g()", lambda: {"g": stamina_retry()(af)}, ARETRY),
    Case("backoff.on_exception (async)", "await g()", lambda: {"g": backoff_retry()(af)}, ARETRY),
    Case(
        "aiolimiter async with",
        "async with limiter:\n    await af()",
        lambda: {"limiter": peer("aiolimiter").AsyncLimiter(HUGE, 1), "af": af},
        AACQUIRE,
    ),
]


def compile_loop(case: Case, loop: asyncio.AbstractEventLoop) -> Callable[[int], int]:
    """A function running the case's body `n` times and returning the elapsed ns.

    The body's names are parameters of the generated loop: fast locals, as in timeit.
    """
    names = {**case.names(), "_now": time.perf_counter_ns, "_repeat": repeat}
    is_async = "await " in case.body or "async " in case.body
    source = (
        f"{'async ' if is_async else ''}def _loop(_n, {', '.join(names)}):\n"
        "    _start = _now()\n"
        "    for _ in _repeat(None, _n):\n"
        f"{textwrap.indent(case.body, ' ' * 8)}\n"
        "    return _now() - _start\n"
    )
    scope: dict[str, Any] = {}
    exec(compile(source, f"<{case.name}>", "exec"), scope)
    run = scope["_loop"]

    def timed(n: int) -> int:
        with case.around():
            if is_async:
                elapsed: int = loop.run_until_complete(run(n, **names))
                return elapsed
            return int(run(n, **names))

    return timed


def calibrate(run: Callable[[int], int], target_ns: int) -> int:
    """The N for which `run(N)` lasts about `target_ns`; warms the case up on the way."""
    run(1)  # a first call may build state, as a model key's primitives on first use
    n = 1
    while (elapsed := run(n)) < target_ns // 20:
        n *= 10
    return max(1, n * target_ns // max(elapsed, 1))


def measure(
    runs: dict[str, Callable[[int], int]], rounds: int, target_ns: int, progress: Progress
) -> dict[str, float]:
    """Best ns per call of each case; each round runs every case once (a dot on stderr)."""
    progress.step(f"calibrating {len(runs)} cases")
    sizes = {name: calibrate(run, target_ns) for name, run in runs.items()}
    progress.done()
    progress.step(f"{rounds} rounds of every case")
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            samples[name].append(run(sizes[name]) / sizes[name])
        progress.dot()
    progress.done()
    return {name: min(per_call) for name, per_call in samples.items()}


def check(target: str, value: float, limit: float) -> None:
    print(f"{'PASS' if value <= limit else 'MISS'}  {target}: {value:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 short rounds: a smoke run")
    rounds, target_ns = (3, 10_000_000) if parser.parse_args().quick else (15, 60_000_000)

    loop = asyncio.new_event_loop()
    runs = {}
    for case in CASES:
        try:
            runs[case.name] = compile_loop(case, loop)
        except ImportError:
            continue  # an optional peer that is not installed: no figure
    results = measure(runs, rounds, target_ns, Progress())
    loop.close()

    width = max(len(case.name) for case in CASES) + 2
    print(f"{'case':<{width}}{'ns/call':>13}  {'ours/peer':>9}  ours")
    for case in CASES:
        if case.name == ABARE:
            print()
        ns = results.get(case.name)
        ours = results.get(case.vs or "")
        figure = f"{ns:13.0f}" if ns is not None else f"{'not installed':>13}"
        ratio = f"{ours / ns:8.3f}x  {case.vs}" if ns and ours else ""
        print(f"{case.name:<{width}}{figure}  {ratio}".rstrip())

    print()
    shield = results[SHIELD]
    check(f"{BUCKET} at most 1.2x the {LOCK_BUCKET}", results[BUCKET] / results[LOCK_BUCKET], 1.2)
    check(
        "Shield.call success overhead (Shield.call - bare f) at most 1200 ns",
        shield - results[BARE],
        1200,
    )
    if COMPOSED in results:
        check(f"Shield.call at most 0.08x the {COMPOSED}", shield / results[COMPOSED], 0.08)
    else:
        print(f"SKIP  Shield.call at most 0.08x the {COMPOSED}: a peer is not installed")
    check(f"{SHIELDED} at most 2000 ns", results[SHIELDED], 2000)
    check(
        f"{SHIELDED} at most 1.5x ({SHIELD} + {WRAPT})",
        results[SHIELDED] / (shield + results[WRAPT]),
        1.5,
    )
    check(
        f"{ASHIELDED} at most 1.5x ({ASHIELD} + {WRAPT})",
        results[ASHIELDED] / (results[ASHIELD] + results[WRAPT]),
        1.5,
    )
    check(f"{DISABLED} at most 2x the {WRAPT}", results[DISABLED] / results[WRAPT], 2.0)


if __name__ == "__main__":
    main()
