"""Server guidance: hold a key's limiter to what the provider says remains, and pace adaptively.

Providers report their own buckets in rate-limit headers on every answer (errors included, and
raw responses), so a fleet sharing a quota, or a limit configured too high, is caught before it
turns into 429s: the local bucket is clamped to the provider's `remaining`. With `adaptive`, each
throttle also cuts the key's refill rate multiplicatively, and the rate then recovers linearly
over the shortest limit's window, as the AWS SDKs' adaptive retry mode does; never above the
configured limits.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._bounded import remember
from ..clock import SYSTEM_CLOCK, Clock
from ..limiter import Limiter
from ..outcome import Outcome
from .classify import headers_of
from .headers import RateLimitInfo

__all__ = ["AdaptiveRate", "Guide"]

_THROTTLED = Outcome.THROTTLED
_SUCCESS = Outcome.SUCCESS


class AdaptiveRate:
    """Cuts a limiter's rates by `cut` on a throttle, at most once per `cooldown` seconds and
    never below `floor`, and lets them recover to the full rate over `recovery` seconds."""

    __slots__ = ("_limiter", "_clock", "cut", "floor", "recovery", "cooldown", "_low", "_since")

    def __init__(
        self,
        limiter: Limiter,
        clock: Clock,
        *,
        cut: float = 0.7,
        floor: float = 0.05,
        recovery: float | None = None,
        cooldown: float = 1.0,
    ) -> None:
        if not limiter.limits:
            raise ValueError("adaptive pacing needs a limiter with at least one limit")
        self._limiter = limiter
        self._clock = clock
        self.cut = cut
        self.floor = floor
        self.recovery = (
            recovery if recovery is not None else min(limit.per_seconds for limit in limiter.limits)
        )
        self.cooldown = cooldown
        self._low = 1.0  # the factor right after the last cut
        self._since = -float("inf")  # when it was cut

    @property
    def factor(self) -> float:
        """The share of the configured rates in force now."""
        return self._limiter.rate_factor

    def throttled(self) -> None:
        """The provider throttled: cut the rate, unless it was cut a moment ago."""
        now = self._clock.monotonic()
        if now - self._since < self.cooldown:
            return
        self._low = max(self.floor, self._recovered(now) * self.cut)
        self._since = now
        self._limiter.scale_rates(self._low)

    def succeeded(self) -> None:
        """A call went through: let the rate climb back, in steps of at least 1 %."""
        factor = self._limiter.rate_factor
        if factor < 1.0:
            recovered = self._recovered(self._clock.monotonic())
            if recovered >= 1.0 or recovered - factor >= 0.01:
                self._limiter.scale_rates(recovered)

    def _recovered(self, now: float) -> float:
        return min(1.0, self._low + (now - self._since) / self.recovery)


class Guide:
    """What a key learns from each outcome: the provider's remaining quota, and throttles.

    For the units in `learns`, a limiter with no limit of the unit takes the provider's own
    (see `Limiter.clamp`): a key with nothing configured is paced from its first answer on.
    Reset times given as dates are read against `clock.time()`."""

    __slots__ = ("_limiter", "_clock", "adaptive", "learns", "skip")

    def __init__(
        self,
        limiter: Limiter,
        adaptive: AdaptiveRate | None = None,
        clock: Clock = SYSTEM_CLOCK,
        *,
        learns: Iterable[str] = (),
    ) -> None:
        self._limiter = limiter
        self._clock = clock
        self.adaptive = adaptive
        self.learns = frozenset(learns)
        """The units whose limit the limiter learns when it has none: only those its calls'
        costs count (a number cost is charged to every limit)."""
        self.skip: dict[type, None] = {}
        """Result classes that teach nothing (no headers, and no pacing to recover): a shield
        need not call the guide for their successes. Bounded: classes made on the fly come and
        go."""

    def __call__(self, outcome: Outcome, subject: object) -> None:
        headers = headers_of(subject)
        if headers is not None:
            self.clamp(RateLimitInfo.from_headers(headers, now=self._clock.time()))
        elif self.adaptive is None and not isinstance(subject, BaseException):
            remember(self.skip, type(subject), None)
        adaptive = self.adaptive
        if adaptive is not None:
            if outcome is _SUCCESS:
                adaptive.succeeded()
            elif outcome is _THROTTLED:
                adaptive.throttled()

    def clamp(self, info: RateLimitInfo) -> None:
        """Hold each local bucket to what the provider says remains of it.

        A provider's limit counted over a window of its own (Groq's requests per day) is held by
        the key's limit of that window, and adopted by no other: 1000 a day is not 1000 a
        minute. Without one, what remains of it still caps the key's nearest window, and none
        left holds the key until the provider's reset (see `Limiter.clamp`)."""
        limiter, learns = self._limiter, self.learns
        for unit, quota in info.quotas().items():
            if quota.remaining is not None:
                limiter.clamp(
                    unit,
                    quota.remaining,
                    quota.limit,
                    quota.reset,
                    quota.per_seconds,
                    learn=unit in learns,
                )
