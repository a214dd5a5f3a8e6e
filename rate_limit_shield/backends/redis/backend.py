"""`RedisBackend`: what `configure(backend="redis://...")` makes: each model key's limiter, and
its shared breaker and retry budget when a policy asks for them, on one Redis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis
import redis.asyncio

from ...clock import Clock
from ...errors import ConfigError
from ...limiter import Limit
from ._connection import from_url
from .breaker import SharedBreaker
from .budget import SharedBudget
from .limiter import RedisLimiter, check_options

__all__ = ["RedisBackend"]


class RedisBackend:
    """Makes each model key's `RedisLimiter` on one Redis: `configure(backend="redis://...")`.

    The options are `RedisLimiter`'s, checked here at once rather than at a key's first use.
    """

    def __init__(
        self,
        client: redis.Redis,
        aclient: redis.asyncio.Redis | None = None,
        *,
        prefix: str = "rls",
        on_backend_error: str = "local",
        local_share: float | None = None,
        recovery_timeout: float = 2.0,
    ) -> None:
        if isinstance(client, redis.asyncio.Redis):
            raise ConfigError(
                f"backend: {client!r} is an asyncio client, which cannot serve synchronous "
                "calls; pass a redis:// URL, or a sync client (and the asyncio one as aclient)"
            )
        check_options(prefix, on_backend_error, local_share, recovery_timeout)
        self.client = client
        self.aclient = aclient
        self._prefix = prefix
        self._on_backend_error = on_backend_error
        self._local_share = local_share
        self._recovery_timeout = recovery_timeout

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        """A backend on the fail-fast clients of `from_url(url)`."""
        client, aclient = from_url(url)
        return cls(client, aclient)

    def limiter(self, limits: Iterable[Limit], *, clock: Clock, name: str) -> RedisLimiter:
        return RedisLimiter(
            limits,
            client=self.client,
            aclient=self.aclient,
            name=name,
            prefix=self._prefix,
            clock=clock,
            on_backend_error=self._on_backend_error,
            local_share=self._local_share,
            recovery_timeout=self._recovery_timeout,
        )

    def shared_breaker(
        self, options: Mapping[str, Any], *, clock: Clock, name: str
    ) -> SharedBreaker:
        """The breaker of a policy with `breaker.shared`: its state is the fleet's."""
        return SharedBreaker(
            **options,
            client=self.client,
            prefix=self._prefix,
            redis_recovery_timeout=self._recovery_timeout,
            clock=clock,
            name=name,
        )

    def shared_budget(self, options: Mapping[str, Any], *, clock: Clock, name: str) -> SharedBudget:
        """The retry budget of a policy with `retry.budget.shared`: it counts fleet-wide."""
        return SharedBudget(
            **options,
            client=self.client,
            prefix=self._prefix,
            redis_recovery_timeout=self._recovery_timeout,
            clock=clock,
            name=name,
        )

    def __repr__(self) -> str:
        return f"RedisBackend({self.client!r}, prefix={self._prefix!r})"
