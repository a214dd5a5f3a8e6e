"""Helpers for testing code that uses the shield: a clock where waiting takes no time, a mode
that gives each test fresh limiter, breaker and bulkhead state on that clock, and a local fake
LLM provider (`FakeProvider`, loaded on first use) to point real SDK clients at."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .provider import FakeProvider

__all__ = ["FakeClock", "isolated", "FakeProvider"]


def __getattr__(name: str) -> Any:
    if name == "FakeProvider":  # an HTTP server: imported only by the tests that use one
        from .provider import FakeProvider

        return FakeProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FakeClock:
    """A virtual clock: `sleep` and `asleep` advance time at once and are recorded in `sleeps`.

    Thread-safe. `asleep` yields to the event loop once, so other tasks run as they would.
    """

    def __init__(self, start: float = 0.0, *, wall: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._wall_offset = float(wall) - float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards: advance({seconds!r})")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)

    @property
    def slept(self) -> float:
        """Total virtual time spent sleeping."""
        return sum(self.sleeps)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


@contextmanager
def isolated(clock: FakeClock | None = None) -> Iterator[FakeClock]:
    """Within the block, every model key and decorator starts afresh on a `FakeClock`.

    The configured policies stay, but nothing inside reaches the real backend's state: the default
    registry swaps in a new state whose keys live in memory, whatever backend was configured
    (a Redis URL included), so a test that drains, pauses or opens a key changes only its own
    copy, and shared breakers and retry budgets (`shared = true`) are local to the block too.
    `configure` inside the block keeps keys in memory even when given a backend (which is still
    validated). At the end, what `configure` (and `max_keys`) did inside is undone and the state
    from before the block, with its backend, comes back. Yields the clock, to advance or inspect.
    """
    from ..registry import default_registry

    clock = clock if clock is not None else FakeClock()
    registry = default_registry()
    saved = registry._enter_testing(clock)
    try:
        yield clock
    finally:
        registry._leave_testing(saved)
