"""`configure(backend=...)` on a real redis-server: two registries stand for two processes that
share one quota, one pause, one breaker verdict."""

from __future__ import annotations

import ast
import asyncio
import graphlib
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer

import rate_limit_shield as rls
import rate_limit_shield.backends.redis as redis_backend
from rate_limit_shield import Registry
from rate_limit_shield.backends.redis import (
    BackendUnavailable,
    RedisBackend,
    RedisLimiter,
    SharedBreaker,
    SharedBudget,
    from_url,
)
from rate_limit_shield.testing import FakeClock


class Throttled(Exception):
    """Shaped like an SDK's 429: a status and the response's headers."""

    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limited")
        self.response = type("Response", (), {"headers": {"retry-after": str(retry_after)}})()


def fleet(backend: Any, policies: dict[str, Any], size: int = 2) -> list[Registry]:
    """`size` registries on one backend: what `size` processes configured alike would have."""
    registries = []
    for _ in range(size):
        registry = Registry()
        registry.configure(policies, backend=backend, clock=FakeClock())
        registries.append(registry)
    return registries


def test_a_redis_url_makes_every_key_share_its_limits(redis_url: str) -> None:
    one, two = fleet(redis_url, {"gpt-4o": {"rpm": 3, "tpm": 1_000}})
    assert isinstance(one.key("gpt-4o").limiter, RedisLimiter)
    taken = [registry.key("gpt-4o").limiter.try_acquire() for registry in (one, two, one, two)]
    assert taken == [True, True, True, False]  # three per minute for the fleet, not each


def test_a_throttle_seen_by_one_process_pauses_the_model_for_all(redis_url: str) -> None:
    one, two = fleet(redis_url, {"default": {"retry": None}})  # no limits: pause only
    with pytest.raises(Throttled):
        one.key("claude").shield.call(lambda: (_ for _ in ()).throw(Throttled(30)))
    assert two.key("claude").limiter.paused_for == pytest.approx(30, abs=1)
    assert two.key("gpt-4o").limiter.paused_for == 0.0


def test_a_shared_breaker_opened_by_one_process_is_open_for_all(redis_url: str) -> None:
    policy = {"breaker": {"shared": True, "failure_threshold": 1}, "retry": None}
    one, two = fleet(redis_url, {"default": policy})
    assert isinstance(one.key("m").breaker, SharedBreaker)
    with pytest.raises(ConnectionError):
        one.key("m").shield.call(lambda: (_ for _ in ()).throw(ConnectionError()))
    with pytest.raises(rls.CircuitOpen):
        two.key("m").shield.call(lambda: "never sent")


def test_a_shared_budget_counts_on_the_fleet(redis_url: str) -> None:
    policy = {"retry": {"budget": {"shared": True, "ratio": 0.0, "min_per_second": 0.1}}}
    one, two = fleet(redis_url, {"default": policy})
    budgets = [registry.key("m").budget for registry in (one, two)]
    assert all(isinstance(budget, SharedBudget) for budget in budgets)
    assert budgets[0] is not None and budgets[1] is not None
    assert budgets[0].try_spend()  # the floor: 0.1 per second over 10 s is one retry
    assert not budgets[1].try_spend()


def test_the_backend_can_come_from_the_configuration_file(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text(f'backend = "{redis_url}"\n[policies.default]\nrpm = 1\n')
    registry = Registry()
    registry.configure_from_file(path)
    assert isinstance(registry.key("m").limiter, RedisLimiter)


def test_an_async_decorated_call_shares_the_quota(redis_url: str) -> None:
    one, two = fleet(redis_url, {"gpt-4o": {"rpm": 1, "max_wait": 0}})

    async def ask() -> str:
        return "answer"

    async def scenario() -> None:
        first = rls.shielded(model="gpt-4o", registry=one)(ask)
        second = rls.shielded(model="gpt-4o", registry=two)(ask)
        assert await first() == "answer"
        with pytest.raises(rls.RateLimited):
            await second()

    asyncio.run(scenario())


def test_deny_refuses_calls_while_redis_is_down(own_redis_server: RedisServer) -> None:
    client, aclient = from_url(own_redis_server.url)
    backend = RedisBackend(client, aclient, on_backend_error="deny")
    (registry,) = fleet(backend, {"default": {"rpm": 10}}, size=1)
    call = rls.shielded(model="m", registry=registry)(lambda: "sent")
    assert call() == "sent"
    own_redis_server.kill()
    with pytest.raises(BackendUnavailable) as refused:
        call()
    assert isinstance(refused.value, rls.ShieldError)


def test_local_keeps_calls_going_while_redis_is_down(own_redis_server: RedisServer) -> None:
    (registry,) = fleet(own_redis_server.url, {"default": {"rpm": 10}}, size=1)
    call = rls.shielded(model="m", registry=registry)(lambda: "sent")
    own_redis_server.kill()
    assert [call() for _ in range(3)] == ["sent"] * 3


def package_imports(package: Path) -> dict[str, set[str]]:
    """For each module of `package`, the modules of the package it imports (at any level of the
    code, under TYPE_CHECKING too); `__init__` stands for the package itself."""
    modules = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for module in modules:
        imported = graph.setdefault(module, set())
        for node in ast.walk(ast.parse((package / f"{module}.py").read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level != 1:
                continue
            if node.module is not None:
                imported.add(node.module.split(".")[0])
            else:  # `from . import x`: the module x, or a name of the package's __init__
                names = {alias.name for alias in node.names}
                imported |= names & modules or {"__init__"}
    return graph


def test_the_redis_package_has_no_import_circle() -> None:
    graph = package_imports(Path(redis_backend.__file__).parent)
    assert {"_connection", "_script", "limiter", "breaker", "budget"} <= graph.keys()
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError if any
    # The shared parts sit below their three users, the backend above them.
    for user in ("limiter", "breaker", "budget"):
        assert "_script" in graph[user]
        assert order.index("_script") < order.index(user) < order.index("backend")
    assert graph["_connection"] == set()


def test_the_redis_backend_is_importable_from_backends() -> None:
    from rate_limit_shield.backends import RedisBackend

    assert RedisBackend is redis_backend.RedisBackend
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        _ = rls.backends.Nothing  # type: ignore[attr-defined]
