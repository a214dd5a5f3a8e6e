"""What does a new model name cost, and what do 100,000 of them hold? Ours against limits.

Run from the repository root (the peer is the `bench` extra: `pip install -e '.[bench]'`):

    python benchmarks/models.py           # up to 100,000 models: under a minute
    python benchmarks/models.py --quick   # up to 10,000 models: a smoke run

Each case calls a function once per new model name, `f(model="model-<i>")`, on the real clock,
in a process of its own (Linux: its resident size is read from /proc). At 1,000, 10,000 and
100,000 names it reports the microseconds per new model over the last 1,000 names, so that a
cost growing with the number of models shows, and the MiB the process holds beyond what it held
before the case was made. The microseconds are the process's CPU time (all its threads), so
that other work on the machine does not count, the best of twenty slices of 50 names (a slow
spell only ever adds time).

Ours is `@shielded` taking the model from the call, on its own `Registry`, with a policy of
1,000 requests per second per model (retry, breaker and retry budget at their defaults): a key
is at rest a millisecond after its call, and past `max_keys` each new key drops the oldest at
rest. It runs with the default bound (10,000 keys) and with 1,000. The peer is limits'
`MemoryStorage` with a fixed window of 1,000 hits per second per model key, whose timer thread
forgets a key one second after its first hit. The "ours / peer" rows divide our figures by the
peer's (below 1: we are cheaper). A missing peer prints "not installed".
"""

from __future__ import annotations

import argparse
import gc
import importlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from progress import Progress

import rate_limit_shield as rls

STOPS = (1_000, 10_000, 100_000)
WINDOW, SLICES = 1_000, 20
"""The cost per new model is timed over the last `WINDOW` names before each stop, in slices."""
MIB = 2**20
Figures = list[tuple[float, float]]
"""Per stop: microseconds per new model, MiB held."""


def ours(max_keys: int) -> Callable[[str], object]:
    registry = rls.Registry()
    registry.configure({"default": {"rpm": 60_000}})
    registry.max_keys = max_keys

    @rls.shielded(registry=registry)
    def call(*, model: str) -> str:
        return model

    return lambda model: call(model=model)


def limits_peer() -> Callable[[str], object]:
    limits = importlib.import_module("limits")
    storage = importlib.import_module("limits.storage").MemoryStorage()
    limiter = importlib.import_module("limits.strategies").FixedWindowRateLimiter(storage)
    item = limits.RateLimitItemPerSecond(1_000)
    return lambda model: limiter.hit(item, model)


OURS = {
    "ours, max_keys=10,000 (default)": partial(ours, 10_000),
    "ours, max_keys=1,000": partial(ours, 1_000),
}
PEER = "limits MemoryStorage, fixed window"
CASES: dict[str, Callable[[], Callable[[str], object]]] = {**OURS, PEER: limits_peer}


def names() -> Iterator[str]:
    index = 0
    while True:
        yield f"model-{index}"
        index += 1


def resident() -> int:
    """Bytes of this process in RAM now (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(case: str, stops: tuple[int, ...]) -> Figures:
    """Microseconds per new model and MiB held at each stop, for one case."""
    gc.collect()
    base = resident()
    hit, fresh, done, figures = CASES[case](), names(), 0, []
    size = WINDOW // SLICES
    for stop in stops:
        for _ in range(stop - WINDOW - done):
            hit(next(fresh))
        best = float("inf")
        for _ in range(SLICES):
            batch = [next(fresh) for _ in range(size)]
            start = time.process_time_ns()
            for name in batch:
                hit(name)
            best = min(best, (time.process_time_ns() - start) / size / 1_000)
        gc.collect()
        figures.append((best, (resident() - base) / MIB))
        done = stop
    return figures


def in_own_process(case: str, stops: tuple[int, ...]) -> Figures | None:
    """`run` in a new process, so that no case reuses memory another freed; None when the
    case's library is not installed."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        try:
            return pool.submit(run, case, stops).result()
        except ImportError:
            return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 10,000 models: a smoke run")
    stops = STOPS[:2] if parser.parse_args().quick else STOPS
    progress = Progress()
    runs: dict[str, Figures | None] = {}
    for case in CASES:
        with progress.running(f"{case}: up to {stops[-1]:,} models"):
            runs[case] = in_own_process(case, stops)

    width = max(map(len, CASES)) + 2
    columns = "".join(f"{stop:>10,}" for stop in stops)
    print(f"{'':<{width}}{'us per new model, at':<{10 * len(stops)}}   MiB held, at")
    print(f"{'models':<{width}}{columns}   {columns}")
    for case, figures in runs.items():
        if figures is None:
            print(f"{case:<{width}}{'not installed':>10}")
            continue
        micros = "".join(f"{us:10.1f}" for us, _ in figures)
        mib = "".join(f"{held:10.1f}" for _, held in figures)
        print(f"{case:<{width}}{micros}   {mib}")
    peer = runs[PEER]
    if peer is not None:
        for case in OURS:
            mine = runs[case]
            assert mine is not None
            pairs = list(zip(mine, peer, strict=True))
            micros = "".join(f"{us / them:9.2f}x" for (us, _), (them, _) in pairs)
            mib = "".join(f"{held / them:9.2f}x" for (_, held), (_, them) in pairs)
            print(f"{case[6:] + ' / peer':<{width}}{micros}   {mib}")


if __name__ == "__main__":
    main()
