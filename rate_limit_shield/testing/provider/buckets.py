"""The server's own limits: one token bucket per unit per model, charged up front and settled
to the real usage once the answer is complete.

A bucket refills over a minute, or over a slice of a minute that divides it evenly: OpenAI
enforces a per-minute limit in such slices ("60,000 requests/minute may be enforced as 1,000
requests/second"), which benchmarks use to go fast. Whatever the slice, a bucket is stated as
the per-minute limit it enforces (the RPM and TPM that OpenAI's and Anthropic's headers and
messages give): the same refill rate, and what it lacks counted against the per-minute amount.
No provider states an hourly limit, so no other window is accepted; daily limits (OpenAI's
RPD for some tiers) are not modelled.
"""

from __future__ import annotations

import math

__all__ = ["MINUTE", "UNITS", "WINDOWS", "Bucket", "charges", "settle"]

UNITS = ("requests", "tokens", "input_tokens", "output_tokens")
MINUTE = 60
WINDOWS = tuple(seconds for seconds in range(1, MINUTE + 1) if MINUTE % seconds == 0)
"""The windows a bucket may refill over, in seconds: a minute or a slice that divides it."""


class Bucket:
    """A token bucket refilled continuously; the server's own limit for one unit of one model."""

    __slots__ = ("capacity", "rate", "per_minute", "level", "updated")

    def __init__(self, capacity: float, per_seconds: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / per_seconds
        self.per_minute = capacity * MINUTE / per_seconds
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

    def remaining(self) -> int:
        """What is left of the per-minute limit, as headers say it: whole units, none in debt."""
        return max(0, math.floor(self.per_minute - (self.capacity - self.level)))

    def used(self) -> float:
        """What is taken from the per-minute limit, as a 429's message says it."""
        return self.per_minute - self.remaining()


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
