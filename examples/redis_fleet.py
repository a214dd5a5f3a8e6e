"""A fleet of processes sharing one quota through Redis: together they stay within it.

Run it with:  python examples/redis_fleet.py [--backend URL] [--processes 4] [--seconds 1]

It needs a Redis server (`redis-server`, or `docker run -p 6379:6379 redis`), redis-py
(`pip install 'rate-limit-shield[redis]'`) and no API key. The backend is `--backend`, else the
`REDIS_URL` environment variable, else redis://localhost:6379/0; `--backend memory` runs the
same fleet without Redis, to see the difference.

A local fake provider (`rate_limit_shield.testing.FakeProvider`) in this process grants
gpt-4o-mini 20 requests a second. Each process of the fleet, started together, configures the
same policy on the same Redis (18 requests a second, at most 10 at once: under the provider's
limit), and is then offered far more requests than that, as a busy web worker would be; a
request the shared quota has no room for is refused at once (`max_wait` 0: such a worker would
answer it 429). At the end the requests the fleet admitted are set against what the limit
allows over the run: its burst, plus its rate times the seconds it took. On Redis the fleet
stays within it and the provider throttles nothing; in memory each process has a quota of its
own, and together they send the provider several times its limit.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from typing import NamedTuple

import openai

import rate_limit_shield as rls
from rate_limit_shield.testing import FakeProvider

MODEL = "gpt-4o-mini"
PROVIDER_RATE = 20  # requests a second the provider grants, at most 20 at once
# The fleet's limit keeps under the provider's: requests reach it a few milliseconds after the
# shield lets them go, some later than others, so that those sent apart may arrive together.
RATE = 18  # a second
BURST = 10  # at most at once
POLICY = {
    "limits": [rls.Limit(RATE, per_seconds=1, burst=BURST)],
    "max_wait": 0,  # no permit now: refuse, rather than keep the request waiting
    "retry": None,  # one attempt: a refused request is the caller's to retry
}
OFFERED = 50  # requests offered to each process a second


class Tally(NamedTuple):
    """What one process did: when it began and ended (wall clock: every process on one machine
    reads the same), and its requests by fate."""

    began: float
    ended: float
    answered: int  # admitted by the shield, answered by the provider
    throttled: int  # admitted by the shield, throttled by the provider
    refused: int  # refused by the shield: the quota had no room


@rls.shielded(model=MODEL)
def ask(client: openai.OpenAI, prompt: str) -> str:
    completion = client.chat.completions.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": prompt}]
    )
    return completion.choices[0].message.content or ""


def worker(
    backend: str,
    base_url: str,
    seconds: float,
    start: multiprocessing.synchronize.Barrier,
    tallies: multiprocessing.Queue[Tally],
) -> None:
    """One process of the fleet: the same policy on the same backend as every other, then a
    request offered every 1/OFFERED s for `seconds`."""
    rls.configure({MODEL: POLICY}, backend=backend)
    answered = throttled = refused = 0
    with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        start.wait(timeout=60)  # every process begins together
        began = time.time()
        for n in range(int(seconds * OFFERED)):
            time.sleep(max(0.0, began + n / OFFERED - time.time()))
            try:
                ask(client, f"request {n}")
                answered += 1
            except rls.RateLimited:
                refused += 1
            except openai.RateLimitError:
                throttled += 1
    tallies.put(Tally(began, time.time(), answered, throttled, refused))


def check_redis(url: str) -> None:
    """Fail early, and say why, when the server is not there: the shield itself would carry on
    in memory at each process's share of the limit (its `on_backend_error="local"`)."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as error:
        raise SystemExit(
            f"cannot reach Redis ({error}): start redis-server, or give --backend"
        ) from None


def processes() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """Processes forked from a server process that has imported the SDK and the backend once:
    quick to start, and free of this process's threads. Windows has no fork: there, spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["openai", "rate_limit_shield.backends.redis"])
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        default=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
        help="a redis:// URL, or memory (default: $REDIS_URL, else redis://localhost:6379/0)",
    )
    parser.add_argument("--processes", type=int, default=4, help="the fleet's size (4)")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long it runs (1)")
    args = parser.parse_args()
    if args.backend != "memory":
        check_redis(args.backend)

    context = processes()
    start, tallies = context.Barrier(args.processes), context.Queue()
    with FakeProvider(requests=PROVIDER_RATE, per_seconds=1) as provider:
        fleet = [
            context.Process(
                target=worker,
                args=(args.backend, provider.url + "/v1", args.seconds, start, tallies),
            )
            for _ in range(args.processes)
        ]
        for process in fleet:
            process.start()
        done = [tallies.get(timeout=120) for _ in fleet]
        for process in fleet:
            process.join()

    where = "in memory, a quota each" if args.backend == "memory" else "sharing one quota on Redis"
    took = max(tally.ended for tally in done) - min(tally.began for tally in done)
    admitted = sum(tally.answered + tally.throttled for tally in done)
    allowed = BURST + RATE * took  # the burst, and what refills while the fleet runs
    verdict = "within the limit" if admitted <= allowed else "OVER THE LIMIT"
    print(f"{args.processes} processes, {where}, each offered {OFFERED} requests a second")
    print(f"admitted {admitted} in {took:.2f} s, refused {sum(t.refused for t in done)}")
    print(f"the limit allows {BURST} + {RATE}/s x {took:.2f} s = {allowed:.1f}: {verdict}")
    statuses = ", ".join(f"{status} x {n}" for status, n in sorted(provider.statuses.items()))
    print(f"the provider ({PROVIDER_RATE} requests a second) answered: {statuses}")


if __name__ == "__main__":
    main()
