"""The seed's (v0.1.0) own entry points, kept exactly: `LLMShield` and `parse_retry_after`.

The rest of the seed's API (`TokenBucket`, `CircuitBreaker`, `State`, `RetryPolicy`, `Shield`)
is the library's own. These two differ from what the library offers in its place: `LLMShield`
is a `Registry` seen the seed's way, and the seed's `parse_retry_after` answers 0.0 where
`rate_limit_shield.llm.parse_retry_after` tells that the server gave no usable hint (None).
"""

from __future__ import annotations

from collections.abc import Mapping

from .clock import Clock
from .errors import ConfigError
from .llm import parse_retry_after as _parse_retry_after
from .registry import Registry
from .shield import Shield

__all__ = ["LLMShield", "parse_retry_after"]


def parse_retry_after(headers: object, now: float | None = None) -> float:
    """Seconds the server asked to wait before retrying; 0.0 when it did not say, or not usably.

    Reads `retry-after-ms`, then `Retry-After` (seconds or an HTTP-date, measured from `now`,
    epoch seconds, `time.time()` by default). Never raises.
    """
    seconds = _parse_retry_after(headers, now)
    return 0.0 if seconds is None else seconds


class LLMShield:
    """A shield per model from requests-per-minute and tokens-per-minute maps.

    Built on its own `Registry` (`registry`): model names may be glob patterns, ``"default"``
    applies to every other model, and each model gets the library's defaults for the rest
    (breaker, retries, the provider error taxonomy, token estimates settled from usage).
    """

    def __init__(
        self,
        rpm_limits: Mapping[str, float] | None = None,
        tpm_limits: Mapping[str, float] | None = None,
        *,
        clock: Clock | None = None,
        strict: bool = False,
    ) -> None:
        policies: dict[str, dict[str, float]] = {}
        for key, limits in (("rpm", rpm_limits), ("tpm", tpm_limits)):
            if limits is None:
                continue
            if not isinstance(limits, Mapping):
                raise ConfigError(
                    f"{key}_limits: {limits!r} is not a mapping of model names to {key}"
                )
            for model, amount in limits.items():
                policies.setdefault(model, {})[key] = amount
        self.registry = Registry()
        try:
            self.registry.configure(policies, clock=clock, strict=strict)
        except ConfigError as exc:
            raise ConfigError(f"LLMShield: {exc.message}") from None

    def shield_for(self, model: str) -> Shield:
        """The live shield of `model`, the same object on every call: its `bucket` is the
        model's requests per minute; `breaker` and `retry` are its own."""
        return self.registry.key(model).shield

    def state_snapshot(self) -> dict[str, dict[str, object]]:
        """Per model used so far: the seed's ``available_tokens`` (requests its bucket holds now)
        and ``breaker_state`` ("closed", "open", "half_open"; None without a breaker), beside
        its pattern, rate levels, breaker counts, bulkhead and budget."""
        return {
            model: {**self._seed_state(model), **state}
            for model, state in self.registry.snapshot().items()
        }

    def _seed_state(self, model: str) -> dict[str, object]:
        shield = self.shield_for(model)
        bucket, breaker = shield.bucket, shield.breaker
        return {
            "available_tokens": None if bucket is None else bucket.available,
            "breaker_state": None if breaker is None else breaker.state.value,
        }

    def __repr__(self) -> str:
        return f"LLMShield(policies={dict(self.registry.policies)!r})"
