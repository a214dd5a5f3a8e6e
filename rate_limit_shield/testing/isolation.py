"""Fresh shield state for each test, on a `FakeClock`, whatever backend is configured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .clock import FakeClock

__all__ = ["isolated"]


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
