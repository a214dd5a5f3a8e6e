"""Caches keyed by classes, kept bounded.

Programs make classes on the fly (a named tuple or a pydantic model per call): a plain dict
keyed by them would keep every one alive. `remember` empties such a cache when an insert finds
it full, which costs each class still in use one miss. The caches stay plain dicts, so that
reading them on a hot path costs no more than a dict lookup.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["CLASS_CACHE_MAX", "remember"]

K = TypeVar("K")
V = TypeVar("V")

CLASS_CACHE_MAX = 1024
"""Entries a class cache holds: far more than the result classes a program really has."""


def remember(cache: dict[K, V], key: K, value: V, limit: int = CLASS_CACHE_MAX) -> None:
    """`cache[key] = value`, emptying `cache` first when it holds `limit` entries (O(1)
    amortised)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
