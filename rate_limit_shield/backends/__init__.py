"""Where a model key's rate state lives: in this process (the default), or on Redis, shared by
every process that uses the same server.

A backend makes the limiters of the registry's model keys; `configure(backend=...)` takes None
(in memory), a ``redis://`` URL, a redis-py client, or a backend object. Redis support needs the
`redis` extra and is imported only when asked for: `RedisBackend` and `BackendUnavailable` are
here too (from `.redis`), loaded at first use.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..clock import Clock
from ..errors import ConfigError
from ..limiter import Limit, Limiter

if TYPE_CHECKING:
    from .redis import BackendUnavailable, RedisBackend

__all__ = [
    "Backend",
    "MemoryBackend",
    "MEMORY",
    "backend_from",
    "RedisBackend",
    "BackendUnavailable",
]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_NEEDS_REDIS = "Redis needs redis-py: pip install 'rate-limit-shield[redis]'"


@runtime_checkable
class Backend(Protocol):
    """Makes the limiter of one model key."""

    def limiter(self, limits: Iterable[Limit], *, clock: Clock, name: str) -> Limiter: ...


class MemoryBackend:
    """State in this process only: the default."""

    def limiter(self, limits: Iterable[Limit], *, clock: Clock, name: str) -> Limiter:
        return Limiter(limits, clock=clock, name=name)

    def __repr__(self) -> str:
        return "MemoryBackend()"


MEMORY = MemoryBackend()
"""The in-memory backend: what `configure(backend=None)` or `backend="memory"` means."""


def backend_from(value: object) -> Backend:
    """The backend `configure(backend=value)` means; a `ConfigError` names what is wrong."""
    if value is None or value == "memory":
        return MEMORY
    if isinstance(value, str):
        if not value.startswith(_REDIS_SCHEMES):
            raise ConfigError(
                f"backend: {value!r} is neither 'memory' nor a redis:// or rediss:// URL"
            )
        backend: Backend = _redis().RedisBackend.from_url(value)
        return backend
    if isinstance(value, Backend):
        return value
    if callable(getattr(value, "evalsha", None)):  # a (sync) redis-py client
        client_backend: Backend = _redis().RedisBackend(value)
        return client_backend
    raise ConfigError(
        f"backend: {value!r} is not a backend (None, 'memory', a redis:// URL, a redis client, "
        "or an object with a limiter(limits, *, clock, name) method)"
    )


def _redis() -> ModuleType:
    try:
        from . import redis
    except ImportError as error:  # pragma: no cover - depends on what is installed
        raise ConfigError(f"backend: {_NEEDS_REDIS}") from error
    return redis


def __getattr__(name: str) -> type[RedisBackend | BackendUnavailable]:
    """`RedisBackend` and `BackendUnavailable`, imported when first asked for: redis-py is an
    optional extra."""
    if name not in ("RedisBackend", "BackendUnavailable"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import redis
    except ImportError as error:
        raise ImportError(_NEEDS_REDIS) from error
    found: type[RedisBackend | BackendUnavailable] = getattr(redis, name)
    return found
