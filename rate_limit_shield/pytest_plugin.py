"""A pytest plugin (loaded through the `pytest11` entry point) with the `shield_clock` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FakeClock, isolated

__all__ = ["shield_clock"]


@pytest.fixture
def shield_clock() -> Iterator[FakeClock]:
    """Fresh shield state on a `FakeClock` for one test: backoff and cool-downs take no time.

    The test runs inside `testing.isolated()`: its keys live in memory, so it never reaches the
    state of a configured backend such as Redis."""
    with isolated() as clock:
        yield clock
