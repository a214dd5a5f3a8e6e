"""`status --backend URL`: the fleet's live state on Redis, per model key, as a table or JSON,
once or refreshed until Ctrl-C.

Redis names each rate limit by an id only: the tokens left need the fleet's policy file
(`--config`, or the file `RATE_LIMIT_SHIELD_CONFIG` names, as the fleet's processes read it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._redact import redact
from ..backends import _NEEDS_REDIS
from ..policy import Policy
from ..registry import CONFIG_ENV, Registry
from ._output import CommandError, LiveBlock, seconds, table
from .policies import resolve, shared

if TYPE_CHECKING:
    from ..backends.redis.status import FleetStatus, KeyPolicy, ModelStatus

__all__ = ["add_command"]

_TIMEOUT = 2.0  # seconds to connect to Redis, and for each reply
_WATCH_EVERY = 2.0
_HEADERS = (
    "model", "processes", "limit", "left", "full in", "pause", "breaker", "probes", "retries",
)  # fmt: skip


def add_command(commands: Any) -> None:
    command = commands.add_parser(
        "status",
        help="show the fleet's live state on Redis, per model",
        description="Show the state the fleet shares on Redis, per model: the limiters "
        "that sent a heartbeat lately, what each rate limit has left and when it is full "
        "again, the pause left (a 429's Retry-After), the shared breaker's state, probes in "
        "flight and open time left, and the shared retry budget. Reads only: nothing changes.",
    )
    command.add_argument("--backend", required=True, metavar="URL", help="redis:// URL")
    command.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV),
        help=f"the fleet's TOML policy file, to tell the tokens left (default: ${CONFIG_ENV})",
    )
    command.add_argument("--prefix", default="rls", help="the backend's key prefix (rls)")
    command.add_argument("--json", action="store_true", help="one JSON document per refresh")
    command.add_argument(
        "--watch",
        nargs="?",
        type=_interval,
        const=_WATCH_EVERY,
        metavar="SECONDS",
        help=f"refresh every SECONDS ({_WATCH_EVERY:g}) until Ctrl-C",
    )
    command.set_defaults(run=_status)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"--watch: {text!r} is not a number of seconds >= 0.1")
    return value


def _status(arguments: argparse.Namespace) -> int:
    try:
        import redis

        from ..backends.redis.status import as_plain, read_fleet
    except ImportError:
        raise CommandError(f"status: {_NEEDS_REDIS}") from None
    policy_of = _policies(arguments.config) if arguments.config else None
    url = redact(arguments.backend)
    try:
        client = redis.Redis.from_url(
            arguments.backend, socket_connect_timeout=_TIMEOUT, socket_timeout=_TIMEOUT
        )
    except ValueError as error:
        raise CommandError(f"--backend {url}: {error}", 2) from None
    block = LiveBlock(sys.stdout)
    with client:
        while True:
            try:
                fleet = read_fleet(client, prefix=arguments.prefix, policy_of=policy_of)
            except redis.RedisError as error:
                raise CommandError(f"cannot read Redis at {url}: {error}") from None
            if arguments.json:
                print(json.dumps({"backend": url, "prefix": arguments.prefix, **as_plain(fleet)}))
            else:
                block.show(_render(fleet, url, arguments.prefix, known=policy_of is not None))
            if arguments.watch is None:
                return 0
            try:
                time.sleep(arguments.watch)
            except KeyboardInterrupt:  # how a watch ends
                return 0


def _policies(path: str) -> Callable[[str], KeyPolicy]:
    """What the fleet's policy file says of each model's state on Redis."""
    from ..backends.redis.status import KeyPolicy

    registry = Registry()
    registry.configure_from_file(path)

    def policy_of(model: str) -> KeyPolicy:
        policy = resolve(registry, model).policy
        return KeyPolicy() if policy is None else _key_policy(policy)

    return policy_of


def _key_policy(policy: Policy) -> KeyPolicy:
    from ..backends.redis.status import KeyPolicy

    budget = policy.retry.get("budget", {}) if policy.retry is not None else None
    return KeyPolicy(
        limits=policy.rate_limits(),
        shared_breaker=shared(policy.breaker),
        shared_budget=policy.make_budget() if shared(budget) else None,
    )


def _render(fleet: FleetStatus, url: str, prefix: str, *, known: bool) -> str:
    when = datetime.fromtimestamp(fleet.now, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    count = len(fleet.models)
    head = f"{url} (prefix {prefix!r}) at {when}: {count} model{'' if count == 1 else 's'}"
    if not fleet.models:
        return head + " (no model key: nothing has used this backend lately)"
    lines = [head, "", table(_HEADERS, [_row(model, fleet.now) for model in fleet.models])]
    if not known and any(limit.left is None for model in fleet.models for limit in model.limits):
        lines.append("")
        lines.append("Redis names limits by id only: --config FILE tells what each has left.")
    return "\n".join(lines)


def _row(model: ModelStatus, now: float) -> list[str]:
    limits = model.limits
    breaker, budget = model.breaker, model.budget
    return [
        model.model,
        str(model.processes),
        "\n".join(limit.limit for limit in limits) or "-",
        "\n".join(_left(limit.left, limit.capacity) for limit in limits) or "-",
        "\n".join(seconds(limit.full_in) if limit.full_in else "full" for limit in limits) or "-",
        seconds(model.paused_for) if model.paused_for else "-",
        "-" if breaker is None else _breaker(breaker.state, breaker.open_for, breaker.open_until),
        "-" if breaker is None else str(breaker.probes),
        "-" if budget is None else _budget(budget.calls, budget.retries, budget.retries_left),
    ]


def _left(left: float | None, capacity: float | None) -> str:
    if left is None or capacity is None:
        return "?"
    return f"{left:.4g} of {capacity:g}"


def _breaker(state: str, open_for: float, open_until: float | None) -> str:
    if open_until is None:
        return state.replace("_", "-")
    until = datetime.fromtimestamp(open_until, tz=timezone.utc).strftime("%H:%M:%S")
    return f"open {seconds(open_for)}\nuntil {until}"


def _budget(calls: int, retries: int, left: float | None) -> str:
    text = f"{retries} retries / {calls} calls"
    return text if left is None else f"{text}\n{left:g} left"
