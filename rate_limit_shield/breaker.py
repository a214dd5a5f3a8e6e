"""The circuit breaker: stop calling a service that keeps failing, and probe it back carefully.

A breaker opens on N consecutive failures and/or when the failure rate (or the slow-call rate)
over a sliding window of calls or seconds reaches a threshold once `min_calls` calls are in it.
Open, it rejects at once with `CircuitOpen(retry_after=...)`; after the recovery timeout it turns
half-open (lazily, when next asked) and lets exactly `half_open_max_calls` probes through at once.
When that many probes have succeeded it closes; any failed (or slow) probe re-opens it, for twice
as long each time when `max_recovery_timeout` caps a growing open time.

Permits and generations: every state change starts a new generation, and a permit is the number
of the generation that issued it. A result is counted only if its permit belongs to the current
generation: a late result (a slow call begun while closed that ends after the breaker opened,
or a call begun before `reset()`) is dropped, so it can neither close a half-open breaker nor be
counted twice. In the half-open state every current permit is a probe holding a slot.

Probes outlive their round: when one probe fails and the breaker re-opens, the others of that
round are still at the recovering service, so each keeps its slot until it ends, and a later
round admits only the slots left: at no moment are more than `half_open_max_calls` probes in
flight. A late probe's success is stale (it was sent before the last failure proved the service
not yet recovered): it frees its slot and counts for nothing. Its failure (or slowness), ending
in a later half-open round, is a call to the service that failed during recovery: it re-opens
that round, as a current probe's would; while the breaker is open it only frees the slot.
Closing (after enough probes succeeded, `reset()` or `disable()`) ends the episode and forgets
the probes still in flight; `force_open()` keeps counting them until `reset()`.

A clock stepping back never stretches an open time: when the time left is longer than any
opening lasts (after freezegun's `move_to` into the past, or leaving a `freeze_time` block whose
monotonic time was decades ahead), the opening ends one open time from now instead.

The breaker never sleeps and never holds its lock while the user's function runs: the pipeline
calls `acquire`, runs the function, then `record` (or `release` if the call never completed).

Every transition is a BREAKER event saying why (the rule that opened it, a failed probe, the
probes that closed it, a manual change): logged on `rate_limit_shield.breaker` (an opening at
WARNING) and told to `on_event`, which a model key sets to its registry's listeners.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable
from typing import NamedTuple, NewType

from .clock import SYSTEM_CLOCK, Clock
from .errors import CircuitOpen
from .events import BREAKER, Event, heard, logger, report
from .events import Listener as EventListener
from .outcome import Outcome

__all__ = ["State", "Permit", "CircuitBreaker"]

Permit = NewType("Permit", int)
"""What `acquire` hands out and `record` / `release` take back: the issuing generation."""

_NOT_CLOSED = Permit(-1)
_SUCCESS = Outcome.SUCCESS
_FAILURE = Outcome.FAILURE
_FAILED = 1  # flag bits of one call in a window
_SLOW = 2
_DEFAULT_WINDOW = 20
_MIN_BUCKETS = 10  # a time window has between these many buckets: fine enough to age calls
_MAX_BUCKETS = 120  # out smoothly, small enough to stay O(1) in memory
_PROBES_BUSY_RETRY_AFTER = 1.0  # hint when every probe slot is taken (capped by recovery_timeout)


class State(str, enum.Enum):
    """A breaker's state; each is also its string ("closed", "open", "half_open")."""

    CLOSED = "closed"
    """Calls go through; failures are counted."""
    OPEN = "open"
    """Calls are refused with `CircuitOpen` until the recovery timeout has passed."""
    HALF_OPEN = "half_open"
    """A few probe calls go through; their outcome closes the breaker or opens it again."""


Listener = Callable[[State, State], None]


class Change(NamedTuple):
    """A transition to report once the lock is released: from, to, why, and for an opening
    how long it lasts (None: until `reset()`)."""

    old: State
    new: State
    why: str
    lasts: float | None = None

_CLOSED = State.CLOSED
_OPEN = State.OPEN
_HALF_OPEN = State.HALF_OPEN


class _CountWindow:
    """The last `size` calls, as a ring of flag bytes with running totals."""

    __slots__ = ("_pos", "_ring", "_size", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._ring = bytearray(size)
        self._pos = 0
        self.calls = self.failures = self.slow = 0

    def add(self, flags: int) -> None:
        ring = self._ring
        pos = self._pos
        failures = self.failures + (flags & _FAILED)
        slow = self.slow + (flags >> 1)
        if self.calls == self._size:
            evicted = ring[pos]
            failures -= evicted & _FAILED
            slow -= evicted >> 1
        else:
            self.calls += 1
        ring[pos] = flags
        self.failures = failures
        self.slow = slow
        self._pos = (pos + 1) % self._size

    def refresh(self) -> None:
        """Nothing ages out of a count window."""

    def clear(self) -> None:
        self._ring = bytearray(self._size)
        self._pos = self.calls = self.failures = self.slow = 0


class _TimeWindow:
    """Calls of the last `seconds`, in a ring of equal time buckets with running totals.

    The window is the current bucket and the `size - 1` before it, so a call ages out between
    `seconds * (size - 1) / size` and `seconds` after it was recorded.
    """

    __slots__ = (
        "_bucket_calls", "_bucket_failures", "_bucket_slow", "_clock", "_head", "_size",
        "_width", "calls", "failures", "slow",
    )  # fmt: skip

    def __init__(self, seconds: float, clock: Clock) -> None:
        self._size = min(max(math.ceil(seconds), _MIN_BUCKETS), _MAX_BUCKETS)
        self._width = seconds / self._size
        self._clock = clock
        self.clear()

    def clear(self) -> None:
        size = self._size
        self._bucket_calls = [0] * size
        self._bucket_failures = [0] * size
        self._bucket_slow = [0] * size
        self._head = 0  # absolute number of the newest bucket
        self.calls = self.failures = self.slow = 0

    def refresh(self) -> None:
        """Drop the buckets that have aged out by now."""
        newest = int(self._clock.monotonic() // self._width)
        head = self._head
        if newest <= head:  # same bucket (or a clock that stepped back: keep the newest)
            return
        size = self._size
        if newest - head >= size:
            self.clear()
        else:
            calls, failures, slow = self._bucket_calls, self._bucket_failures, self._bucket_slow
            for number in range(head + 1, newest + 1):
                slot = number % size
                self.calls -= calls[slot]
                self.failures -= failures[slot]
                self.slow -= slow[slot]
                calls[slot] = failures[slot] = slow[slot] = 0
        self._head = newest

    @property
    def seconds(self) -> float:
        return self._width * self._size

    def add(self, flags: int) -> None:
        self.refresh()
        slot = self._head % self._size
        failed = flags & _FAILED
        slow = flags >> 1
        self._bucket_calls[slot] += 1
        self._bucket_failures[slot] += failed
        self._bucket_slow[slot] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a fraction in (0, 1], got {value!r}")


class CircuitBreaker:
    """Decides whether a call may go out, from the outcomes of the calls before it.

    `failure_threshold` consecutive failures open it (None: no such rule). `failure_rate` and
    `slow_call_rate` open it when reached over the window (`window` calls, 20 by default, or
    `window_seconds`) once it holds `min_calls` calls (capped at `window`). A call lasting at
    least `slow_call_duration` is slow; that alone implies `slow_call_rate=1.0`. The open time is
    `recovery_timeout`, doubled on each re-open from half-open up to `max_recovery_timeout`, and
    back to `recovery_timeout` once the breaker closes. A slow probe counts as a failed probe.
    """

    __slots__ = (
        "_busy_retry_after", "_clock", "_closed_gen", "_consecutive", "_disabled",
        "_failure_rate", "_gen", "_listeners", "_lock", "_max_recovery_timeout", "_min_calls",
        "_earlier_probes", "_open_timeout", "_open_until", "_probe_successes", "_probes_in_flight",
        "_slow_call_duration", "_slow_call_rate", "_state", "_window",
        "failure_threshold", "half_open_max_calls", "name", "on_event", "recovery_timeout",
    )  # fmt: skip

    def __init__(
        self,
        failure_threshold: int | None = 5,
        recovery_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        failure_rate: float | None = None,
        window: int | None = None,
        window_seconds: float | None = None,
        min_calls: int = 10,
        max_recovery_timeout: float | None = None,
        slow_call_duration: float | None = None,
        slow_call_rate: float | None = None,
        clock: Clock | None = None,
        name: str = "",
    ) -> None:
        if failure_threshold is not None:
            _check_count("failure_threshold", failure_threshold, 1)
        _check_seconds("recovery_timeout", recovery_timeout)
        _check_count("half_open_max_calls", half_open_max_calls, 1)
        if failure_rate is not None:
            _check_rate("failure_rate", failure_rate)
        if window is not None:
            _check_count("window", window, 1)
        if window_seconds is not None:
            _check_seconds("window_seconds", window_seconds)
            if window is not None:
                raise ValueError(
                    f"give window (calls) or window_seconds, not both: "
                    f"window={window!r}, window_seconds={window_seconds!r}"
                )
        _check_count("min_calls", min_calls, 1)
        if max_recovery_timeout is not None:
            _check_seconds("max_recovery_timeout", max_recovery_timeout)
            if max_recovery_timeout < recovery_timeout:
                raise ValueError(
                    f"max_recovery_timeout must be >= recovery_timeout={recovery_timeout!r}, "
                    f"got {max_recovery_timeout!r}"
                )
        if slow_call_duration is not None:
            _check_seconds("slow_call_duration", slow_call_duration)
            if slow_call_rate is None:
                slow_call_rate = 1.0
        if slow_call_rate is not None:
            _check_rate("slow_call_rate", slow_call_rate)
            if slow_call_duration is None:
                raise ValueError(
                    f"slow_call_rate={slow_call_rate!r} needs slow_call_duration (got None)"
                )
        if failure_threshold is None and failure_rate is None and slow_call_rate is None:
            raise ValueError(
                "a breaker that can never open: failure_threshold=None and neither "
                "failure_rate nor slow_call_duration is set"
            )

        self.name = name
        self.on_event: EventListener | None = None
        """Told of every transition as a BREAKER event (a model key's: its registry's listeners)."""
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        # Rules that are off become thresholds no call can reach, so the checks need no branch.
        self._failure_rate = failure_rate if failure_rate is not None else math.inf
        self._slow_call_rate = slow_call_rate if slow_call_rate is not None else math.inf
        self._slow_call_duration = (
            slow_call_duration if slow_call_duration is not None else math.inf
        )
        self._max_recovery_timeout = max_recovery_timeout
        self._busy_retry_after = min(_PROBES_BUSY_RETRY_AFTER, recovery_timeout)
        self._window: _CountWindow | _TimeWindow | None = None
        self._min_calls = min_calls
        if window_seconds is not None:
            self._window = _TimeWindow(window_seconds, self._clock)
        elif window is not None or failure_rate is not None or slow_call_rate is not None:
            size = window if window is not None else _DEFAULT_WINDOW
            self._window = _CountWindow(size)
            self._min_calls = min(min_calls, size)
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()
        self._state = _CLOSED
        self._gen = Permit(0)
        self._closed_gen = self._gen  # == _gen while closed, _NOT_CLOSED otherwise: one read
        self._consecutive = 0
        self._open_until = 0.0
        self._open_timeout = recovery_timeout
        self._probes_in_flight = 0  # of the current generation
        self._earlier_probes: dict[Permit, int] = {}  # generation -> its probes still in flight
        self._probe_successes = 0
        self._disabled = False

    # --- observation -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state; an open breaker whose recovery time has passed turns half-open."""
        if self._closed_gen >= 0:
            return _CLOSED
        with self._lock:
            change = self._half_open_if_due_locked(self._clock.monotonic())
            state = self._state
        if change is not None:
            self._notify(change)
        return state

    @property
    def slow_call_duration(self) -> float | None:
        """Seconds from which a call counts as slow; None when call durations do not matter."""
        duration = self._slow_call_duration
        return None if duration == math.inf else duration

    @property
    def retry_after(self) -> float | None:
        """Seconds until a call may go: 0.0 now, None when forced open (until `reset()`)."""
        if self._closed_gen >= 0:
            return 0.0
        with self._lock:
            now = self._clock.monotonic()
            change = self._half_open_if_due_locked(now)
            hint = self._retry_after_locked(now)
        if change is not None:
            self._notify(change)
        return hint

    def snapshot(self) -> dict[str, object]:
        """The state and counters at one instant, for logs, metrics and `state_snapshot()`."""
        with self._lock:
            now = self._clock.monotonic()
            change = self._half_open_if_due_locked(now)
            window = self._window
            if window is not None:
                window.refresh()
            snap: dict[str, object] = {
                "name": self.name,
                "state": self._state,
                "consecutive_failures": self._consecutive,
                "window_calls": window.calls if window is not None else None,
                "window_failures": window.failures if window is not None else None,
                "window_slow_calls": window.slow if window is not None else None,
                "probes_in_flight": self._probes_locked(),
                "probe_successes": self._probe_successes,
                "open_until": self._open_until if self._state is _OPEN else None,
                "retry_after": self._retry_after_locked(now),
                "open_timeout": self._open_timeout,
                "forced_open": self._open_until == math.inf,
                "disabled": self._disabled,
            }
        if change is not None:
            self._notify(change)
        return snap

    @property
    def listeners(self) -> tuple[Callable[[State, State], None], ...]:
        """What `add_listener` added, oldest first."""
        return self._listeners

    def add_listener(self, callback: Callable[[State, State], None]) -> None:
        """Call `callback(old, new)` on every state change, outside the lock; errors are logged."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        with self._lock:
            self._listeners = (*self._listeners, callback)

    # --- the pipeline's interface ------------------------------------------------------------

    def acquire(self) -> Permit:
        """A permit for one call, or `CircuitOpen` when open or every probe slot is taken."""
        permit = self._closed_gen
        if permit >= 0:
            return permit
        verdict = self._acquire_not_closed()
        if isinstance(verdict, CircuitOpen):
            raise verdict
        return verdict

    def record(self, permit: Permit, outcome: Outcome, duration: float = 0.0) -> None:
        """Count the outcome of the call `permit` allowed, which lasted `duration` seconds.

        SUCCESS and FAILURE count; THROTTLED and IGNORED count neither way (a probe's slot is
        still freed). A permit from an earlier generation is dropped.
        """
        if permit == self._closed_gen:
            if outcome is _SUCCESS:
                if self._window is None:
                    if self._consecutive:  # a success that reads 0 happened before any failure
                        self._reset_consecutive(permit)
                    return
                self._record_closed(permit, False, duration)
            elif outcome is _FAILURE:
                self._record_closed(permit, True, duration)
            return
        self._record_probe(permit, outcome, duration)

    def release(self, permit: Permit) -> None:
        """The call never completed (cancelled, timed out before sending): count nothing."""
        if permit == self._closed_gen:
            return
        with self._lock:
            self._end_probe_locked(permit)

    # --- the seed's interface ----------------------------------------------------------------

    def allow(self) -> bool:
        """True if a call may go now; in the half-open state this takes a probe slot."""
        return self._closed_gen >= 0 or not isinstance(self._acquire_not_closed(), CircuitOpen)

    def record_success(self) -> None:
        """The seed's way to report a call that `allow()` let through as a success."""
        self.record(self._current_permit(), _SUCCESS)

    def record_failure(self) -> None:
        """The seed's way to report a call that `allow()` let through as a failure."""
        self.record(self._current_permit(), _FAILURE)

    # --- manual control ----------------------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until `reset()` (no half-open probing)."""
        with self._lock:
            self._disabled = False
            change = self._open_locked(math.inf, "forced open")
        if change is not None:
            self._notify(change)

    def disable(self) -> None:
        """Let every call through and keep counting, but never open, until `reset()`."""
        with self._lock:
            change = self._close_locked("disabled") if self._state is not _CLOSED else None
            self._disabled = True
        if change is not None:
            self._notify(change)

    def reset(self) -> None:
        """Closed, counters and open time cleared, calls in flight forgotten, manual modes off."""
        with self._lock:
            self._disabled = False
            change = self._close_locked("reset")
        if change is not None:
            self._notify(change)

    # --- internals ---------------------------------------------------------------------------

    def _acquire_not_closed(self) -> Permit | CircuitOpen:
        with self._lock:
            now = self._clock.monotonic()
            change = self._half_open_if_due_locked(now)
            state = self._state
            verdict: Permit | CircuitOpen
            if state is _CLOSED:
                verdict = self._gen
            elif state is _HALF_OPEN and self._probes_locked() < self.half_open_max_calls:
                self._probes_in_flight += 1
                verdict = self._gen
            else:
                why = "is open" if state is _OPEN else "is half-open with every probe slot taken"
                verdict = CircuitOpen(
                    f"circuit breaker {why}",
                    retry_after=self._retry_after_locked(now),
                    key=self.name,
                )
        if change is not None:
            self._notify(change)
        return verdict

    def _record_closed(self, permit: Permit, failed: bool, duration: float) -> None:
        flags = _FAILED if failed else 0
        if duration >= self._slow_call_duration:
            flags |= _SLOW
        lock = self._lock
        lock.acquire()  # hot path: explicit acquire/release costs half of a `with` block
        try:
            if permit != self._closed_gen:
                return
            if failed:
                self._consecutive += 1
            else:
                self._consecutive = 0
            window = self._window
            if window is not None:
                window.add(flags)
            if self._disabled:
                return
            why = self._why_open_locked(failed, window)
            if why is None:
                return
            change = self._open_locked(self._clock.monotonic() + self._open_timeout, why)
        finally:
            lock.release()
        if change is not None:
            self._notify(change)

    def _reset_consecutive(self, permit: Permit) -> None:
        with self._lock:
            if permit == self._closed_gen:
                self._consecutive = 0

    def _why_open_locked(
        self, failed: bool, window: _CountWindow | _TimeWindow | None
    ) -> str | None:
        """Which rule opens the breaker now, in words; None while none does."""
        threshold = self.failure_threshold
        if failed and threshold is not None and self._consecutive >= threshold:
            return f"{self._consecutive} consecutive failures (threshold {threshold})"
        if window is None:
            return None
        calls = window.calls
        if calls < self._min_calls:
            return None
        over = (
            f"over the last {calls} calls"
            if isinstance(window, _CountWindow)
            else f"over {calls} calls of the last {window.seconds:g}s"
        )
        for rate, threshold_rate, what in (
            (window.failures / calls, self._failure_rate, "failure rate"),
            (window.slow / calls, self._slow_call_rate, "slow-call rate"),
        ):
            if rate >= threshold_rate:
                return f"{what} {rate:.0%} {over} (threshold {threshold_rate:.0%})"
        return None

    def _record_probe(self, permit: Permit, outcome: Outcome, duration: float) -> None:
        """Count a result outside the closed state: see the module's docstring for late probes."""
        failed = outcome is _FAILURE or (
            outcome is _SUCCESS and duration >= self._slow_call_duration
        )
        change = None
        with self._lock:
            current = permit == self._gen
            if not self._end_probe_locked(permit):
                return  # no probe: a late result of a closed period, or from before a close
            # a late probe can end after the open time, before anyone asked: half-open first
            half_opened = self._half_open_if_due_locked(self._clock.monotonic())
            if self._state is _HALF_OPEN:  # while (forced) open, freeing the slot was all
                if failed:
                    slow = outcome is _SUCCESS
                    change = self._reopen_locked("a probe was slow" if slow else "a probe failed")
                elif current and outcome is _SUCCESS:
                    self._probe_successes += 1
                    if self._probe_successes >= self.half_open_max_calls:
                        change = self._close_locked(f"{self._probe_successes} probe(s) succeeded")
        for happened in (half_opened, change):
            if happened is not None:
                self._notify(happened)

    def _current_permit(self) -> Permit:
        """The permit of the current generation, for the seed's permit-less record calls."""
        permit = self._closed_gen
        if permit >= 0:
            return permit
        with self._lock:
            change = self._half_open_if_due_locked(self._clock.monotonic())
            permit = self._gen
        if change is not None:
            self._notify(change)
        return permit

    def _probes_locked(self) -> int:
        """Probes in flight: this round's and those of earlier rounds that have not ended."""
        return self._probes_in_flight + sum(self._earlier_probes.values())

    def _end_probe_locked(self, permit: Permit) -> bool:
        """Free the slot of the probe `permit` let through, of this round or an earlier one.

        False when `permit` holds no slot: a call of a closed period, or one from before a close.
        """
        if permit == self._gen:
            if self._state is not _HALF_OPEN:
                return False
            if self._probes_in_flight:  # the seed's record calls need not have taken a slot
                self._probes_in_flight -= 1
            return True
        earlier = self._earlier_probes
        left = earlier.get(permit, 0)
        if left > 1:
            earlier[permit] = left - 1
        elif left:
            del earlier[permit]
        return left > 0

    def _retry_after_locked(self, now: float) -> float | None:
        state = self._state
        if state is _OPEN:
            return None if self._open_until == math.inf else self._open_until - now
        if state is _HALF_OPEN and self._probes_locked() >= self.half_open_max_calls:
            return self._busy_retry_after
        return 0.0

    def _half_open_if_due_locked(self, now: float) -> Change | None:
        if self._state is not _OPEN:
            return None
        until = self._open_until
        if now < until:
            longest = self._max_recovery_timeout or self.recovery_timeout
            if until - now > longest and until != math.inf:  # the clock stepped back
                self._open_until = now + self._open_timeout
            return None
        return self._move_locked(_HALF_OPEN, f"the open time of {self._open_timeout:g}s is over")

    def _reopen_locked(self, why: str) -> Change | None:
        ceiling = self._max_recovery_timeout
        if ceiling is not None:
            self._open_timeout = min(self._open_timeout * 2, ceiling)
        return self._open_locked(self._clock.monotonic() + self._open_timeout, why)

    def _open_locked(self, until: float, why: str) -> Change | None:
        self._open_until = until
        lasts = None if until == math.inf else until - self._clock.monotonic()
        return self._move_locked(_OPEN, why, lasts)

    def _close_locked(self, why: str) -> Change | None:
        self._consecutive = self._probes_in_flight = 0
        self._earlier_probes.clear()
        self._open_timeout = self.recovery_timeout
        if self._window is not None:
            self._window.clear()
        change = self._move_locked(_CLOSED, why)
        self._closed_gen = self._gen
        return change

    def _move_locked(self, new: State, why: str, lasts: float | None = None) -> Change | None:
        """Start a new generation in state `new`; the change to report, if the state changed.

        The probes of the ending generation still in flight keep their slots as earlier probes.
        """
        old = self._state
        if self._probes_in_flight:
            self._earlier_probes[self._gen] = self._probes_in_flight
            self._probes_in_flight = 0
        self._probe_successes = 0
        self._state = new
        self._gen = Permit(self._gen + 1)
        self._closed_gen = _NOT_CLOSED
        return None if old is new else Change(old, new, why, lasts)

    def _notify(self, change: Change) -> None:
        old, new = change.old, change.new
        self._report(change)
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                logger.exception(
                    "circuit breaker %r: state listener %r failed on %s -> %s",
                    self.name, listener, old.value, new.value,
                )  # fmt: skip

    def _report(self, change: Change) -> None:
        """Tell `on_event` and the log of a transition."""
        on_event = self.on_event
        if heard(on_event, BREAKER):
            transition = (change.old.value, change.new.value)
            report(on_event, Event(BREAKER, self.name, 0, change.lasts, reason=change.why,
                                   transition=transition))  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, state={self._state.value!r}, "
            f"failure_threshold={self.failure_threshold!r}, "
            f"recovery_timeout={self.recovery_timeout!r})"
        )
