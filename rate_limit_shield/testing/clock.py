"""A clock where waiting takes no time, for tests of code that sleeps between attempts."""

from __future__ import annotations

import asyncio
import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A virtual clock: `sleep` and `asleep` advance time at once and are recorded in `sleeps`.

    Thread-safe. `asleep` yields to the event loop once, so other tasks run as they would.
    """

    def __init__(self, start: float = 0.0, *, wall: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._wall_offset = float(wall) - float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        """Every sleep asked for, in seconds, in order (zero-second ones too)."""

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
