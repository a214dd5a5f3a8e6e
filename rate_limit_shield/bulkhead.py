"""How many calls may be in flight at once.

A bulkhead keeps one slow or failing model from tying up every worker. While a slot is free it
costs no lock: free slots are tokens in a list, and `list.pop` / `list.append` are atomic. A slot
never taken yet has no token: the first calls take new slots under the lock, so that a bulkhead
costs memory for the most calls it has had in flight, not for its `max_concurrent`.
Once it is full, callers queue in FIFO order (under a lock) and `release` hands its slot
straight to the oldest of them. The one race of the lock-free path, a release whose token lands
just as a waiter queues, is closed from both sides: a waiter queues itself *before* looking for
a token once more, and a release looks for waiters once more *after* putting its token back.
Threads and asyncio tasks share the one queue: a thread waits on a lock of its own, a task on a
future of its own loop, woken with `call_soon_threadsafe` because the release may come from any
thread. Waits are real waits for other calls to finish, not for time to pass, so they use
threading and asyncio primitives rather than the clock.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque

from .clock import SYSTEM_CLOCK, Clock
from .errors import BulkheadFull, ConfigError

__all__ = ["Bulkhead"]

# Where a waiter stands. Only the bulkhead's lock moves it from _QUEUED to another state.
_QUEUED = 0  # in the queue, owns nothing
_GRANTED = 1  # handed a slot by `release`: it owns the slot even if it stopped waiting
_GONE = 2  # done: left the queue, or its granted slot was claimed by itself or passed on


class _ThreadWaiter:
    """A blocked thread: holds a lock that is already taken, which `wake` lets go."""

    __slots__ = ("_lock", "state")

    def __init__(self) -> None:
        self.state = _QUEUED
        self._lock = threading.Lock()
        self._lock.acquire()

    def wait(self, seconds: float) -> bool:
        """True once woken, False when `seconds` passed first."""
        return self._lock.acquire(True, min(seconds, threading.TIMEOUT_MAX))

    def wake(self) -> bool:
        """Let the thread go; always possible (the bool matches `_TaskWaiter.wake`)."""
        self._lock.release()
        return True


class _TaskWaiter:
    """A suspended asyncio task: waits on a future that resolves True on grant, False on timeout."""

    __slots__ = ("future", "loop", "state")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.state = _QUEUED
        self.loop = loop
        self.future: asyncio.Future[bool] = loop.create_future()

    def wake(self) -> bool:
        """Resolve the future on its own loop; False if that loop is closed and nobody can wake."""
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, True)
        except RuntimeError:
            return False
        return True


_Waiter = _ThreadWaiter | _TaskWaiter


def _settle(future: asyncio.Future[bool], granted: bool) -> None:
    # Grant and timeout race on the loop; the first one wins, the bulkhead's lock decides the rest.
    if not future.done():
        future.set_result(granted)


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{name} must be a number of seconds >= 0 (or math.inf), got {value!r}")
    return float(value)


class Bulkhead:
    """At most `max_concurrent` calls in flight; others wait up to `max_wait` seconds for a slot.

    `max_wait=0` (the default) refuses at once with `BulkheadFull` when full; `math.inf` waits as
    long as it takes. The same object serves threads and asyncio tasks, on any number of loops.
    `clock` is accepted for uniformity with the other primitives: waiting for a slot is waiting
    for other calls, so it is not read.
    """

    __slots__ = ("_free", "_issued", "_lock", "_max_concurrent", "_max_wait", "_waiters", "clock",
                 "name")  # fmt: skip

    def __init__(
        self,
        max_concurrent: int,
        max_wait: float = 0.0,
        *,
        clock: Clock | None = None,
        name: str = "",
    ) -> None:
        if (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise ConfigError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        self._max_wait = _check_seconds("max_wait", max_wait)
        self._max_concurrent = max_concurrent
        self._lock = threading.Lock()
        self._free: list[None] = []  # one token per free slot that was taken before
        self._issued = 0  # slots ever taken (under the lock): only these have tokens
        self._waiters: deque[_Waiter] = deque()
        self.name = name
        self.clock = clock if clock is not None else SYSTEM_CLOCK

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    @property
    def max_wait(self) -> float:
        return self._max_wait

    @property
    def in_flight(self) -> int:
        """Slots taken, including slots handed to waiters that have not resumed yet."""
        return self._issued - len(self._free)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is queued for it; never waits."""
        if self._waiters:
            return False
        try:
            self._free.pop()
        except IndexError:
            return self._issue()
        return True

    def _issue(self) -> bool:
        """Take a slot never taken before, if one is left: the first calls' slots."""
        if self._issued >= self._max_concurrent:  # the common case once warm: no lock
            return False
        with self._lock:
            if self._issued >= self._max_concurrent:
                return False
            self._issued += 1
            return True

    def acquire(self, timeout: float | None = None) -> None:
        """Take a slot, blocking this thread at most `timeout` (default `max_wait`) seconds.

        Raises `BulkheadFull` when no slot was handed over in time.
        """
        wait = self._max_wait if timeout is None else _check_seconds("timeout", timeout)
        if self.try_acquire():
            return
        if wait == 0:
            raise self._full(wait)
        waiter = _ThreadWaiter()
        if not self._queue(waiter):
            return
        try:
            if waiter.wait(wait):
                return
        except BaseException:  # KeyboardInterrupt while blocked: give back what we may own
            if self._withdraw(waiter):
                self.release()
            raise
        if not self._withdraw(waiter):
            raise self._full(wait)

    async def aacquire(self, timeout: float | None = None) -> None:
        """Take a slot, suspending this task at most `timeout` (default `max_wait`) seconds.

        Never blocks the loop. Raises `BulkheadFull` when no slot was handed over in time; a
        cancelled waiter leaves the queue and passes on a slot it was handed meanwhile.
        """
        wait = self._max_wait if timeout is None else _check_seconds("timeout", timeout)
        if self.try_acquire():
            return
        if wait == 0:
            raise self._full(wait)
        loop = asyncio.get_running_loop()
        waiter = _TaskWaiter(loop)
        if not self._queue(waiter):
            return
        future = waiter.future
        timer = None if wait == math.inf else loop.call_later(wait, _settle, future, False)
        try:
            granted = await future
        except BaseException:  # cancelled (or the coroutine closed): give back what we may own
            if self._withdraw(waiter):
                self.release()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if not granted and not self._withdraw(waiter):
            raise self._full(wait)

    def release(self) -> None:
        """Give a slot back, straight to the oldest waiter if there is one.

        Raises `RuntimeError` when no slot is taken (more releases than acquires).
        """
        if self._waiters:
            self._hand_over(own_slot=True)
            return
        free = self._free
        free.append(None)
        if len(free) > self._issued:
            free.pop()
            raise RuntimeError(f"Bulkhead {self.name!r} released more often than acquired")
        if self._waiters:  # one queued between our look and our token: it must not be left
            self._hand_over(own_slot=False)

    def _hand_over(self, *, own_slot: bool) -> None:
        """Hand a slot to the oldest waiter: the caller's own, or (if not) a free token."""
        lock = self._lock
        while True:
            with lock:
                waiters = self._waiters
                if not own_slot:
                    if not waiters:
                        return
                    try:
                        self._free.pop()
                    except IndexError:  # a newcomer took it; its release will hand over
                        return
                elif not waiters:  # the waiters left meanwhile: the slot is free again
                    self._free.append(None)
                    return
                waiter = waiters.popleft()
                waiter.state = _GRANTED
            if waiter.wake():  # outside the lock: waking a loop may take a syscall
                return
            with lock:  # its loop is closed: unless it gave the slot back itself, pass it on
                if waiter.state != _GRANTED:
                    return
                waiter.state = _GONE
            own_slot = True

    def snapshot(self) -> dict[str, int | float]:
        with self._lock:
            return {
                "max_concurrent": self._max_concurrent,
                "in_flight": self._issued - len(self._free),
                "waiting": len(self._waiters),
            }

    def _queue(self, waiter: _Waiter) -> bool:
        """Queue `waiter`; False if a slot freed up meanwhile and was taken instead.

        Queued first, then one more look for a token: a release that put its token back just
        before is then sure to see this waiter, or this waiter to see its token.
        """
        with self._lock:
            self._waiters.append(waiter)
            try:
                self._free.pop()
            except IndexError:
                return True
            self._waiters.pop()  # itself: only this lock's holders append
            return False

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Take a waiter that stopped waiting out of the queue; True if it owns a slot now.

        Exactly one party claims a handed-over slot: this waiter here, or `release` when the
        waiter's loop turned out to be closed; the state moves to _GONE either way.
        """
        with self._lock:
            state = waiter.state
            if state == _QUEUED:
                self._waiters.remove(waiter)
            waiter.state = _GONE
            return state == _GRANTED

    def _full(self, waited: float) -> BulkheadFull:
        busy = f"{self._max_concurrent} calls in flight"
        message = f"bulkhead full, no slot freed within {waited:g}s" if waited else "bulkhead full"
        return BulkheadFull(f"{message} ({busy})", retry_after=None, key=self.name)

    def __repr__(self) -> str:
        return (
            f"Bulkhead(name={self.name!r}, max_concurrent={self._max_concurrent}, "
            f"max_wait={self._max_wait!r}, in_flight={self.in_flight}, waiting={self.waiting})"
        )
