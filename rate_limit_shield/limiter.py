"""Rate limits as GCRA token buckets: several limits per key, taken atomically, by reservation.

Each limit keeps a single float, its theoretical arrival time `tat` (GCRA, the virtual-scheduling
form of a token bucket): with the emission interval `T = per_seconds / amount` and the burst
tolerance `tau = capacity * T`, a cost `c` may go ahead at `max(tat, now) + c*T - tau`. A call
goes at the latest of these over its limits and the end of a pause, its ready time, and is
charged to each limit from then: `tat` becomes `max(tat, ready) + c*T`, or a limit would refill,
while the call waits for another, what the call takes when it goes. Reserving a future slot
instead of refusing is what makes waiters FIFO without a queue; tokens now are
`capacity - (max(tat, now) - now)/T`. A refund moves `tat` back, but never further than the
calls that went since allow (see `Reservation`). A debt (a call that cost more than it was
charged) moves `tat` on from now, and each call already waiting as far as it delays that call
or one ahead of it, on every limit (see `debt_since`).
"""

from __future__ import annotations

import math
import operator
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TypeAlias

from ._chains import Chains
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigError, CostTooLarge, RateLimited

__all__ = [
    "HEADROOM",
    "MINUTE",
    "UNITS",
    "SETTLE_WITHIN",
    "Cost",
    "Limit",
    "Reservation",
    "Limiter",
    "TokenBucket",
    "BucketView",
    "learned_limit",
]

UNITS = ("requests", "tokens", "input_tokens", "output_tokens")
"""What a limit may count: requests, or tokens (input and output together, or either alone)."""

Cost: TypeAlias = float | Mapping[str, float]
"""A number charged to every limit, or an amount per unit (see `Limiter`)."""

_ROUNDING = 1e-9
"""Seconds of float rounding forgiven, so that a full burst is not refused by its last ulp."""

SETTLE_WITHIN = 900.0
"""Seconds after the latest reservation during which a settle or cancel can still give back what
a reservation over-charged; a limiter keeps the history that takes only as long, or for as long
as a reservation's call waits, so that no change of rate moves it."""


MINUTE = 60.0
"""The window of a provider's limit whose headers name none: OpenAI and Anthropic count per
minute."""

HEADROOM = 0.02
"""The share of a provider's stated rate a learned limit leaves unused: calls sent exactly at the
provider's rate arrive a little sooner or later than they were sent apart (the network, its
clock and ours), and its bucket then keeps a little for those that come early."""

_SLICE = 1.0
"""Seconds of a learned requests limit taken at once: a provider may enforce a per-minute limit
in slices of a minute ("60,000 requests/minute may be enforced as 1,000 requests/second"), and
states it per minute all the same, so no more than the finest slice's share may go together."""

_TRANSIT = 0.25
"""Seconds of the provider's refill a learned burst of requests leaves unused. A provider's
bucket that is full while calls are on their way (a stall of the network, of its server or of
this process between reserving and sending) loses the refill meanwhile, and the calls sent
in that time then arrive together: a burst that the provider's own capacity less this refill
still holds survives a stall this long."""

_NUMBERS = (int, float, Real)
"""Number types, the built-in ones first: `isinstance` then skips the slow ABC for them."""


def _number(value: object) -> float:
    """`value` as a float, or NaN (which every range check refuses) if it is not a number."""
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        return math.nan
    return float(value)


def _check_positive(name: str, value: object) -> None:
    if not 0.0 < _number(value) < math.inf:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _amount(value: object, name: str, unit: str = "") -> float:
    """A cost amount as a float; refuses bools, negatives, NaN and infinity."""
    amount = _number(value)
    if not 0.0 <= amount < math.inf:
        label = f"{name}[{unit!r}]" if unit else name
        raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
    return amount


def _format(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


@dataclass(frozen=True, slots=True)
class Limit:
    """`amount` units per `per_seconds`, refilled continuously, holding at most `burst`."""

    amount: float
    """Units allowed per window."""
    per_seconds: float
    """The window, in seconds."""
    unit: str = "requests"
    """What it counts: one of `UNITS`."""
    burst: float | None = None
    """The most it holds, and so lets go at once; None: the whole `amount`."""

    def __post_init__(self) -> None:
        _check_positive("Limit amount", self.amount)
        _check_positive("Limit per_seconds", self.per_seconds)
        if self.unit not in UNITS:
            raise ConfigError(f"Limit unit must be one of {UNITS}, got {self.unit!r}")
        if self.burst is not None:
            _check_positive("Limit burst", self.burst)

    @property
    def capacity(self) -> float:
        """The most that can be taken at once: `burst`, or the whole amount by default."""
        return self.amount if self.burst is None else self.burst

    @property
    def rate(self) -> float:
        """Units regained per second."""
        return self.amount / self.per_seconds

    def __str__(self) -> str:
        label = f"{_format(self.amount)}/{_format(self.per_seconds)}s {self.unit}"
        return label if self.burst is None else f"{label} burst {_format(self.burst)}"


def learned_limit(unit: str, amount: float, per_seconds: float) -> Limit:
    """The limit a key with none of `unit` takes from a provider stating `amount` per
    `per_seconds`: that rate less `HEADROOM`, with a burst of one slice of requests less
    `_TRANSIT` (at least one), since a provider's per-minute limit may be enforced a second at a
    time; tokens at the whole amount, which is what the provider admits in one request, whatever
    its slices (the requests it comes with are paced)."""
    paced = amount * (1.0 - HEADROOM)
    if unit != "requests":
        return Limit(paced, per_seconds, unit)
    burst = max(1.0, amount * (_SLICE - _TRANSIT) / per_seconds)
    return Limit(paced, per_seconds, unit, None if burst >= paced else burst)


class Reservation:
    """A granted permit: when its holder may go, and what it charged, to give back at most once.

    What `settle` or `cancel` gives back is the part of the over-charge that no call since could
    have used; nothing a bucket charged each call's real cost when the call went would not hold.
    Per limit, in GCRA terms: each decision j (a reservation, a permit, a debt, a provider's
    floor) charges c_j seconds to the schedule from s_j, when its call goes (its ready time,
    once every limit and the pause let it; now for a debt). Its chain is
    V_j = s_j + c_j + c_(j+1) + ... (every later charge included), and `tat` = max_j V_j.
    A reservation n whose real cost is e seconds below its charge (e counted in units, at the
    rate in force when settled) moves `tat` to max(tat - e, M_n), M_n = max over decisions j
    after n of V_j: it gives back min(e, tat - M_n).
    With no later decision that is all of e; once a later call queued or went past its slot, only
    what is left. A debt (real cost above the charge) is a new decision charged at settle time;
    it also holds back the calls still waiting then, as far as it delays them (see
    `Limiter.debt_since`).
    `cancel` is a settle at 0. A provider's floor (`Limiter.clamp`) is a chain of its own.
    A change of rate (`Limiter.scale_rates`, a provider's limit adopted or lapsed) stretches what
    each chain has ahead of now by new interval / old one, but never the seconds before a call
    that waits: a rise rescales such a chain from its s_j, not from now, so that no later call
    goes before the bucket, having given the waiting ones what they took, could hold it. A
    reservation given back whole is no call: the place a rise kept for it goes with it.
    A limiter that keeps less history must give back less, never more: `_chains.Chains` merges
    old chains into one that bounds them; keeping none, a refund comes back only if no decision
    came after the reservation's.
    """

    __slots__ = (
        "_cost",
        "_increments",
        "_limiter",
        "_limits",
        "_position",
        "_units",
        "_waiter",
        "bound_by",
        "delay",
        "ready_at",
    )

    def __init__(
        self,
        limiter: Limiter,
        ready_at: float,
        delay: float,
        increments: tuple[float, ...],
        units: tuple[float, ...] | None = None,
        position: int = -1,
        waiter: _Waiter | None = None,
        limits: tuple[Limit, ...] | None = None,
        cost: Cost = 0,
    ) -> None:
        self.ready_at = ready_at
        """When its call may go, on the limiter's clock."""
        self.delay = delay
        """How long it was told to wait when it was made."""
        self._limiter = limiter
        # The limits its tuples are of: a limit learned or lapsed since has another layout.
        self._limits = limiter.limits if limits is None else limits
        # Seconds each limit's schedule moved, at the rates of the time; None once cancelled or
        # settled, which is what makes both happen at most once.
        self._increments: tuple[float, ...] | None = increments
        self._units = units  # the same in each limit's units; None: as many as the seconds are now
        self._position = position  # the decision that charged it; -1: unknown, nothing comes back
        # Its place among the calls told to wait (see `debt_since`); None: it went at once.
        self._waiter = waiter
        self._cost = cost  # as it was asked for, by unit: what a settle compares unit by unit
        self.bound_by: Limit | None = None
        """The limit whose schedule set its go time when it waits; None when it goes at once,
        when a pause holds it, or when the limiter cannot tell (one on Redis)."""

    def __repr__(self) -> str:
        state = "done" if self._increments is None else "open"
        return f"Reservation(ready_at={self.ready_at!r}, delay={self.delay!r}, {state})"


class _Waiter:
    """A call told to wait: when it goes; its slack on each limit, how much later it goes than
    that limit alone would let it (another limit or a pause holds it longer); and how long it
    was held back in all, and told so (see `Limiter.debt_since`)."""

    __slots__ = ("go", "held", "slacks", "told")

    def __init__(self, go: float, slacks: list[float]) -> None:
        self.go = go
        self.slacks = slacks
        self.held = self.told = 0.0


class Limiter:
    """Several limits on one key, taken all or none, by reservation in arrival order.

    A number cost is charged to every limit; a mapping charges each limit the amount of its unit
    (a missing unit is 0, except that "tokens" defaults to input_tokens + output_tokens).
    A limit in debt (a settle above the estimate) holds back every request until it is repaid,
    even one that charges it nothing, and even one already waiting when the debt is charged:
    a provider charges an answer once it is complete, to everyone who has not gone yet, so a
    waiter the debt delays goes later than it was told (`debt_since` says how much); one that
    another limit holds back longer than the debt does goes when it was told. Only the drivers
    `acquire` and `aacquire` wait. With no limits at all, a limiter only pauses: a key without
    rate limits still honours a Retry-After, and may learn its provider's limits (see `clamp`).
    """

    __slots__ = (
        "_capacities",
        "_chains",
        "_clock",
        "_configured",
        "_decisions",
        "_periods",
        "_rate_factor",
        "_shares",
        "_simple_capacity",
        "_simple_interval",
        "_simple_tau",
        "_intervals",
        "_learned_at",
        "_learned_until",
        "_lapse_at",
        "_lock",
        "_min_capacity",
        "_monotonic",
        "_paused_until",
        "_tats",
        "_taus",
        "_tracked_until",
        "_units",
        "_waiters",
        "limits",
        "name",
    )

    def __init__(
        self, limits: Iterable[Limit], *, clock: Clock | None = None, name: str = ""
    ) -> None:
        self.limits = tuple(limits)
        """The limits in force: the configured ones, then any learned from the provider."""
        for limit in self.limits:
            if not isinstance(limit, Limit):
                raise ConfigError(f"limits must hold Limit objects, got {limit!r}")
        if len(set(self.limits)) != len(self.limits):
            raise ConfigError(f"limits must not repeat a limit, got {list(self.limits)!r}")
        self.name = name
        """The key it limits, for errors and events."""
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._monotonic: Callable[[], float] = self._clock.monotonic
        self._lock = threading.Lock()
        self._periods = tuple(limit.per_seconds / limit.amount for limit in self.limits)
        self._units = tuple(limit.unit for limit in self.limits)
        self._tats = [-math.inf] * len(self.limits)  # at or before now: the bucket starts full
        self._paused_until = -math.inf
        # The calls told to wait, in the order they go (cancelled ones too, which can only hold
        # the others back longer).
        self._waiters: deque[_Waiter] = deque()
        # The chains of each schedule (see `Reservation`), kept while a reservation may still
        # be settled, until `_tracked_until`; None otherwise. `_decisions` numbers the decisions.
        self._chains: list[Chains] | None = None
        self._tracked_until = -math.inf
        self._decisions = 0
        # Provider limits adopted by `clamp`: when each was last reported, and until when it holds.
        self._learned_at = [-math.inf] * len(self.limits)
        self._learned_until = [math.inf] * len(self.limits)
        self._lapse_at = math.inf  # the soonest of them
        self._configured = len(self.limits)  # limits past these were learned for a unit of none
        self._intervals = self._periods
        self._reshape_locked((1.0,) * len(self.limits), 1.0)

    # -- decisions -------------------------------------------------------------------------

    def try_acquire(self, cost: Cost = 1) -> bool:
        """Take `cost` now from every limit, or take nothing and return False. Never waits."""
        # The hot path, inlined: one limit and a plain number cost (see `_open_fast_path_locked`).
        if (type(cost) is int or type(cost) is float) and 0 <= cost <= self._simple_capacity:
            lock = self._lock
            lock.acquire()  # explicit, not `with`: measurably cheaper on this hot path
            try:
                now = self._monotonic()
                tats = self._tats
                tat = tats[0]
                if tat < now:
                    tat = now
                tat += cost * self._simple_interval
                if tat - now - self._simple_tau > _ROUNDING or now < self._paused_until:
                    return False
                tats[0] = tat
                return True
            finally:
                lock.release()
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            increments = self._increments(cost)
            with self._lock:
                if self.limits is limits:
                    if not increments:  # no limits: only a pause holds calls back
                        return self._monotonic() >= self._paused_until
                    return self._take_locked(increments, 0.0, reserving=False)[1] == 0.0

    def reserve(self, cost: Cost = 1, max_wait: float = math.inf) -> Reservation:
        """Commit `cost` on every limit if the wait for it is at most `max_wait`.

        Otherwise nothing changes and `RateLimited(retry_after=<that wait>)` is raised; a
        negative `max_wait` (a deadline already past) refuses even an immediate permit.
        Later reservations are never ready before earlier ones. A cost no limit can hold at
        once raises `CostTooLarge`.
        """
        if max_wait != max_wait:
            raise ValueError(f"max_wait must be a number of seconds, got {max_wait!r}")
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            units = self._amounts(cost)
            with self._lock:
                if self.limits is not limits:
                    continue
                increments = tuple(map(operator.mul, units, self._intervals))
                before = self._tats  # `_take_locked` puts a new list in place: this one stays
                now, wait, position = self._take_locked(increments, max_wait, reserving=True)
                waiting = 0.0 < wait <= max_wait
                bound = self._go_time(before, increments, now)[1] if waiting else -1
                waiter = self._waiters[-1] if waiting else None  # the place it just took
            break
        if wait > max_wait:
            raise self._refusal(wait)
        reservation = Reservation(
            self, now + wait, wait, increments, units, position, waiter, limits, cost
        )
        if bound >= 0:
            reservation.bound_by = limits[bound]
        return reservation

    def cancel(self, reservation: Reservation) -> None:
        """Give back what `reservation` charged (see `Reservation` for how much can come back);
        nothing if it was cancelled or settled."""
        self._finish(reservation, 0)

    def refund(self, cost: Cost = 1) -> None:
        """Give back `cost` taken by `try_acquire` for a request that was never sent, at once.

        A permit does not know its place in the schedule, so all of it comes back, as if no
        decision came after it: give it back before other calls may be granted. A permit held
        while others may be (a wait for something else) is a reservation, which `cancel` gives
        back exactly. The caller gives back each cost at most once.
        """
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            increments = self._increments(cost, name="refund", check_capacity=False)
            with self._lock:
                if self.limits is limits:
                    self._shift_locked([-increment for increment in increments])
                    return

    def settle(self, reservation: Reservation, actual: Cost) -> None:
        """Replace the reserved cost by the `actual` one: refund the excess as far as the calls
        since allow (see `Reservation`), or charge the debt.

        `actual` may exceed a limit's capacity (the estimate was too low). Costs by unit are
        compared unit by unit: a prompt shorter than estimated and an answer longer than
        reserved charge the answer's excess as a debt and give the prompt's back as far as the
        calls since allow, though both count on one "tokens" limit. Only the first
        settle or cancel of a reservation counts. A reservation settled more than
        `SETTLE_WITHIN` seconds after the limiter's latest one (and after every call waiting)
        gets nothing back.
        """
        self._finish(reservation, actual)

    def debt_since(self, reservation: Reservation) -> float:
        """Seconds the calls waiting were held back since `reservation` was made, or since it
        was last asked about: how much later than its `ready_at` its call goes, if it had not
        gone yet then.

        A debt is charged from now: the calls waiting then were told their go times before it
        existed, and going at them, they would find the provider's bucket short by the debt (a
        provider charges an answer when it ends, to everyone who has not gone yet). A provider
        that reports less than the schedule counts (`clamp`), or says wait (`pause`), tells of
        such a debt too. A debt or a report holds a call back as far as it delays that call or
        any call ahead of it, that is by less than itself when they all wait longer than the
        limit concerned needs (another limit or a pause holds them); a pause by its length.
        Each hold is counted once per reservation, so a driver that asks again after waiting
        it out goes on, even when its clock does not move.
        """
        if reservation._limiter is not self:
            raise ValueError(f"{reservation!r} was not made by {self!r}")
        waiter = reservation._waiter
        if waiter is None:
            return 0.0
        with self._lock:
            held = waiter.held - waiter.told
            waiter.told = waiter.held
        return held

    def wait_time(self, cost: Cost = 1) -> float:
        """Seconds until `cost` could be taken on every limit (0.0 if now); reserves nothing.

        A cost no limit can hold at once raises `CostTooLarge`."""
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            increments = self._increments(cost)
            with self._lock:
                if self.limits is limits:
                    wait = self._plan(increments, self._monotonic())[1]
                    return wait if wait > _ROUNDING else 0.0

    def pause(self, seconds: float) -> None:
        """Let nobody proceed before `seconds` from now (a server's Retry-After), on every limit.

        A longer pause already running is kept. The calls waiting when it begins are held back
        by its length (see `debt_since`), so that they keep their spacing after it: going all
        at its end, they would find a provider that has refilled only what the call it refused
        needs. Reservations made meanwhile are ready after them.
        """
        seconds = _amount(seconds, "seconds")
        with self._lock:
            now = self._monotonic()
            if now + seconds > self._paused_until:
                self._paused_until = now + seconds
            self._hold_waiting_locked(self._tats[:], (), now, seconds)

    def clamp(
        self,
        unit: str,
        remaining: float,
        limit: float | None = None,
        reset: float | None = None,
        per_seconds: float | None = None,
        *,
        learn: bool = False,
    ) -> None:
        """Hold the local bucket of `unit` to what the provider reports: `remaining` of `limit`
        (counted over `per_seconds`, when the provider's window is known), full again in `reset`
        seconds.

        A server that says less is left than this limiter thinks (other clients share the quota)
        is believed; one that says more is not, since calls in flight here are not in its count
        yet. A provider `limit` below the configured amount is adopted (its rate, and a capacity
        of at most that amount), never one above it, and it is learned, not kept: it lapses one
        window of the limit after the last report of it, or at the provider's `reset` if that
        is later (a reset tells when its bucket is full again, which can be a moment away), and
        the configured shape comes back. A `limit` below 1 could not admit a single unit: it is
        malformed and ignored. With nothing left, the next unit waits for the provider's refill.

        Of several limits of `unit`, the one counted over `per_seconds` is held (the one whose
        amount is nearest `limit` if several are). With no limit over that window, `remaining`
        still caps the limit of the nearest window (what is left of a day's quota is all that
        can go this hour or minute), and `limit` is never adopted: 1000 a day is no rate of any
        other window. With `per_seconds` unknown, the limit whose amount is nearest `limit` is
        held (the shortest window when `limit` is unknown too).

        With `learn`, a limiter with no limit of `unit` takes the provider's: `limit` per
        `per_seconds` (a minute when unknown, as OpenAI and Anthropic count), a learned limit
        that lapses as an adopted one does, and that each report reshapes to the provider's
        amount, higher or lower (see `learned_limit`). Its `remaining` counts the provider's
        window: what the bucket lacks is `limit` less `remaining`, whatever the learned burst.
        """
        if not remaining >= 0.0:
            return
        provider = limit if limit is not None and 1.0 <= limit < math.inf else None
        window = per_seconds if per_seconds is not None and 0.0 < per_seconds < math.inf else None
        index = self._held_limit(unit, provider, window)
        if index is None or index >= self._configured:  # no limit of `unit` is configured
            if provider is not None and (learn or index is not None):
                index = self._learn(learned_limit(unit, provider, window or MINUTE), reset)
            elif index is None:
                return
        elif window is not None and self.limits[index].per_seconds != window:
            provider = None  # counted over another window: it caps, it is never adopted
        elif provider is not None:
            self._adopt(index, provider, reset)
        self._raise_tat(index, self._clamp_seconds(index, remaining, provider, reset))

    @property
    def rate_factor(self) -> float:
        """The share of the configured rates in force (1.0 unless `scale_rates` cut it)."""
        return self._rate_factor

    def scale_rates(self, factor: float) -> None:
        """Refill every limit at `factor` (0 < factor <= 1) times its configured rate.

        Capacities stay, and so does what each bucket holds now; only the refill slows or
        recovers. What reservations made before give back is counted in units, at the new rate.
        """
        if not 0.0 < _number(factor) <= 1.0:
            raise ValueError(f"factor must be in (0, 1], got {factor!r}")
        with self._lock:
            if factor != self._rate_factor:
                self._reshape_locked(self._shares, factor)

    # -- drivers ---------------------------------------------------------------------------

    def acquire(self, cost: Cost = 1, timeout: float | None = None) -> Reservation:
        """Reserve `cost`, waiting at most `timeout` seconds (None: as long as needed), and sleep.

        Raises `RateLimited` at once if the wait would be longer (or `timeout` is negative). If
        the sleep is interrupted (KeyboardInterrupt, a signal...), the reservation is cancelled.
        """
        reservation = self.reserve(cost, _max_wait(timeout))
        if reservation.delay > 0.0:
            try:
                self._clock.sleep(reservation.delay)
            except BaseException:
                self.cancel(reservation)
                raise
        return reservation

    async def aacquire(self, cost: Cost = 1, timeout: float | None = None) -> Reservation:
        """`acquire` for asyncio: awaits instead of sleeping; cancellation gives the tokens back."""
        reservation = self.reserve(cost, _max_wait(timeout))
        if reservation.delay > 0.0:
            try:
                await self._clock.asleep(reservation.delay)
            except BaseException:
                self.cancel(reservation)
                raise
        return reservation

    # -- observation -----------------------------------------------------------------------

    @property
    def available(self) -> float:
        """Tokens that could be taken now from the first limit (never below 0; infinite with
        no limit)."""
        tokens = self._tokens()
        return max(0.0, tokens[0]) if tokens else math.inf

    def levels(self) -> dict[str, float]:
        """Tokens left on each limit, by label; negative while reservations wait or after debt."""
        return dict(zip(map(str, self.limits), self._tokens(), strict=True))

    @property
    def paused_for(self) -> float:
        """Seconds left of the current pause (0.0 when none)."""
        with self._lock:
            left = self._paused_until - self._monotonic()
        return left if left > 0.0 else 0.0

    def snapshot(self) -> dict[str, object]:
        """Tokens left per limit and the pause left, for logs, metrics and debugging."""
        return {"name": self.name, "levels": self.levels(), "paused_for": self.paused_for}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.limits)!r}, name={self.name!r})"

    # -- arithmetic shared by the decisions --------------------------------------------------

    def _amounts(
        self, cost: Cost, *, name: str = "cost", check_capacity: bool = True
    ) -> tuple[float, ...]:
        """Validate `cost` and turn it into the units it charges each limit."""
        if self._lapse_at != math.inf:
            with self._lock:
                self._forget_learned_locked(self._monotonic())
        elif (type(cost) is int or type(cost) is float) and 0 <= cost <= self._min_capacity:
            return (cost,) * len(self.limits)  # a plain number any limit can hold: all is said
        if type(cost) is int or type(cost) is float or not isinstance(cost, Mapping):
            amount = _amount(cost, name)
            amounts = (amount,) * len(self._intervals)
            too_big = check_capacity and amount > self._min_capacity
        else:
            by_unit = _by_unit(name, cost)
            amounts = tuple(by_unit[unit] for unit in self._units)
            too_big = check_capacity and any(map(operator.gt, amounts, self._capacities))
        if too_big and (refusal := self._too_large(cost, name, amounts)) is not None:
            raise refusal
        return amounts

    def _increments(
        self, cost: Cost, *, name: str = "cost", check_capacity: bool = True
    ) -> tuple[float, ...]:
        """Validate `cost` and turn it into the seconds it moves each limit's schedule by."""
        amounts = self._amounts(cost, name=name, check_capacity=check_capacity)
        return tuple(map(operator.mul, amounts, self._intervals))

    def _too_large(
        self, cost: Cost, name: str, amounts: tuple[float, ...]
    ) -> CostTooLarge | None:
        """The refusal of a cost beyond a limit's capacity: which limit, and whether it is the
        configured one (no wait helps) or one learned from the provider (until it lapses).
        None if a limit's shape changed meanwhile, so that the cost fits after all."""
        with self._lock:
            now = self._monotonic()
            pairs = zip(amounts, self._capacities, strict=False)  # the limits may have changed
            over = [i for i, (amount, capacity) in enumerate(pairs) if amount > capacity]
            if not over:
                return None
            index = over[0]
            share, learned_at = self._shares[index], self._learned_at[index]
            until, capacity = self._learned_until[index], self._capacities[index]
            limit, configured = self.limits[index], index < self._configured
        exceeds = f"{name} {cost!r} exceeds the capacity of limit"
        if share == 1.0 and configured:
            return CostTooLarge(
                f"{exceeds} {limit} and could never be granted",
                key=self.name or None,
                limit=str(limit),
            )
        amount = limit.amount * share
        burst = None if capacity == amount else capacity
        learned = Limit(amount, limit.per_seconds, limit.unit, burst)
        return CostTooLarge(
            f"{exceeds} {learned}, learned from the provider {now - learned_at:.1f}s ago "
            f"(configured: {limit if configured else 'none'}); no wait helps until it lapses",
            retry_after=until - now,
            key=self.name or None,
            limit=str(learned),
            learned=True,
        )

    def _reshape_locked(self, shares: tuple[float, ...], factor: float) -> None:
        """Take `shares` of each limit's configured amount (what the provider grants), refilled
        at `factor` of that rate, keeping what each bucket holds now (or owes)."""
        old = self._intervals
        self._shares = shares
        self._rate_factor = factor
        self._capacities = tuple(
            limit.capacity if share == 1.0 else min(limit.capacity, limit.amount * share)
            for limit, share in zip(self.limits, shares, strict=True)
        )
        self._intervals = tuple(
            period / (share * factor) for period, share in zip(self._periods, shares, strict=True)
        )
        self._taus = tuple(map(operator.mul, self._capacities, self._intervals))
        # Without limits a cost may be any finite amount: the fast lane of `_amounts` needs one.
        self._min_capacity = min(self._capacities, default=sys.float_info.max)
        self._simple_interval = self._intervals[0] if self.limits else 0.0
        self._simple_tau = self._taus[0] if self.limits else 0.0
        self._open_fast_path_locked()
        if any(tat > -math.inf for tat in self._tats):
            now = self._monotonic()
            ratios = list(map(operator.truediv, self._intervals, old))
            for waiter in self._waiters:  # a falling rate lets a call go later on the limit
                waiter.slacks = [
                    _slack_after(waiter.go, slack, now, ratio)
                    for slack, ratio in zip(waiter.slacks, ratios, strict=True)
                ]
            if self._chains is not None:  # a call still waiting keeps its time (see `Chains`)
                self._tats = [
                    chains.scale(now, ratio)
                    for chains, ratio in zip(self._chains, ratios, strict=True)
                ]
            else:  # no call waits (see `_take`): the schedule is what each bucket holds now
                self._tats = [
                    now + (tat - now) * ratio if tat > now else tat
                    for tat, ratio in zip(self._tats, ratios, strict=True)
                ]

    def _open_fast_path_locked(self) -> None:
        """One limit and a plain number cost take `try_acquire`'s fast path, unless the limiter
        keeps chains or a learned limit may lapse: only the general path looks after those."""
        plain = (
            len(self.limits) == 1
            and self._chains is None
            and self._shares == (1.0,)
            and self._lapse_at == math.inf
        )
        self._simple_capacity = self._capacities[0] if plain else -1.0

    def _held_limit(
        self, unit: str, provider: float | None, window: float | None
    ) -> int | None:
        """The index of the limit of `unit` that a provider's report of `provider` units per
        `window` holds (see `clamp`); None when there is no limit of `unit`."""
        indexes = [index for index, own in enumerate(self._units) if own == unit]
        if not indexes:
            return None
        limits = self.limits
        if window is not None:
            same = [index for index in indexes if limits[index].per_seconds == window]
            if not same:
                return min(indexes, key=lambda i: abs(math.log(limits[i].per_seconds / window)))
            indexes = same
        if provider is None:
            return min(indexes, key=lambda i: limits[i].per_seconds)
        return min(indexes, key=lambda i: abs(math.log(limits[i].amount / provider)))

    def _adopt(self, index: int, provider: float, reset: float | None) -> None:
        """Let limit `index` take a provider's lower amount `provider` for a while, or end the
        one it learned when the provider grants the configured amount or more (see `clamp`)."""
        limit = self.limits[index]
        share = min(1.0, provider / limit.amount)
        lasting = limit.per_seconds
        if reset is not None and lasting < reset < math.inf:
            lasting = reset
        with self._lock:
            now = self._monotonic()
            learned = share < 1.0
            self._learned_at[index] = now if learned else -math.inf
            self._learned_until[index] = now + lasting if learned else math.inf
            self._lapse_at = min(self._learned_until)
            if share != self._shares[index]:
                shares = list(self._shares)
                shares[index] = share
                self._reshape_locked(tuple(shares), self._rate_factor)

    def _learn(self, limit: Limit, reset: float | None) -> int:
        """Take `limit`, learned for a unit no limit is configured for, in place of the one
        learned for it before (if any), until it lapses as an adopted one does (see `_adopt`);
        its index."""
        lasting = limit.per_seconds
        if reset is not None and lasting < reset < math.inf:
            lasting = reset
        with self._lock:
            now = self._monotonic()
            self._forget_learned_locked(now)
            limits = self.limits
            sources: list[int | None] = list(range(len(limits)))
            index = next(
                (i for i in range(self._configured, len(limits)) if limits[i].unit == limit.unit),
                len(limits),
            )
            if index == len(limits):
                sources.append(None)
            if index == len(limits) or limits[index] != limit:
                self._relayout_locked((*limits[:index], limit, *limits[index + 1 :]), sources)
            self._learned_at[index] = now
            self._learned_until[index] = now + lasting
            self._lapse_at = min(self._learned_until)
            self._open_fast_path_locked()
        return index

    def _forget_learned_locked(self, now: float) -> None:
        """Give every learned limit that has lapsed by `now` its configured shape back, and let
        go of those learned for a unit none is configured for, once no call waits on them."""
        if now < self._lapse_at:
            return
        until, tats, taus = self._learned_until, self._tats, self._taus
        for index in range(self._configured, len(until)):
            if until[index] <= now < tats[index] - taus[index]:
                until[index] = tats[index] - taus[index]  # when the last call waiting goes
        lapsed = [until <= now for until in self._learned_until]
        for index, gone in enumerate(lapsed):
            if gone:
                self._learned_at[index], self._learned_until[index] = -math.inf, math.inf
        self._lapse_at = min(self._learned_until, default=math.inf)
        configured = self._configured
        shares = tuple(
            1.0 if gone else share for gone, share in zip(lapsed, self._shares, strict=True)
        )
        self._reshape_locked(shares, self._rate_factor)
        if any(lapsed[configured:]):
            kept = [i for i, gone in enumerate(lapsed) if i < configured or not gone]
            self._relayout_locked(tuple(self.limits[i] for i in kept), list(kept))

    def _relayout_locked(self, limits: tuple[Limit, ...], sources: list[int | None]) -> None:
        """Take `limits`, each keeping the state of the limit at its index in `sources` (its
        schedule rescaled to its new rate), or starting full (None): a limit learned, reshaped
        or let go. Reservations made before keep the limits they were made with (see
        `Reservation._limits`)."""

        def carried(values: Iterable[float], new: float) -> list[float]:
            old = list(values)
            return [new if source is None else old[source] for source in sources]

        self.limits = limits
        self._periods = tuple(limit.per_seconds / limit.amount for limit in limits)
        self._units = tuple(limit.unit for limit in limits)
        self._tats = carried(self._tats, -math.inf)
        for waiter in self._waiters:  # none waits on a limit new to it
            waiter.slacks = carried(waiter.slacks, math.inf)
        self._learned_at = carried(self._learned_at, -math.inf)
        self._learned_until = carried(self._learned_until, math.inf)
        self._lapse_at = min(self._learned_until, default=math.inf)
        if self._chains is not None:
            self._decisions += 1
            chains = self._chains
            self._chains = [
                Chains(self._decisions, -math.inf) if source is None else chains[source]
                for source in sources
            ]
        # a new limit's interval is its own (nothing to rescale); a reshaped one's is the old
        new = [period / self._rate_factor for period in self._periods]
        self._intervals = tuple(
            new[i] if source is None else self._intervals[source]
            for i, source in enumerate(sources)
        )
        self._reshape_locked(tuple(carried(self._shares, 1.0)), self._rate_factor)
        self._relaid_locked()

    def _relaid_locked(self) -> None:
        """Told, under the lock, that the limits changed: a limiter that encodes them ahead
        (one on Redis) does it anew."""

    def _clamp_seconds(
        self, index: int, remaining: float, provider: float | None, reset: float | None
    ) -> float:
        """How far past now the schedule of limit `index` must reach for it to hold at most
        `remaining`, and, with nothing left, for its next unit to wait for the provider's
        refill: a bucket full again in `reset` seconds holds `provider` less what refills by
        then, which is below nothing when it is in debt (a `remaining` never says less than 0,
        a reset does). Without the provider's limit, the next unit waits for the reset. A reset
        of no finite length is ignored."""
        with self._lock:
            interval = self._intervals[index]
            capacity = self._capacities[index]
            tau = self._taus[index]
        lacks = capacity - min(remaining, capacity)
        # with nothing left, when the provider's bucket is full again (None: not said)
        full_in = None
        if remaining < 1.0 and reset is not None and 0.0 < reset < math.inf:
            full_in = reset
        if index >= self._configured and provider is not None:
            # learned, in slices of the provider's window, which is what `remaining` counts: a
            # slice lacks what the window does; a window short of more than a slice (which no
            # provider enforcing slices says) leaves the bucket empty, not in debt. Empty, it
            # is full again when the provider's bucket is: the provider's refill, not the
            # learned one, which keeps `HEADROOM` from its rate.
            lacks = min(provider - min(remaining, provider), capacity)
            if full_in is not None:
                interval = self.limits[index].per_seconds / provider
        seconds = lacks * interval
        if full_in is not None:
            if provider is None:
                seconds = max(seconds, tau - interval + full_in)
            else:
                held = provider * (1.0 - full_in / self.limits[index].per_seconds)
                seconds = max(seconds, (capacity - min(held, remaining)) * interval)
        return seconds

    def _raise_tat(self, index: int, seconds: float) -> None:
        """Let limit `index` grant nothing beyond its schedule reaching `seconds` from now; no
        refund of an earlier reservation brings it back. The calls waiting then are held back as
        far as that delays them (see `debt_since`): the provider is that much short."""
        with self._lock:
            now = self._monotonic()
            tats = self._tats[:]
            moved = [0.0] * len(tats)
            moved[index] = self._raise_locked(index, now + seconds, now)
            self._hold_waiting_locked(tats, moved, now)

    def _raise_locked(self, index: int, floor: float, now: float) -> float:
        """`_raise_tat` to `floor`, a time, under the lock: how much later than before the limit
        lets any call go (0.0 if it does not move)."""
        tat = self._tats[index]
        if floor <= tat:
            return 0.0
        self._tats[index] = floor
        if self._chains is not None:
            self._decisions += 1
            self._chains[index].floor(self._decisions, floor)
        return floor - (tat if tat > now else now)

    def _hold_waiting_locked(
        self, tats: Sequence[float], moved: Sequence[float], now: float, by: float = 0.0
    ) -> None:
        """Hold the calls waiting back after a debt or a provider's floor moved each limit's
        schedule by `moved` seconds (each call may go that much later on it), or a pause `by`
        its length, `tats` being the schedules before.

        A call goes once every limit and the pause let it: a limit moved by m delays a call
        whose slack on it is s (how much later it goes than that limit alone would let it) by
        m - s, if that is positive. Each call waiting goes as much later as the most delayed of
        itself and the calls ahead of it, so that none goes earlier than before relative to one
        ahead of it: each kept its place on every limit behind it. And each schedule that was
        ahead of now moves on by as much as the last call, to count them all when they go:
        otherwise calls made later, going by a limit that still counts them earlier, would go
        alongside them, more at once than a provider's bucket holds. A limit that moved with
        no call waiting on it delays nobody: a debt while other limits, or a pause, hold every
        call longer than it needs, holds none back.
        """
        held = by
        waiters = self._waiting_locked(now)
        for waiter in waiters:
            slacks = waiter.slacks
            for index, seconds in enumerate(moved):
                if seconds > 0.0 and seconds - slacks[index] > held:
                    held = seconds - slacks[index]
            waiter.go += held
            waiter.held += held
            for index, seconds in enumerate(moved):
                if seconds > 0.0:
                    slacks[index] += held - seconds
        if waiters and held > 0.0:
            for index, tat in enumerate(tats):
                if tat > now:
                    self._raise_locked(index, tat + held, now)

    def _tokens(self) -> list[float]:
        with self._lock:
            now = self._monotonic()
            self._forget_learned_locked(now)
            tats = tuple(self._tats)
            capacities, intervals = self._capacities, self._intervals
        return [
            capacity - (max(tat, now) - now) / interval
            for capacity, interval, tat in zip(capacities, intervals, tats, strict=True)
        ]

    def _commit(self, increments: tuple[float, ...], max_wait: float) -> tuple[float, float]:
        """Take `increments` if the wait for them is at most `max_wait`: (now, wait).

        `wait` is 0.0 for a permit available now; nothing is taken when it exceeds `max_wait`.
        """
        now, wait, _ = self._take(increments, max_wait)
        return now, wait

    def _take(
        self, increments: tuple[float, ...], max_wait: float, *, reserving: bool = False
    ) -> tuple[float, float, int]:
        """`_commit`, and the number of the decision that took them (-1 when none did). A
        reservation keeps the chains of every schedule for `SETTLE_WITHIN` seconds more, or
        until its call goes if that is later."""
        with self._lock:
            return self._take_locked(increments, max_wait, reserving=reserving)

    def _take_locked(
        self, increments: tuple[float, ...], max_wait: float, *, reserving: bool
    ) -> tuple[float, float, int]:
        """`_take`, under the lock."""
        now = self._monotonic()
        chains = self._chains
        if chains is not None and now >= self._tracked_until:
            chains = self._chains = None  # no reservation left that could be given back
            self._open_fast_path_locked()
        tats, wait = self._plan(increments, now)
        ready = now + wait  # when its call goes: every limit is charged from then
        if wait <= _ROUNDING:
            wait = 0.0
        if wait > max_wait:
            return now, wait, -1
        if reserving:  # kept while it may be settled, and while its call waits
            if wait > 0.0:
                self._wait_locked(increments, ready, now)
            until = now + (wait if wait > SETTLE_WITHIN else SETTLE_WITHIN)
            if until > self._tracked_until:
                self._tracked_until = until
            if chains is None:
                self._decisions += 1
                chains = self._chains = [Chains(self._decisions, tat) for tat in self._tats]
                self._open_fast_path_locked()
        position = self._decisions = self._decisions + 1
        if chains is not None:
            for index, limit_chains in enumerate(chains):
                tats[index] = limit_chains.charge(position, now, increments[index], ready)
        self._tats = tats
        return now, wait, position

    def _wait_locked(self, increments: tuple[float, ...], ready: float, now: float) -> None:
        """A call taking `increments` from the schedules in force is told to wait until `ready`:
        join the waiters (see `_hold_waiting_locked`), the ones gone leaving."""
        tats, taus = self._tats, self._taus
        slacks = [
            ready - (tats[index] if tats[index] > now else now) - increment + taus[index]
            for index, increment in enumerate(increments)
        ]
        self._waiting_locked(now).append(_Waiter(ready, slacks))

    def _waiting_locked(self, now: float) -> deque[_Waiter]:
        """The calls told to wait that have not gone by `now`, in the order they go."""
        waiters = self._waiters
        while waiters and waiters[0].go <= now:
            waiters.popleft()
        return waiters

    def _plan(self, increments: tuple[float, ...], now: float) -> tuple[list[float], float]:
        """The limits' next `tat`s if `increments` were taken now, each charged from when the
        call may go (see the module's docstring), and the wait (>= 0) until then."""
        tats = self._tats[:]
        ready = self._go_time(tats, increments, now)[0]
        for index, increment in enumerate(increments):
            tat = tats[index]
            tats[index] = (tat if tat > ready else ready) + increment
        return tats, ready - now

    def _go_time(
        self, tats: list[float], increments: tuple[float, ...], now: float
    ) -> tuple[float, int]:
        """When a call taking `increments` at `now` from the schedules `tats` may go, and the
        index of the limit that sets that time (-1: none holds it past now or the pause)."""
        taus = self._taus
        ready = self._paused_until if self._paused_until > now else now
        bound = -1
        for index, increment in enumerate(increments):  # indexes: cheaper than zip or a listcomp
            tat = tats[index]
            start = (tat if tat > now else now) + increment - taus[index]
            if start > ready:
                ready = start
                bound = index
        return ready, bound

    def _finish(self, reservation: Reservation, actual: Cost, scale: float = 1.0) -> None:
        """Settle `reservation` once at the `actual` cost (its seconds at the rates in force
        now, times `scale`): give back what it over-charged as far as its chains allow, charge
        the rest as a new decision. A limit learned since it was made is left alone."""
        if reservation._limiter is not self:
            raise ValueError(f"{reservation!r} was not made by {self!r}")
        gained = _gained(reservation._cost, actual)
        while True:  # again if a limit was learned or lapsed meanwhile
            limits = self.limits
            actual_seconds = self._increments(actual, name="actual", check_capacity=False)
            gains = None
            if gained is not None:
                gains = [s * scale for s in self._increments(gained, check_capacity=False)]
            with self._lock:
                if self.limits is limits:
                    self._finish_locked(reservation, [s * scale for s in actual_seconds], gains)
                    return

    def _finish_locked(
        self, reservation: Reservation, actual: list[float], gains: list[float] | None = None
    ) -> None:
        """`_finish`, under the lock, `actual` in seconds of the limits in force; `gains`, the
        seconds of the units that cost more than reserved, when others cost less (see
        `_gained`): charged as a debt, while what the others over-charged comes back as far
        as the chains allow. None: each limit's net change is one or the other."""
        reserved: Sequence[float] | None = reservation._increments
        if reserved is None:
            return
        reservation._increments = None
        intervals, limits = self._intervals, self.limits
        units: Sequence[float] | None = reservation._units
        if reservation._limits is not limits:  # NaN: a limit it was not charged to
            nothing = (math.nan,) * len(limits)
            reserved = _carried(reserved, reservation._limits, limits, nothing)
            if units is not None:
                units = _carried(units, reservation._limits, limits, nothing)
        if units is None:
            units = tuple(map(operator.truediv, reserved, intervals))
        chains, position = self._chains, reservation._position
        debts = []
        done = zip(units, actual, intervals, strict=True)
        for index, (unit, seconds, interval) in enumerate(done):
            change = seconds - unit * interval  # NaN on a limit it was not charged to: none
            gain = change if gains is None or change != change else gains[index]
            debts.append(gain if gain > 0.0 else 0.0)
            given_back = debts[-1] - change  # NaN on a limit it was not charged to
            if given_back > 0.0 and chains is not None and position >= 0:
                self._tats[index] = chains[index].refund(position, given_back, seconds == 0.0)
        if any(debts):
            tats = self._tats[:]
            self._shift_locked(debts)
            self._hold_waiting_locked(tats, debts, self._monotonic())

    def _shift_locked(self, changes: Iterable[float]) -> None:
        """Move each limit's schedule by a change in seconds: on from now to charge a debt (a
        new decision), back to give back a permit (as the latest decision: see `refund`)."""
        now = self._monotonic()
        tats, chains = self._tats, self._chains
        self._decisions += 1
        for index, change in enumerate(changes):
            if chains is not None and change > 0.0:
                tats[index] = chains[index].charge(self._decisions, now, change, now)
            elif chains is not None and change < 0.0:
                tats[index] = chains[index].refund(self._decisions, -change)
            elif change > 0.0:
                tats[index] = max(tats[index], now) + change
            else:
                tats[index] += change  # max(tat, now) keeps the level within capacity

    def _refusal(self, wait: float) -> RateLimited:
        limits = ", ".join(map(str, self.limits))
        return RateLimited(
            f"no rate permit within the allowed wait ({limits})", retry_after=wait, key=self.name
        )


def _slack_after(go: float, slack: float, now: float, ratio: float) -> float:
    """The slack on a limit of a call that goes at `go` once what lies ahead of now on the
    limit's schedule is stretched by `ratio` (see `Chains.scale`): a falling rate (ratio > 1)
    moves its start there later, the call keeping its go time; a rising one is not counted."""
    start = go - slack
    if ratio <= 1.0 or start <= now:
        return slack
    return max(0.0, go - now - (start - now) * ratio)


def _carried(
    values: Iterable[float],
    made_with: tuple[Limit, ...],
    limits: tuple[Limit, ...],
    missing: Iterable[float],
) -> list[float]:
    """`values`, one for each of the limits `made_with`, as one for each of `limits`: the
    value of the same limit, or, for one `made_with` lacks, that of `missing`."""
    by_limit = dict(zip(made_with, values, strict=True))
    return [by_limit.get(limit, other) for limit, other in zip(limits, missing, strict=True)]


def _gained(reserved: Cost, actual: Cost) -> dict[str, float] | None:
    """The units `actual` charges more of than `reserved` did, and by how much, when some other
    unit costs less (a prompt shorter than estimated, an answer longer than reserved); None
    otherwise, or when either is a number.

    A provider charged the prompt's real size when it admitted the call: an estimate's excess
    was in the schedule alone, and comes back only as far as no call since could have used it
    (see `Reservation`). The answer is a debt charged now, in full. Netted against the excess,
    the debt would give the excess back past that bound: more than a provider's bucket, which
    may have filled up and lost refill meanwhile, holds."""
    if not isinstance(reserved, Mapping) or not isinstance(actual, Mapping):
        return None
    before, after = _by_unit("cost", reserved), _by_unit("actual", actual)
    changes = {unit: after[unit] - before[unit] for unit in UNITS}
    if "tokens" not in reserved and "tokens" not in actual:
        del changes["tokens"]  # input + output: counted from their own changes
    if min(changes.values()) >= 0.0 or max(changes.values()) <= 0.0:
        return None  # every unit moved one way: the net change of each limit says it all
    return {unit: change for unit, change in changes.items() if change > 0.0}


def _by_unit(name: str, cost: Mapping[str, float]) -> dict[str, float]:
    """Amounts for every unit from a mapping cost; "tokens" defaults to input + output."""
    by_unit = dict.fromkeys(UNITS, 0.0)
    for unit, value in cost.items():
        if unit not in by_unit:
            raise ValueError(f"{name} has unknown unit {unit!r}; units are {UNITS}")
        by_unit[unit] = _amount(value, name, unit)
    if "tokens" not in cost:
        by_unit["tokens"] = by_unit["input_tokens"] + by_unit["output_tokens"]
    return by_unit


def _max_wait(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if timeout != timeout:
        raise ValueError(f"timeout must be a number of seconds or None, got {timeout!r}")
    return timeout


class TokenBucket(Limiter):
    """The seed's bucket: `capacity` tokens, refilled at `refill_rate` tokens per second."""

    __slots__ = ()

    def __init__(
        self,
        capacity: float,
        refill_rate: float,
        *,
        clock: Clock | None = None,
        name: str = "",
    ) -> None:
        _check_positive("capacity", capacity)
        _check_positive("refill_rate", refill_rate)
        super().__init__([Limit(refill_rate, 1.0, burst=capacity)], clock=clock, name=name)

    @property
    def capacity(self) -> float:
        """The seed's name for the burst size."""
        return self.limits[0].capacity

    @property
    def refill_rate(self) -> float:
        """The seed's name for the rate, in tokens per second."""
        return self.limits[0].rate

    def __repr__(self) -> str:
        return (
            f"TokenBucket(capacity={self.capacity!r}, refill_rate={self.refill_rate!r}, "
            f"name={self.name!r})"
        )


class BucketView:
    """The seed's `TokenBucket` API over the requests limit of any limiter (the one of the
    shortest window, such as a model key's requests per minute), for `Shield.bucket`.

    It keeps no state: taking from it takes requests from the limiter, where every limit (and a
    pause) must let them go. With no requests limit, requests are unlimited here.
    """

    __slots__ = ("limiter", "limit", "_index")

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        """The limiter it views."""
        limits = limiter.limits
        requests = [index for index, limit in enumerate(limits) if limit.unit == "requests"]
        self._index = min(requests, key=lambda index: limits[index].per_seconds, default=None)
        self.limit = None if self._index is None else limits[self._index]
        """The limit this is a view of, or None."""

    @property
    def capacity(self) -> float:
        """The configured burst size of the requests limit."""
        return math.inf if self.limit is None else self.limit.capacity

    @property
    def refill_rate(self) -> float:
        """The configured rate of the requests limit, in requests per second."""
        return math.inf if self.limit is None else self.limit.rate

    @property
    def available(self) -> float:
        """Requests the limit holds now (never below 0)."""
        if self._index is None:
            return math.inf
        return max(0.0, self.limiter._tokens()[self._index])

    def try_acquire(self, cost: float = 1) -> bool:
        """Take `cost` requests now, or take nothing and return False. Never waits."""
        return self.limiter.try_acquire({"requests": cost})

    def wait_time(self, cost: float = 1) -> float:
        """Seconds until `cost` requests could be taken (0.0 if now); reserves nothing."""
        return self.limiter.wait_time({"requests": cost})

    def __repr__(self) -> str:
        return f"BucketView({self.limit}, name={self.limiter.name!r})"
