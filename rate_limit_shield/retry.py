"""How often to retry, and how long to wait in between.

`RetryPolicy` is pure arithmetic: it never sleeps. The shield asks it for the next delay and does
the waiting itself, so the same schedule serves threads and asyncio. `RetryBudget` caps retries
to a share of the calls a key made recently, so that a fleet in trouble does not multiply its load.
"""

from __future__ import annotations

import math
import random as _random
import threading
from collections.abc import Callable

from .clock import SYSTEM_CLOCK, Clock

__all__ = ["BACKOFFS", "RetryPolicy", "RetryBudget"]

BACKOFFS = ("full", "equal", "decorrelated", "constant", "none")


def _positive(name: str, value: float, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


class RetryPolicy:
    """Exponential backoff with jitter, applied after the cap.

    The delay after attempt `n` (1 for the first attempt, as the seed counts; none after 0) is
    drawn from the backoff: ``full``: uniform(0, c); ``equal``: c/2 + uniform(0, c/2);
    ``decorrelated``: min(max_delay, uniform(base_delay, 3 x previous)); ``constant``:
    base_delay; ``none``: c, where c = min(max_delay, base_delay x multiplier**(n - 1)). A server
    hint (Retry-After) is a floor for the delay; a hint longer than `max_retry_after` or than the
    time left stops the retries at once (see `hint_too_long`).
    `jitter=True` (the seed's flag) means ``full``, `jitter=False` means ``none``.
    """

    __slots__ = (
        "max_attempts",
        "base_delay",
        "max_delay",
        "multiplier",
        "backoff",
        "max_retry_after",
        "_random",
    )

    def __init__(
        self,
        max_attempts: int = 3,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        multiplier: float = 2.0,
        jitter: bool = True,
        *,
        backoff: str | None = None,
        max_retry_after: float = 60.0,
        random: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if backoff is None:
            backoff = "full" if jitter else "none"
        elif backoff not in BACKOFFS:
            raise ValueError(f"backoff must be one of {', '.join(BACKOFFS)}; got {backoff!r}")
        self.max_attempts = max_attempts
        self.base_delay = _positive("base_delay", base_delay, zero_ok=True)
        self.max_delay = _positive("max_delay", max_delay, zero_ok=True)
        if self.max_delay < self.base_delay:
            raise ValueError(f"max_delay ({max_delay!r}) must be >= base_delay ({base_delay!r})")
        self.multiplier = _positive("multiplier", multiplier)
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {multiplier!r}")
        self.backoff = backoff
        self.max_retry_after = _positive("max_retry_after", max_retry_after, zero_ok=True)
        self._random = random if random is not None else _random.random

    @property
    def jitter(self) -> bool:
        return self.backoff not in ("none", "constant")

    def delay_for(self, attempt: int, previous: float | None = None) -> float:
        """The backoff delay after attempt number `attempt` (1-based, as the seed counts: 0.0
        for attempt 0, `base_delay` before jitter for attempt 1), without any server hint;
        `previous` is the delay before, which ``decorrelated`` grows from."""
        if attempt < 1:
            return 0.0
        backoff = self.backoff
        if backoff == "constant":
            return self.base_delay
        if backoff == "decorrelated":
            low = self.base_delay
            high = max(low, 3.0 * (previous if previous is not None else low))
            return min(self.max_delay, low + self._random() * (high - low))
        try:
            cap = min(self.max_delay, self.base_delay * self.multiplier ** (attempt - 1))
        except OverflowError:
            cap = self.max_delay
        if backoff == "full":
            return self._random() * cap
        if backoff == "equal":
            return cap / 2 + self._random() * (cap / 2)
        return cap

    def next_delay(
        self,
        attempts_made: int,
        previous: float | None,
        retry_after: float | None,
        time_left: float,
    ) -> float | None:
        """The delay before the next attempt, or None when the schedule says stop.

        Stops when the attempts are used up, when the server's hint is too long to wait out
        (`hint_too_long`), or when the delay would not end before the deadline (`time_left`
        seconds away): it never plans a sleep past the deadline.
        """
        if attempts_made >= self.max_attempts:
            return None
        delay = self.delay_for(attempts_made, previous)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            delay = max(delay, retry_after)
        if delay >= time_left:
            return None
        return delay

    def hint_too_long(self, retry_after: float | None, time_left: float) -> str | None:
        """Why the server's hint ends the retries at once, or None when it can be waited out.

        A hint longer than the `time_left` before the deadline, or than `max_retry_after`, is
        not waited out in part: an attempt sent before the hint ends would be refused again, so
        the caller is better told at once how long the server asked for.
        """
        if retry_after is None:
            return None
        if retry_after > time_left:
            return f"more than the {time_left:.3f}s left"
        if retry_after > self.max_retry_after:
            return f"more than max_retry_after ({self.max_retry_after:g}s)"
        return None

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(max_attempts={self.max_attempts}, base_delay={self.base_delay}, "
            f"max_delay={self.max_delay}, multiplier={self.multiplier}, "
            f"backoff={self.backoff!r}, max_retry_after={self.max_retry_after})"
        )


class RetryBudget:
    """Retries allowed: at most `ratio` of the calls of the last `window` seconds, plus a floor of
    `min_per_second` retries per second. O(1) state: a ring of one-second buckets."""

    __slots__ = ("ratio", "min_per_second", "window", "_clock", "_lock", "_ring")

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 1.0,
        *,
        window: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.ratio = _positive("ratio", ratio, zero_ok=True)
        self.min_per_second = _positive("min_per_second", min_per_second, zero_ok=True)
        self.window = _positive("window", window)
        if self.window != int(self.window):
            raise ValueError(f"window must be a whole number of seconds, got {window!r}")
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._lock = threading.Lock()
        # One [second, calls, retries] bucket per second of the window.
        self._ring = [[-1, 0, 0] for _ in range(int(self.window))]

    def _bucket(self, second: int) -> list[int]:
        bucket = self._ring[second % len(self._ring)]
        if bucket[0] != second:
            bucket[0], bucket[1], bucket[2] = second, 0, 0
        return bucket

    def record_call(self) -> None:
        """Count one call (a first attempt). Every call pays this: `_bucket` is inlined."""
        second = int(self._clock.monotonic())
        ring = self._ring
        with self._lock:
            bucket = ring[second % len(ring)]
            if bucket[0] != second:
                bucket[0], bucket[1], bucket[2] = second, 0, 0
            bucket[1] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget if there is one left."""
        second = int(self._clock.monotonic())
        with self._lock:
            calls, retries = self._totals(second)
            if retries >= self.allowed(calls):
                return False
            self._bucket(second)[2] += 1
            return True

    def _totals(self, second: int) -> tuple[int, int]:
        oldest = second - len(self._ring)
        calls = retries = 0
        for stamp, c, r in self._ring:
            if oldest < stamp <= second:
                calls += c
                retries += r
        return calls, retries

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            calls, retries = self._totals(int(self._clock.monotonic()))
        return {
            "calls": calls,
            "retries": retries,
            "retries_left": max(0.0, self.allowed(calls) - retries),
        }

    def allowed(self, calls: float) -> float:
        """Retries allowed over a window that saw `calls` calls."""
        return self.ratio * calls + self.min_per_second * self.window
