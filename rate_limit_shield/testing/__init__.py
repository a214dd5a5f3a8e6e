"""Helpers for testing code that uses the shield: a clock where waiting takes no time
(`FakeClock`), a mode that gives each test fresh limiter, breaker and bulkhead state on that
clock (`isolated`), and a local fake LLM provider (`FakeProvider`, loaded on first use) to point
real SDK clients at."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import FakeClock
from .isolation import isolated

if TYPE_CHECKING:
    from .provider import FakeProvider

__all__ = ["FakeClock", "isolated", "FakeProvider"]


def __getattr__(name: str) -> Any:
    if name == "FakeProvider":  # an HTTP server: imported only by the tests that use one
        from .provider import FakeProvider

        return FakeProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
