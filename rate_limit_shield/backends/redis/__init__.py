"""The Redis backend: rate limits, circuit breakers and retry budgets shared by every process
that uses the same Redis.

`RedisBackend` makes them for the registry's model keys (`configure(backend="redis://...")`):
a `RedisLimiter` per key, and a `SharedBreaker` or `SharedBudget` where a policy asks for one.
Each runs its own Lua script on the server's clock through `GuardedScript` (in `_script`), which
leaves Redis alone for a while after a failure and warns once per outage; script calls go out
on the connections of `_connection`. Those two sit below the three users; `backend` above them.

Needs redis-py (the `redis` extra) and Redis >= 6 (SET KEEPTTL; scripts replicated by their
effects).
"""

from ._connection import from_url
from .backend import RedisBackend
from .breaker import PROBE_TTL_FACTOR, SharedBreaker
from .budget import SharedBudget
from .limiter import BackendUnavailable, RedisLimiter

__all__ = [
    "BackendUnavailable", "PROBE_TTL_FACTOR", "RedisBackend", "RedisLimiter", "SharedBreaker",
    "SharedBudget", "from_url",
]  # fmt: skip
