"""One pipeline per call: retry, breaker, rate limit, bulkhead and classifier, in that order.

The primitives decide; `Shield.call` and `Shield.acall` are two thin driver loops over the same
decisions (`_admit`, `_after_success`, `_after_attempt`, `_abandon`), the one sleeping, the other
awaiting. Per attempt: breaker permission, rate permit (may wait, at most `max_wait` and never
past the deadline), bulkhead slot (held only while the call is in flight), the call, then the
verdict: breaker record, limiter settle or pause, events, and the retry decision.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Container,
    Coroutine,
    Iterator,
)
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from ._diagnostics import blocking, unreadable, unsettled
from ._redact import describe
from .breaker import CircuitBreaker, Permit
from .bulkhead import Bulkhead
from .clock import SYSTEM_CLOCK, Clock
from .errors import CircuitOpen, RateLimited, ShieldError, add_note
from .events import (
    GAVE_UP,
    REJECTED,
    RETRY,
    SUCCEEDED,
    SUCCEEDED_LOG,
    THROTTLED,
    UNSETTLED,
    WAITED,
    Event,
    Listener,
    Listeners,
    heard,
    report,
)
from .limiter import BucketView, Cost, Limiter, Reservation, TokenBucket
from .llm.classify import headers_of
from .llm.headers import RateLimitInfo
from .llm.tokens import StreamTally
from .outcome import SUCCESS, Classifier, DefaultClassifier, Outcome, Verdict
from .retry import RetryBudget, RetryPolicy
from .stream import (
    ASYNC,
    END,
    KINDS,
    SYNC,
    GuardedAsyncStream,
    GuardedStream,
    afirst_item,
    first_item,
    kind_of,
)

if TYPE_CHECKING:
    from .llm.pacing import Guide

__all__ = ["Shield"]

T = TypeVar("T")
P = ParamSpec("P")

_SUCCESS = Outcome.SUCCESS
_IGNORED = Outcome.IGNORED
_THROTTLED = Outcome.THROTTLED
_FAILURE = Outcome.FAILURE
_ONE_REQUEST: Cost = {"requests": 1}
_PLAIN: tuple[float, Cost] = (math.inf, 1)  # no deadline, a cost of one request
_UNGATED: tuple[Permit | None, Reservation | None] = (None, None)  # no breaker, no limiter
_ROUNDING = 1e-9  # seconds of float rounding forgiven when comparing times
_SUCCESS_LOG, _SUCCESS_LEVEL = SUCCEEDED_LOG


class _CutOff(Exception):
    """The call's deadline cut an attempt off: carries the `TimeoutError` to raise."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class Shield:
    """Calls a function through a limiter, a breaker, a bulkhead and a retry policy.

    Every part is optional. `cost` computes a call's rate cost from its arguments (default 1;
    one with a `learn(actual)` method is told each real cost the call is settled at, and one
    with an `unsettled()` method each success that reported no cost);
    `usage` reads the real cost from a result so the limiter can refund or charge the difference
    (from every item of a stream, a later amount for a unit replacing an earlier one). `guide`
    is told each attempt's outcome and its result or error, to learn from the server's headers
    (a classifier's `plain_results` and the guide's `skip` name result classes not worth asking).
    `timeout` is a deadline for the whole call, retries and waits included; `max_wait` bounds
    each wait for a rate permit. A call returns the function's result, or raises its last
    exception (with a note of the attempts made), or a `ShieldError`. Every decision is an
    `Event` told to `on_event` and logged (see `events`); a call is timed, and its success
    built, only when someone hears of it (a listener, or the log at DEBUG).
    """

    __slots__ = (
        "name",
        "on_event",
        "_limiter",
        "_breaker",
        "_retry",
        "_bulkhead",
        "_classifier",
        "_classify_result",
        "_plain_results",
        "_budget",
        "_timeout",
        "_max_wait",
        "_cost",
        "_usage",
        "_learn_cost",
        "_unsettled_cost",
        "_guide",
        "_clock",
        "_timed",
        "_per_call",
        "_gated",
        "_remote",
        "_bucket",
        "_token_limited",
    )

    def __init__(
        self,
        bucket: Limiter | None = None,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        *,
        bulkhead: Bulkhead | None = None,
        classifier: Classifier | None = None,
        budget: RetryBudget | None = None,
        timeout: float | None = None,
        max_wait: float = 60.0,
        cost: Callable[..., Cost] | None = None,
        usage: Callable[[Any], Cost | None] | None = None,
        guide: Guide | None = None,
        clock: Clock | None = None,
        name: str = "",
        on_event: Listener | None = None,
    ) -> None:
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
        if (
            isinstance(max_wait, bool)
            or not isinstance(max_wait, (int, float))
            or not (max_wait >= 0)
        ):
            raise ValueError(f"max_wait must be a number of seconds >= 0, got {max_wait!r}")
        self.name = name
        """The key it shields, for errors, events and logs."""
        self.on_event = on_event
        """Told every decision as an `Event`; None: nobody listens."""
        self._limiter = bucket
        self._breaker = breaker
        self._retry = retry
        self._bulkhead = bulkhead
        self._classifier: Classifier = classifier if classifier is not None else DefaultClassifier()
        # None when every result is a success: the common call then skips asking.
        self._classify_result: Callable[[Any], Verdict] | None = (
            None
            if type(self._classifier) is DefaultClassifier
            and self._classifier.retry_if_result is None
            else self._classifier.classify_result
        )
        self._budget = budget
        self._timeout = timeout
        self._max_wait = float(max_wait)
        self._cost = cost
        self._usage = usage
        # A cost function that learns (a key's `LearnedEstimate`) is told each real cost, and
        # each success that reported none.
        self._learn_cost: Callable[[Cost], None] | None = getattr(cost, "learn", None)
        self._unsettled_cost: Callable[[], None] | None = getattr(cost, "unsettled", None)
        self._guide = guide
        self._plain_results: Container[type] = getattr(self._classifier, "plain_results", ())
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        # Decided once, so that the common call reads no clock and computes nothing it won't use.
        self._timed = breaker is not None and breaker.slow_call_duration is not None
        self._per_call = timeout is not None or cost is not None or budget is not None
        self._gated = bucket is not None or breaker is not None
        # A limiter with async twins keeps its state remotely: the async driver awaits it.
        self._remote = bucket is not None and hasattr(bucket, "areserve")
        self._bucket: TokenBucket | BucketView | None = None  # made on first use of `bucket`
        self._token_limited = bucket is not None and any(
            limit.unit != "requests" for limit in bucket.limits
        )

    # Read-only: the drivers' shortcuts are decided from them once, in __init__.

    @property
    def limiter(self) -> Limiter | None:
        """The rate limiter, or None."""
        return self._limiter

    @property
    def bucket(self) -> TokenBucket | BucketView | None:
        """The seed's bucket: the limiter if it is a `TokenBucket`, else a view of its requests
        limit with the same API (a model key's requests per minute); None without a limiter."""
        if self._bucket is None and self._limiter is not None:
            limiter = self._limiter
            self._bucket = limiter if isinstance(limiter, TokenBucket) else BucketView(limiter)
        return self._bucket

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The circuit breaker, or None."""
        return self._breaker

    @property
    def retry(self) -> RetryPolicy | None:
        """The retry policy, or None for a single attempt."""
        return self._retry

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The bulkhead, or None."""
        return self._bulkhead

    @property
    def classifier(self) -> Classifier:
        """What each outcome means."""
        return self._classifier

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget, or None."""
        return self._budget

    @property
    def timeout(self) -> float | None:
        """Deadline of a whole call in seconds, or None."""
        return self._timeout

    @property
    def clock(self) -> Clock:
        """Where the shield reads time and waits."""
        return self._clock

    @property
    def max_wait(self) -> float:
        """Longest wait for a rate permit, in seconds."""
        return self._max_wait

    def snapshot(self) -> dict[str, object]:
        """What each part holds now: rate levels, breaker state and counts, slots, budget."""
        parts = {
            "limiter": self._limiter,
            "breaker": self._breaker,
            "bulkhead": self._bulkhead,
            "budget": self._budget,
        }
        return {"name": self.name} | {
            part: None if primitive is None else primitive.snapshot()
            for part, primitive in parts.items()
        }

    # -- the two drivers -------------------------------------------------------------------

    # `tokens` cannot be typed between a ParamSpec's args and kwargs: a call giving it is typed
    # by the first overload, whose arguments go unchecked; every other call by the second.
    @overload
    def call(self, fn: Callable[..., T], /, *args: Any, tokens: Cost, **kwargs: Any) -> T: ...
    @overload
    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T: ...
    def call(  # type: ignore[misc]  # `tokens` is never passed on to `fn`
        self, fn: Callable[..., T], /, *args: Any, tokens: Cost | None = None, **kwargs: Any
    ) -> T:
        """Call `fn(*args, **kwargs)` through the shield, waiting by sleeping.

        `tokens` (the seed's name) is the call's rate cost, in place of the shield's `cost`: a
        number charged to every limit, or an amount by unit. It is not passed on to `fn`.
        """
        return self.invoke(fn, args, kwargs, tokens)

    @overload
    def acall(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, tokens: Cost, **kwargs: Any
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def acall(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]: ...
    def acall(  # type: ignore[misc]  # `tokens` is never passed on to `fn`
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        tokens: Cost | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, T]:
        """Await `fn(*args, **kwargs)` through the shield, waiting by awaiting.

        With a `timeout`, each attempt is also cut off at the deadline. `tokens` is the call's
        rate cost, as for `call`.
        """
        return self.ainvoke(fn, args, kwargs, tokens)

    def invoke(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tokens: Cost | None = None,
    ) -> T:
        """`call` for wrappers that hold the arguments as a tuple and a dict already."""
        clock = self._clock
        # Timed only when someone hears of a success: nobody listening costs no clock read.
        # `heard(self.on_event, SUCCEEDED)`, inlined: a function call is a tenth of this path.
        listener = self.on_event
        began = (
            clock.monotonic()
            if (listener is not None and (type(listener) is not Listeners or listener.listening))
            or _SUCCESS_LOG.isEnabledFor(_SUCCESS_LEVEL)
            else None
        )
        deadline, cost = (
            self._start(args, kwargs, tokens) if self._per_call or tokens is not None else _PLAIN
        )
        bulkhead = self._bulkhead
        breaker = self._breaker
        classify_result = self._classify_result
        guide = self._guide
        attempt = 0
        delay: float | None = None
        error: BaseException | None = None
        while True:
            attempt += 1
            # `_admit`, inlined: the function call was a twentieth of the common path.
            permit = reservation = None
            if self._gated:
                try:
                    if breaker is not None:
                        permit = breaker.acquire()
                    limiter = self._limiter
                    if limiter is not None and not (
                        self._usage is None and not self._remote and limiter.try_acquire(cost)
                    ):
                        reservation = limiter.reserve(cost, self._rate_wait(deadline))
                except BaseException as refusal:
                    self._refused(permit, refusal, attempt, error)
                    raise
            try:
                if reservation is not None and reservation.delay > 0.0:
                    blocking(fn, reservation.delay, "a rate permit")
                    since = clock.monotonic()
                    ready = since + reservation.delay
                    clock.sleep(reservation.delay)
                    # A 429 or a debt came meanwhile.
                    while held := self._held_past(reservation, ready, deadline):
                        ready = clock.monotonic() + held
                        clock.sleep(held)
                    self._waited(reservation, since, attempt)
                if bulkhead is not None and not bulkhead.try_acquire():
                    bulkhead.acquire(self._slot_wait(deadline))
            except BaseException as stopped:
                self._abandon(permit, reservation, cost, stopped, attempt, error)
                raise
            started = clock.monotonic() if self._timed else 0.0
            held = False
            try:
                result = fn(*args, **kwargs)
                kind = type(result)
                if (KINDS.get(kind) or kind_of(kind)) & SYNC:
                    first = first_item(cast(Iterator[Any], result))
                    if first is not END:
                        held = True
                        return self._hold(
                            GuardedStream, result, first, permit, reservation, started, attempt,
                            cost, began,
                        )  # fmt: skip
            except Exception as exc:
                error = exc
                verdict = self._classifier.classify_error(exc)
            except BaseException:
                self._interrupted(permit)
                raise
            else:
                error = None
                verdict = (
                    SUCCESS
                    if classify_result is None or kind in self._plain_results
                    else classify_result(result)
                )
                if verdict is SUCCESS or verdict.outcome is _SUCCESS:
                    if permit is not None and breaker is not None:
                        took = clock.monotonic() - started if self._timed else 0.0
                        breaker.record(permit, _SUCCESS, took)
                    if guide is not None and kind not in guide.skip:
                        self._learn(_SUCCESS, result)
                    if reservation is not None or began is not None:
                        self._after_success(reservation, result, attempt, cost, began)
                    return result
            finally:
                if bulkhead is not None and not held:
                    bulkhead.release()
            subject = result if error is None else error
            delay = self._after_attempt(
                verdict, error, subject, permit, reservation, started, attempt, deadline, delay,
                began,
            )  # fmt: skip
            if delay is None:
                if error is None:
                    return result
                raise error
            if delay > 0.0:
                blocking(fn, delay, "the delay before a retry")
                clock.sleep(delay)

    async def ainvoke(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        tokens: Cost | None = None,
    ) -> T:
        """`acall` for wrappers that hold the arguments as a tuple and a dict already."""
        clock = self._clock
        began = clock.monotonic() if heard(self.on_event, SUCCEEDED) else None
        deadline, cost = (
            self._start(args, kwargs, tokens) if self._per_call or tokens is not None else _PLAIN
        )
        bulkhead = self._bulkhead
        breaker = self._breaker
        classify_result = self._classify_result
        guide = self._guide
        attempt = 0
        delay: float | None = None
        error: BaseException | None = None
        while True:
            attempt += 1
            if not self._gated:
                permit, reservation = _UNGATED
            elif self._remote:
                permit, reservation = await self._aadmit(cost, deadline, attempt, error)
            else:
                permit, reservation = self._admit(cost, deadline, attempt, error)
            try:
                if reservation is not None and reservation.delay > 0.0:
                    since = clock.monotonic()
                    ready = since + reservation.delay
                    await clock.asleep(reservation.delay)
                    # A 429 or a debt came meanwhile (a remote limiter's are its server's).
                    while not self._remote and (
                        held := self._held_past(reservation, ready, deadline)
                    ):
                        ready = clock.monotonic() + held
                        await clock.asleep(held)
                    self._waited(reservation, since, attempt)
                if bulkhead is not None and not bulkhead.try_acquire():
                    await bulkhead.aacquire(self._slot_wait(deadline))
            except BaseException as stopped:
                self._abandon(permit, reservation, cost, stopped, attempt, error)
                raise
            started = clock.monotonic() if self._timed else 0.0
            held = False
            try:
                if deadline == math.inf:
                    result = await fn(*args, **kwargs)
                else:
                    result = await self._until(fn(*args, **kwargs), deadline)
                kind = type(result)
                if (KINDS.get(kind) or kind_of(kind)) & ASYNC:
                    first = afirst_item(cast(AsyncIterator[Any], result))
                    first = await (first if deadline == math.inf else self._until(first, deadline))
                    if first is not END:
                        held = True
                        return self._hold(
                            GuardedAsyncStream, result, first, permit, reservation, started,
                            attempt, cost, began,
                        )  # fmt: skip
            except _CutOff as cut:  # by the deadline: no evidence against the provider
                self._interrupted(permit)
                raise self._cut_off(cut.error, attempt, began)  # noqa: B904 - asyncio chained it
            except Exception as exc:
                error = exc
                verdict = self._classifier.classify_error(exc)
            except BaseException:
                self._interrupted(permit)
                raise
            else:
                error = None
                verdict = (
                    SUCCESS
                    if classify_result is None or kind in self._plain_results
                    else classify_result(result)
                )
                if verdict is SUCCESS or verdict.outcome is _SUCCESS:
                    if permit is not None and breaker is not None:
                        took = clock.monotonic() - started if self._timed else 0.0
                        breaker.record(permit, _SUCCESS, took)
                    if guide is not None and kind not in guide.skip:
                        self._learn(_SUCCESS, result)
                    if reservation is not None or began is not None:
                        self._after_success(reservation, result, attempt, cost, began)
                    return result
            finally:
                if bulkhead is not None and not held:
                    bulkhead.release()
            subject = result if error is None else error
            delay = self._after_attempt(
                verdict, error, subject, permit, reservation, started, attempt, deadline, delay,
                began,
            )  # fmt: skip
            if delay is None:
                if error is None:
                    return result
                raise error
            if delay > 0.0:
                await clock.asleep(delay)

    # -- the decisions both drivers share --------------------------------------------------

    def _start(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], tokens: Cost | None
    ) -> tuple[float, Cost]:
        """The call's deadline and cost (`tokens` if given); counts the call for the budget."""
        deadline = math.inf if self._timeout is None else self._clock.monotonic() + self._timeout
        if tokens is not None:
            cost = tokens
        else:
            cost = 1 if self._cost is None else self._cost(*args, **kwargs)
        if self._budget is not None:
            self._budget.record_call()
        return deadline, cost

    def _admit(
        self, cost: Cost, deadline: float, attempt: int, last_error: BaseException | None
    ) -> tuple[Permit | None, Reservation | None]:
        """Breaker permission, then a rate permit; raises the refusal as a `ShieldError`.

        A permit available at once is taken with `try_acquire` (no reservation: None), unless
        the call's usage will settle it or the limiter's state is remote (one round trip, not
        two); otherwise a reservation says how long to wait. The sync driver, `invoke`, has
        this inline: keep the two alike.
        """
        breaker = self._breaker
        limiter = self._limiter
        permit = None
        try:
            if breaker is not None:
                permit = breaker.acquire()
            if limiter is None or (
                self._usage is None and not self._remote and limiter.try_acquire(cost)
            ):
                return permit, None
            return permit, limiter.reserve(cost, self._rate_wait(deadline))
        except BaseException as refusal:
            self._refused(permit, refusal, attempt, last_error)
            raise

    async def _aadmit(
        self, cost: Cost, deadline: float, attempt: int, last_error: BaseException | None
    ) -> tuple[Permit | None, Reservation | None]:
        """`_admit` for a limiter whose state is remote: its reservation is awaited, so the
        event loop never blocks on the round trip."""
        permit = None
        try:
            if self._breaker is not None:
                permit = self._breaker.acquire()
            limiter: Any = self._limiter
            return permit, await limiter.areserve(cost, self._rate_wait(deadline))
        except BaseException as refusal:
            self._refused(permit, refusal, attempt, last_error)
            raise

    def _rate_wait(self, deadline: float) -> float:
        """How long to wait for a rate permit: `max_wait`, never past the deadline."""
        if deadline == math.inf:
            return self._max_wait
        return min(self._max_wait, deadline - self._clock.monotonic())

    def _refused(
        self,
        permit: Permit | None,
        refusal: BaseException,
        attempt: int,
        last_error: BaseException | None,
    ) -> None:
        """Admission failed: give back the breaker permit (a half-open probe too, whatever went
        wrong) and tell of a refusal."""
        if permit is not None and self._breaker is not None:
            self._breaker.release(permit)
        if isinstance(refusal, ShieldError):
            if last_error is not None and refusal.cause is None:
                refusal.cause = refusal.__cause__ = last_error
            self._emit(REJECTED, attempt, refusal.retry_after, None, refusal)

    def _waited(self, reservation: Reservation, since: float, attempt: int) -> None:
        """The call waited for its rate permit from `since` until now: tell how long, and which
        limit's schedule set its go time."""
        bound = reservation.bound_by
        waited = self._clock.monotonic() - since
        self._emit(WAITED, attempt, waited, limit=None if bound is None else str(bound))

    def _slot_wait(self, deadline: float) -> float | None:
        """How long to wait for a bulkhead slot: its own `max_wait`, never past the deadline."""
        if deadline == math.inf:
            return None
        assert self._bulkhead is not None
        return max(0.0, min(self._bulkhead.max_wait, deadline - self._clock.monotonic()))

    def _held_past(self, reservation: Reservation, ready: float, deadline: float) -> float:
        """How much longer a waiter that has waited until `ready`, the go time it was given,
        must wait: for the debts charged while it waited (a provider charges an answer when it
        ends, to everyone who has not gone yet: see `Limiter.debt_since`), and for what is left
        of a pause that outlasts its wait (a 429 that came meanwhile). A debt is counted once
        and a pause within the wait holds it no longer, so a clock that does not move
        (freezegun) never keeps a waiter sleeping. A hold past the deadline, or a debt that
        makes the whole wait longer than `max_wait`, gives up at once with `RateLimited`."""
        limiter = self._limiter
        assert limiter is not None
        debt = limiter.debt_since(reservation)
        paused = limiter.paused_for
        now = self._clock.monotonic()
        if now + paused <= ready + _ROUNDING:
            paused = 0.0
        if not debt and not paused:
            return 0.0
        held = max(ready + debt - now, paused)
        if held <= _ROUNDING:
            return 0.0
        waited = now + held - (reservation.ready_at - reservation.delay)
        if held > self._left(deadline) or (held > paused and waited > self._max_wait):
            cause = f"paused for {held:.3f}s" if held == paused else f"{held:.3f}s in debt"
            raise RateLimited(
                f"the key is {cause}, more than the time left",
                retry_after=held,
                key=self.name or None,
            )
        return held

    def _abandon(
        self,
        permit: Permit | None,
        reservation: Reservation | None,
        cost: Cost,
        stopped: BaseException,
        attempt: int,
        last_error: BaseException | None,
    ) -> None:
        """The attempt stopped before the function started (refused, cancelled or interrupted
        while it waited): give back what it holds, and tell of a refusal."""
        if self._limiter is not None:
            if reservation is None:
                self._limiter.refund(cost)
            else:
                self._limiter.cancel(reservation)
        self._refused(permit, stopped, attempt, last_error)

    def _interrupted(self, permit: Permit | None) -> None:
        """The attempt was cut short after the function started: its request may be out, so
        its rate permit and token estimate stay spent; the breaker permit (a half-open probe
        too) comes back, since an interruption is no verdict on the provider."""
        if permit is not None and self._breaker is not None:
            self._breaker.release(permit)

    async def _until(self, awaitable: Awaitable[T], deadline: float) -> T:
        """Await `awaitable` until the deadline; raises `_CutOff` if the deadline cut it off
        (a timeout the awaitable raised itself, before the deadline, goes through as it is)."""
        left = self._left(deadline)
        loop = asyncio.get_running_loop()
        cut_at = loop.time() + left
        try:
            return await asyncio.wait_for(awaitable, left)
        except asyncio.TimeoutError as error:
            if loop.time() >= cut_at:
                raise _CutOff(error) from None
            raise

    def _cut_off(
        self, error: BaseException, attempt: int, began: float | None
    ) -> BaseException:
        """The deadline cut attempt `attempt` off: say so on the error, and tell."""
        limit = f"{self._timeout:g}s " if self._timeout is not None else ""
        add_note(error, f"rate-limit-shield: the call's {limit}deadline cut attempt {attempt} off")
        self._emit(
            GAVE_UP, attempt, None, None, error, duration=self._since(began),
            reason="the deadline cut the attempt off",
        )  # fmt: skip
        return error

    def _left(self, deadline: float) -> float:
        return deadline - self._clock.monotonic()

    def _hold(
        self,
        guard: type[GuardedStream] | type[GuardedAsyncStream],
        stream: T,
        first: Any,
        permit: Permit | None,
        reservation: Reservation | None,
        started: float,
        attempt: int,
        cost: Cost,
        began: float | None,
    ) -> T:
        """Hand a stream that delivered its first item to a guard holding the permit and slot.

        The call's duration, for slow-call accounting, is the wait for the first item. The
        stream's response headers, there from its start, teach the guide at once.
        """
        duration = self._duration(started)
        guide = self._guide
        if guide is not None and type(stream) not in guide.skip:
            self._learn(_SUCCESS, stream)
        tally = None
        if reservation is not None and self._usage is not None:
            tally = StreamTally(self._usage_of)

        def on_end(error: BaseException | None, last: Any) -> BaseException | None:
            return self._end_stream(
                permit, reservation, attempt, cost, duration, began, error, last
            )

        return cast(T, guard(stream, first, on_end, tally))

    def _end_stream(
        self,
        permit: Permit | None,
        reservation: Reservation | None,
        attempt: int,
        cost: Cost,
        duration: float,
        began: float | None,
        error: BaseException | None,
        last: Any,
    ) -> BaseException | None:
        """A held stream ended: release its slot and record it. An error is never retried now,
        since items already reached the caller. Returns an error to raise instead, if any."""
        breaker = self._breaker
        if self._bulkhead is not None:
            self._bulkhead.release()
        if error is None:
            if permit is not None and breaker is not None:
                breaker.record(permit, _SUCCESS, duration)
            if reservation is not None and self._usage is not None:
                usage = last.usage if isinstance(last, StreamTally) else None
                self._settled(reservation, usage, cost, attempt)
            self._emit(SUCCEEDED, attempt, None, _SUCCESS, None, duration=self._since(began))
            return None
        if not isinstance(error, Exception):  # interrupted: no verdict on the provider
            if permit is not None and breaker is not None:
                breaker.release(permit)
            return None
        outcome, hint, replacement = self._classifier.classify_error(error)
        if permit is not None and breaker is not None:
            breaker.record(permit, outcome, duration)
        if reservation is not None and self._limiter is not None and isinstance(last, StreamTally):
            # The provider charges the prompt and what it wrote, not the answer it never wrote;
            # not learned from: a cut answer tells nothing of how long the key's answers are.
            self._limiter.settle(reservation, last.spent(cost))
        self._learn(outcome, error)
        self._throttled(outcome, hint, attempt, error, error)
        raised = replacement if replacement is not None else error
        self._give_up(raised, attempt, outcome, "the stream failed after delivering items", began)
        return replacement

    def _duration(self, started: float) -> float:
        """How long the call took, when the breaker cares (slow calls); 0.0 otherwise."""
        return self._clock.monotonic() - started if self._timed else 0.0

    def _after_success(
        self,
        reservation: Reservation | None,
        result: Any,
        attempt: int,
        cost: Cost,
        began: float | None,
    ) -> None:
        """Settle the rate reservation from the result's usage; tell of the success when the
        call was timed (someone listened as it began)."""
        if self._usage is not None and reservation is not None:
            self._settled(reservation, self._usage_of(result), cost, attempt)
        if began is not None:
            self._emit(SUCCEEDED, attempt, None, _SUCCESS, None, duration=self._since(began))

    def _since(self, began: float | None) -> float | None:
        """Seconds since the call began, if it was timed."""
        return None if began is None else self._clock.monotonic() - began

    def _usage_of(self, subject: Any) -> Cost | None:
        """The real cost a result or stream item reports; None (keep the estimate) when reading
        it fails: a request that went out and succeeded is never turned into an error."""
        assert self._usage is not None
        try:
            return self._usage(subject)
        except Exception:
            unreadable(self.name, "usage", subject)
            return None

    def _learn(self, outcome: Outcome, subject: Any) -> None:
        """Let the guide learn from an outcome's headers; one it cannot read teaches nothing."""
        if self._guide is not None:
            try:
                self._guide(outcome, subject)
            except Exception:
                unreadable(self.name, "rate-limit headers", subject)

    def _settled(
        self, reservation: Reservation, actual: Cost | None, cost: Cost, attempt: int
    ) -> None:
        """Settle a success at what it reports it cost; with no report, its estimate stays
        charged: tell the cost function that learns (the next calls must reserve what nothing
        will charge), and once per key whose calls reserve tokens (see `unsettled`)."""
        if actual is not None:
            self._settle(reservation, actual)
            return
        if self._unsettled_cost is not None:
            self._unsettled_cost()
        if self._token_limited and self._limiter is not None:
            binding = unsettled(self.name, self._limiter.limits, cost)
            if binding is not None:
                self._emit(UNSETTLED, attempt, None, _SUCCESS, None, reason=binding)

    def _settle(self, reservation: Reservation, actual: Cost | None) -> None:
        if actual is not None and self._limiter is not None:
            self._limiter.settle(reservation, actual)
            if self._learn_cost is not None:
                self._learn_cost(actual)

    def _after_attempt(
        self,
        verdict: Verdict,
        error: BaseException | None,
        subject: Any,
        permit: Permit | None,
        reservation: Reservation | None,
        started: float,
        attempt: int,
        deadline: float,
        previous: float | None,
        began: float | None,
    ) -> float | None:
        """Record a failed, throttled or ignored attempt and decide what comes next.

        `subject` is the error, or the result the classifier rejected; `reservation` is settled
        at what the attempt spent. Returns the delay before
        the next attempt, or None to give up: the driver then raises
        `error` (noted here) or, for a rejected result, returns it. Raises the error the verdict
        names instead, a `RateLimited` when the server's hint outlasts the deadline, or a
        `CircuitOpen` when the breaker opened and would still be open after the delay.
        """
        now = self._clock.monotonic()
        outcome, hint, replacement = verdict
        if permit is not None and self._breaker is not None:
            self._breaker.record(permit, outcome, self._duration(started))
        self._learn(outcome, subject)
        if reservation is not None and self._usage is not None:
            # A rejected result says what it spent; a refused request (429, 4xx, quota gone)
            # spent no tokens; a failure (5xx, timeout) may have, so it keeps the estimate.
            if error is None:
                self._settle(reservation, self._usage_of(subject))
            elif outcome is not _FAILURE:
                self._settle(reservation, _ONE_REQUEST)
        self._throttled(outcome, hint, attempt, error, subject)
        if replacement is not None:
            self._give_up(replacement, attempt, outcome, "not retryable", began, note=False)
            raise replacement from error
        if outcome is _IGNORED:
            if error is not None:
                self._give_up(error, attempt, outcome, "not retryable", began, note=False)
            return None
        if outcome is _SUCCESS:  # an error a classifier calls a success
            return None
        retry = self._retry
        if retry is None or attempt >= retry.max_attempts:
            self._give_up(error, attempt, outcome, "attempts used up", began)
            return None
        time_left = deadline - now
        too_long = retry.hint_too_long(hint, time_left)
        if too_long is not None:
            raise self._refuse(
                RateLimited(
                    f"the server asked for {hint:.3f}s, {too_long}",
                    retry_after=hint,
                    key=self.name or None,
                    cause=error,
                ),
                attempt,
                outcome,
                began,
                f"the server's hint is {too_long}",
            )
        delay = retry.next_delay(attempt, previous, hint, time_left)
        if delay is None:
            self._give_up(error, attempt, outcome, "deadline reached", began)
            return None
        if self._breaker is not None:
            open_for = self._breaker.retry_after
            if open_for is None or open_for > delay:
                raise self._refuse(
                    CircuitOpen(
                        f"the circuit opened after {attempt} attempt(s)",
                        retry_after=open_for,
                        key=self.name or None,
                        cause=error,
                    ),
                    attempt,
                    outcome,
                    began,
                    "the circuit opened",
                )
        if self._budget is not None and not self._budget.try_spend():
            self._give_up(error, attempt, outcome, "retry budget exhausted", began)
            return None
        why = "the result was rejected" if error is None else describe(error)
        self._emit(RETRY, attempt, delay, outcome, error, reason=why)
        return delay

    def _throttled(
        self,
        outcome: Outcome,
        hint: float | None,
        attempt: int,
        error: BaseException | None,
        subject: Any,
    ) -> None:
        """The server throttled: with a hint, pause the key for every caller; tell either way
        (`subject`, the error or the result, says where the hint came from)."""
        if outcome is not _THROTTLED:
            return
        if hint is not None and self._limiter is not None:
            self._limiter.pause(hint)
        if heard(self.on_event, THROTTLED):
            self._emit(THROTTLED, attempt, hint, outcome, error, reason=_hint_source(subject, hint))

    def _give_up(
        self,
        error: BaseException | None,
        attempt: int,
        outcome: Outcome,
        reason: str,
        began: float | None,
        *,
        note: bool = True,
    ) -> None:
        """No further attempt: note why on the error the driver will raise, and tell."""
        if error is not None and note:
            add_note(error, f"rate-limit-shield: gave up after {attempt} attempt(s): {reason}")
        took = self._since(began)
        self._emit(GAVE_UP, attempt, None, outcome, error, duration=took, reason=reason)

    def _refuse(
        self,
        refusal: ShieldError,
        attempt: int,
        outcome: Outcome,
        began: float | None,
        reason: str,
    ) -> ShieldError:
        """Stop retrying with a `ShieldError` instead of the function's own error."""
        self._give_up(refusal, attempt, outcome, reason, began, note=False)
        return refusal

    def _emit(
        self,
        kind: str,
        attempt: int,
        delay: float | None = None,
        outcome: Outcome | None = None,
        error: BaseException | None = None,
        *,
        duration: float | None = None,
        limit: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Tell the listener and the log, if either hears events of `kind`."""
        on_event = self.on_event
        if heard(on_event, kind):
            event = Event(kind, self.name, attempt, delay, outcome, error, None, duration, limit,
                          reason)  # fmt: skip
            report(on_event, event)

    def __repr__(self) -> str:
        return (
            f"Shield(name={self.name!r}, limiter={self._limiter!r}, "
            f"breaker={self._breaker!r}, retry={self._retry!r}, bulkhead={self._bulkhead!r})"
        )


def _hint_source(subject: Any, hint: float | None) -> str:
    """Where a throttle's hint came from, in words: the Retry-After header, a rate-limit reset
    header, or else the server's message or body (or a `RateLimited`'s own); "backoff" without
    one. Read as the classifier reads them, and only when someone hears of the throttle."""
    if hint is None:
        return "backoff"
    headers = headers_of(subject)
    if headers is not None:
        info = RateLimitInfo.from_headers(headers)
        if info.retry_after is not None:
            return "retry-after"
        reset = info.reset_hint()
        if reset is not None and abs(reset - hint) < 1.0:
            return "reset header"
    return "retry_after" if isinstance(subject, ShieldError) else "server message"
