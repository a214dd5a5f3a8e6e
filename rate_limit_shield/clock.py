"""Where time comes from and how waiting happens.

Every primitive reads time through a `Clock`, and only the drivers sleep. The system clock
looks `time.monotonic`, `time.time`, `time.sleep` and `asyncio.sleep` up at each call, so
freezegun and monkeypatching work; `rate_limit_shield.testing.FakeClock` makes tests instant.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for decisions, wall time for server dates, and the two ways to wait."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock; each method looks its function up at call time."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
"""The clock of every part not given one: the real time, looked up at each call."""
