"""The server's own limits: one token bucket per unit per model, charged up front and settled
to the real usage once the answer is complete."""

from __future__ import annotations

import math

__all__ = ["UNITS", "Bucket", "charges", "settle"]

UNITS = ("requests", "tokens", "input_tokens", "output_tokens")


class Bucket:
    """A token bucket refilled continuously; the server's own limit for one unit of one model."""

    __slots__ = ("capacity", "rate", "level", "updated")

    def __init__(self, capacity: float, per_seconds: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        return max(0.0, (amount - self.level) / self.rate)

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate

    def remaining(self) -> str:
        """What the bucket has left, as a header says it: whole units, none while in debt."""
        return str(max(0, math.floor(self.level)))


def charges(prompt: int, completion: int) -> dict[str, float]:
    """What a request of `prompt` tokens answered with `completion` tokens costs, by unit."""
    return {
        "requests": 1.0,
        "tokens": float(prompt + completion),
        "input_tokens": float(prompt),
        "output_tokens": float(completion),
    }


def settle(buckets: dict[str, Bucket], change: dict[str, float]) -> None:
    """Give back (or, without max_tokens, charge) the difference between a request's admission
    charge and its real usage; a bucket may go into debt."""
    for unit, bucket in buckets.items():
        bucket.level = min(bucket.capacity, bucket.level + change[unit])
