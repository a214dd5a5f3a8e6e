"""A cache that cannot grow without bound, for caches keyed by classes.

Programs make classes on the fly (a named tuple or a pydantic model per call): a plain dict
keyed by them would keep every one alive. The cache empties itself when an insert finds it full,
which costs each class still in use one miss; reads are plain dict reads, so hot paths pay
nothing for the bound.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["CLASS_CACHE_MAX", "BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")

CLASS_CACHE_MAX = 1024
"""Entries a class cache holds: far more than the result classes a program really has."""


class BoundedCache(dict[K, V]):
    """A dict of at most `limit` entries: `cache[key] = value` empties it first when it is full
    (O(1) amortised). Insert only by item assignment (`setdefault` and `update` skip the bound)."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = CLASS_CACHE_MAX) -> None:
        super().__init__()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit: {limit!r} is not a positive int")
        self.limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        if len(self) >= self.limit and key not in self:
            self.clear()
        super().__setitem__(key, value)

    def __repr__(self) -> str:
        return f"BoundedCache({dict.__repr__(self)}, limit={self.limit})"
