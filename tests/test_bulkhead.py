"""Bulkhead: counting, FIFO hand-over, timeouts and cancellation, threads and tasks together."""

from __future__ import annotations

import asyncio
import functools
import importlib
import math
import threading
import time
from collections.abc import Callable

import pytest
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

from rate_limit_shield.bulkhead import Bulkhead
from rate_limit_shield.clock import SYSTEM_CLOCK
from rate_limit_shield.errors import BulkheadFull, ConfigError
from rate_limit_shield.testing import FakeClock

# Real waits below are only for other threads to reach a state; bounds are generous.
PATIENCE = 10.0

# `rate_limit_shield.bulkhead` is also the name of the decorator, which the package exports.
bulkhead_module = importlib.import_module("rate_limit_shield.bulkhead")


def wait_for(read: Callable[[], int], expected: int) -> None:
    """Wait for other threads until `read()` gives `expected`."""
    deadline = time.monotonic() + PATIENCE
    while read() != expected:
        assert time.monotonic() < deadline, f"still {read()}, expected {expected}"
        time.sleep(0.001)


async def spin(rounds: int = 10) -> None:
    """Let the loop run a few turns, enough for call_soon_threadsafe wake-ups to land."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def start_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# --- counting -----------------------------------------------------------------------------


def test_try_acquire_counts_slots_and_refuses_when_full() -> None:
    bulkhead = Bulkhead(2, clock=FakeClock(), name="gpt-4o")
    assert bulkhead.try_acquire()
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    assert bulkhead.in_flight == 2
    assert bulkhead.snapshot() == {"max_concurrent": 2, "in_flight": 2, "waiting": 0}
    bulkhead.release()
    assert bulkhead.in_flight == 1
    assert bulkhead.try_acquire()
    bulkhead.release()
    bulkhead.release()
    assert bulkhead.snapshot() == {"max_concurrent": 2, "in_flight": 0, "waiting": 0}


def test_defaults_and_read_only_settings() -> None:
    bulkhead = Bulkhead(3)
    assert bulkhead.max_concurrent == 3
    assert bulkhead.max_wait == 0.0
    assert bulkhead.clock is SYSTEM_CLOCK
    assert "max_concurrent=3" in repr(bulkhead)


@given(st.integers(1, 5), st.lists(st.booleans(), max_size=60))
def test_counting_matches_a_model(max_concurrent: int, takes: list[bool]) -> None:
    """Any sequence of try_acquire (True) and release (False) behaves like a bounded counter."""
    bulkhead = Bulkhead(max_concurrent)
    model = 0
    for take in takes:
        if take:
            assert bulkhead.try_acquire() == (model < max_concurrent)
            model = min(model + 1, max_concurrent)
        elif model == 0:
            with pytest.raises(RuntimeError):
                bulkhead.release()
        else:
            bulkhead.release()
            model -= 1
        assert bulkhead.in_flight == model
        assert bulkhead.waiting == 0


def test_over_release_raises_and_leaves_the_count_intact() -> None:
    bulkhead = Bulkhead(2, name="claude")
    with pytest.raises(RuntimeError, match="claude"):
        bulkhead.release()
    bulkhead.acquire()
    bulkhead.release()
    with pytest.raises(RuntimeError):
        bulkhead.release()
    assert bulkhead.in_flight == 0
    assert bulkhead.try_acquire()
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()


# --- refusing at once ---------------------------------------------------------------------


def test_full_bulkhead_without_max_wait_refuses_at_once() -> None:
    bulkhead = Bulkhead(1, name="gpt-4o")
    bulkhead.acquire()
    with pytest.raises(BulkheadFull) as caught:
        bulkhead.acquire()
    assert caught.value.retry_after is None
    assert caught.value.key == "gpt-4o"
    assert "1 calls in flight" in str(caught.value)
    with pytest.raises(BulkheadFull):
        asyncio.run(bulkhead.aacquire())
    assert bulkhead.waiting == 0
    assert bulkhead.in_flight == 1


def test_explicit_zero_timeout_overrides_max_wait() -> None:
    bulkhead = Bulkhead(1, max_wait=PATIENCE)
    bulkhead.acquire()
    started = time.monotonic()
    with pytest.raises(BulkheadFull):
        bulkhead.acquire(timeout=0)
    assert time.monotonic() - started < 1.0
    assert bulkhead.waiting == 0


# --- FIFO hand-over -----------------------------------------------------------------------


def test_thread_waiters_are_served_in_fifo_order_without_barging() -> None:
    bulkhead = Bulkhead(1, max_wait=PATIENCE)
    bulkhead.acquire()
    served: list[int] = []

    def worker(number: int) -> None:
        bulkhead.acquire()
        served.append(number)

    threads = []
    for number in range(5):
        threads.append(start_thread(functools.partial(worker, number)))
        wait_for(lambda: bulkhead.waiting, number + 1)
    for number in range(5):
        bulkhead.release()
        assert not bulkhead.try_acquire()  # the slot went to the oldest waiter, not to us
        wait_for(served.__len__, number + 1)
        assert served == list(range(number + 1))
        assert bulkhead.in_flight == 1
    for thread in threads:
        thread.join(PATIENCE)
    bulkhead.release()
    assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 0, "waiting": 0}


def test_task_waiters_are_served_in_fifo_order_without_barging() -> None:
    async def main() -> None:
        bulkhead = Bulkhead(1, max_wait=PATIENCE)
        await bulkhead.aacquire()
        served: list[int] = []

        async def worker(number: int) -> None:
            await bulkhead.aacquire()
            served.append(number)

        tasks = []
        for number in range(5):
            tasks.append(asyncio.create_task(worker(number)))
            await spin(1)
        assert bulkhead.waiting == 5
        for number in range(5):
            bulkhead.release()
            assert not bulkhead.try_acquire()
            await spin()
            assert served == list(range(number + 1))
            assert bulkhead.in_flight == 1
        await asyncio.gather(*tasks)
        bulkhead.release()
        assert bulkhead.in_flight == 0

    asyncio.run(main())


@pytest.mark.parametrize("first", ["thread", "task"])
def test_threads_and_tasks_share_one_queue(first: str) -> None:
    """Any thread's release wakes the oldest waiter: a thread, or a task on another loop."""
    bulkhead = Bulkhead(1, max_wait=PATIENCE)
    bulkhead.acquire()
    served: list[str] = []

    def thread_worker() -> None:
        bulkhead.acquire()
        served.append("thread")
        bulkhead.release()

    async def task_worker() -> None:
        await bulkhead.aacquire()
        served.append("task")
        bulkhead.release()

    starters = {
        "thread": lambda: start_thread(thread_worker),
        "task": lambda: start_thread(lambda: asyncio.run(task_worker())),
    }
    second = "task" if first == "thread" else "thread"
    threads = [starters[first]()]
    wait_for(lambda: bulkhead.waiting, 1)
    threads.append(starters[second]())
    wait_for(lambda: bulkhead.waiting, 2)
    bulkhead.release()  # from the main thread, which runs no loop
    for thread in threads:
        thread.join(PATIENCE)
    assert served == [first, second]
    assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 0, "waiting": 0}


# --- timeouts -----------------------------------------------------------------------------


def test_timed_out_thread_waiter_leaves_the_queue_and_leaks_nothing() -> None:
    bulkhead = Bulkhead(1, max_wait=0.05, name="gpt-4o")
    bulkhead.acquire()
    started = time.monotonic()
    with pytest.raises(BulkheadFull) as caught:
        bulkhead.acquire()
    waited = time.monotonic() - started
    assert 0.04 <= waited < PATIENCE
    assert caught.value.key == "gpt-4o"
    assert caught.value.retry_after is None
    assert "0.05s" in str(caught.value)
    assert bulkhead.waiting == 0
    assert bulkhead.in_flight == 1
    bulkhead.release()  # nobody to hand it to: the slot comes back
    assert bulkhead.in_flight == 0
    assert bulkhead.try_acquire()


def test_timed_out_task_in_the_middle_of_the_queue_is_skipped() -> None:
    async def main() -> None:
        bulkhead = Bulkhead(1, max_wait=PATIENCE)
        await bulkhead.aacquire()
        first = asyncio.create_task(bulkhead.aacquire())
        await spin(1)
        impatient = asyncio.create_task(bulkhead.aacquire(timeout=0.05))
        await spin(1)
        last = asyncio.create_task(bulkhead.aacquire())
        await spin(1)
        assert bulkhead.waiting == 3
        started = time.monotonic()
        with pytest.raises(BulkheadFull):
            await impatient
        assert 0.04 <= time.monotonic() - started < PATIENCE
        assert bulkhead.waiting == 2
        bulkhead.release()
        await spin()
        assert first.done() and not last.done()
        bulkhead.release()
        await spin()
        assert last.done()
        bulkhead.release()
        assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 0, "waiting": 0}

    asyncio.run(main())


def test_task_whose_timeout_races_the_hand_over_keeps_the_slot() -> None:
    """The timer fires in the same loop turn as the release: whichever wins, no slot is lost."""

    async def main() -> None:
        bulkhead = Bulkhead(1)
        await bulkhead.aacquire()
        waiter = asyncio.create_task(bulkhead.aacquire(timeout=1e-6))
        await spin(1)  # the waiter queues; its timer is due by the next loop turn
        await asyncio.sleep(0)  # the timer and this task now run in the same loop turn
        bulkhead.release()
        await waiter  # handed the slot, so no BulkheadFull even though its time was up
        assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 1, "waiting": 0}
        bulkhead.release()
        assert bulkhead.in_flight == 0

    asyncio.run(main())


def test_thread_timing_out_as_the_slot_is_handed_over_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bulkhead = Bulkhead(1, max_wait=0.05)
    bulkhead.acquire()

    def time_out_just_after_the_hand_over(waiter: object, seconds: float) -> bool:
        bulkhead.release()  # the slot is handed to this waiter...
        return False  # ...just as its wait times out

    monkeypatch.setattr(bulkhead_module._ThreadWaiter, "wait", time_out_just_after_the_hand_over)
    bulkhead.acquire()  # owns the slot: no BulkheadFull
    assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 1, "waiting": 0}


@pytest.mark.parametrize("handed_over", [False, True])
def test_interrupted_thread_waiter_gives_back_what_it_owns(
    monkeypatch: pytest.MonkeyPatch, handed_over: bool
) -> None:
    bulkhead = Bulkhead(1, max_wait=PATIENCE)
    bulkhead.acquire()

    def interrupted(waiter: object, seconds: float) -> bool:
        if handed_over:
            bulkhead.release()
        raise KeyboardInterrupt

    monkeypatch.setattr(bulkhead_module._ThreadWaiter, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bulkhead.acquire()
    in_flight = 0 if handed_over else 1
    assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": in_flight, "waiting": 0}


def test_timeouts_racing_releases_under_load_never_leak_a_slot() -> None:
    """Short timeouts while slots change hands fast: the count is never exceeded, ends at zero."""
    bulkhead = Bulkhead(2)
    guard = threading.Lock()
    now_in = [0, 0]  # current, peak
    outcomes = {"served": 0, "refused": 0}

    def hold() -> None:
        with guard:
            now_in[0] += 1
            now_in[1] = max(now_in[1], now_in[0])
            outcomes["served"] += 1

    def leave() -> None:
        with guard:
            now_in[0] -= 1

    def thread_worker() -> None:
        for _ in range(40):
            try:
                bulkhead.acquire(timeout=0.002)
            except BulkheadFull:
                with guard:
                    outcomes["refused"] += 1
                continue
            hold()
            time.sleep(0.001)
            leave()
            bulkhead.release()

    async def task_worker() -> None:
        for _ in range(40):
            try:
                await bulkhead.aacquire(timeout=0.002)
            except BulkheadFull:
                with guard:
                    outcomes["refused"] += 1
                continue
            hold()
            await asyncio.sleep(0.001)
            leave()
            bulkhead.release()

    async def tasks() -> None:
        await asyncio.gather(*(task_worker() for _ in range(6)))

    threads = [start_thread(thread_worker) for _ in range(6)]
    threads.append(start_thread(lambda: asyncio.run(tasks())))
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert outcomes["served"] + outcomes["refused"] == 12 * 40
    assert outcomes["served"] > 0
    assert now_in[1] <= 2
    assert bulkhead.snapshot() == {"max_concurrent": 2, "in_flight": 0, "waiting": 0}


# --- cancellation -------------------------------------------------------------------------


def test_cancelled_queued_task_leaves_the_queue() -> None:
    async def main() -> None:
        bulkhead = Bulkhead(1, max_wait=PATIENCE)
        await bulkhead.aacquire()
        waiter = asyncio.create_task(bulkhead.aacquire())
        await spin(1)
        assert bulkhead.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 1, "waiting": 0}
        bulkhead.release()
        assert bulkhead.in_flight == 0

    asyncio.run(main())


@pytest.mark.parametrize("wake_up_landed", [False, True], ids=["before-wake-up", "after-wake-up"])
@pytest.mark.parametrize("someone_behind", [False, True], ids=["alone", "with-next-waiter"])
def test_task_cancelled_right_after_the_hand_over_passes_the_slot_on(
    wake_up_landed: bool, someone_behind: bool
) -> None:
    async def main() -> None:
        bulkhead = Bulkhead(1, max_wait=PATIENCE)
        await bulkhead.aacquire()
        handed = asyncio.create_task(bulkhead.aacquire())
        await spin(1)
        behind = asyncio.create_task(bulkhead.aacquire()) if someone_behind else None
        await spin(1)
        bulkhead.release()  # the slot now belongs to `handed`, which has not resumed yet
        if wake_up_landed:
            await asyncio.sleep(0)  # its future resolves; the task itself is still pending
        assert not handed.done()
        handed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handed
        await spin()
        if behind is None:
            assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 0, "waiting": 0}
        else:
            assert behind.done() and behind.exception() is None
            assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 1, "waiting": 0}
            bulkhead.release()
        assert bulkhead.in_flight == 0

    asyncio.run(main())


def test_waiter_on_a_closed_loop_does_not_swallow_the_slot() -> None:
    """A task stranded on a loop that was closed can never resume: its turn is passed on."""
    bulkhead = Bulkhead(1, max_wait=PATIENCE)
    bulkhead.acquire()
    loop = asyncio.new_event_loop()
    stranded = bulkhead.aacquire()
    loop.run_until_complete(asyncio.wait([loop.create_task(stranded)], timeout=0.01))
    assert bulkhead.waiting == 1
    loop.close()
    bulkhead.release()
    assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 0, "waiting": 0}
    stranded.close()  # the coroutine is closed late: it must not give the slot back a second time
    assert bulkhead.in_flight == 0


# --- real concurrency ---------------------------------------------------------------------


def test_sixteen_threads_and_sixteen_tasks_never_exceed_the_limit() -> None:
    limit, rounds, work = 4, 5, 0.02
    bulkhead = Bulkhead(limit, max_wait=60)
    guard = threading.Lock()
    current = peak = done = 0

    def enter() -> None:
        nonlocal current, peak
        with guard:
            current += 1
            peak = max(peak, current)
            assert bulkhead.in_flight <= limit

    def leave() -> None:
        nonlocal current, done
        with guard:
            current -= 1
            done += 1

    def thread_worker() -> None:
        for _ in range(rounds):
            bulkhead.acquire()
            enter()
            time.sleep(work)
            leave()
            bulkhead.release()

    async def task_worker() -> None:
        for _ in range(rounds):
            await bulkhead.aacquire()
            enter()
            await asyncio.sleep(work)
            leave()
            bulkhead.release()

    async def tasks() -> None:
        await asyncio.gather(*(task_worker() for _ in range(16)))

    threads = [start_thread(thread_worker) for _ in range(16)]
    threads.append(start_thread(lambda: asyncio.run(tasks())))
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert done == 32 * rounds
    assert peak == limit  # saturated, never exceeded
    assert bulkhead.snapshot() == {"max_concurrent": limit, "in_flight": 0, "waiting": 0}


# --- the system clock under freezegun -----------------------------------------------------


def test_works_under_freezegun_with_the_system_clock() -> None:
    """Thread waits do not depend on time.monotonic; a task's timeout follows its loop's clock."""
    with freeze_time("2024-01-01") as frozen:
        bulkhead = Bulkhead(1, max_wait=5)
        assert bulkhead.clock is SYSTEM_CLOCK
        assert bulkhead.try_acquire()
        with pytest.raises(BulkheadFull):
            bulkhead.acquire(timeout=0.05)  # returns in real time although time is frozen

        async def main() -> None:
            waiter = asyncio.create_task(bulkhead.aacquire())
            await spin(1)
            assert bulkhead.waiting == 1
            frozen.tick(6)  # past the waiter's 5 s on the loop's (frozen) monotonic clock
            with pytest.raises(BulkheadFull):
                await waiter

        asyncio.run(main())
        assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 1, "waiting": 0}
        bulkhead.release()
        assert bulkhead.in_flight == 0


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_concurrent", [0, -1, True, 1.5, "2", None])
def test_bad_max_concurrent_is_refused(max_concurrent: object) -> None:
    with pytest.raises(ConfigError, match="max_concurrent") as caught:
        Bulkhead(max_concurrent)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert repr(max_concurrent) in str(caught.value)


@pytest.mark.parametrize("max_wait", [-0.1, math.nan, True, "1", None])
def test_bad_max_wait_is_refused(max_wait: object) -> None:
    with pytest.raises(ValueError, match="max_wait"):
        Bulkhead(1, max_wait)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [-1, math.nan, "soon"])
def test_bad_timeout_is_refused_at_the_call_even_with_a_free_slot(timeout: object) -> None:
    bulkhead = Bulkhead(1)
    with pytest.raises(ValueError, match="timeout"):
        bulkhead.acquire(timeout)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        asyncio.run(bulkhead.aacquire(timeout))  # type: ignore[arg-type]
    assert bulkhead.in_flight == 0


def test_infinite_wait_is_allowed() -> None:
    bulkhead = Bulkhead(1, max_wait=math.inf)
    bulkhead.acquire()
    thread = start_thread(bulkhead.acquire)
    wait_for(lambda: bulkhead.waiting, 1)
    bulkhead.release()
    thread.join(PATIENCE)
    assert not thread.is_alive()
    assert bulkhead.in_flight == 1

    async def main() -> None:
        waiter = asyncio.create_task(bulkhead.aacquire())
        await spin(1)
        assert bulkhead.waiting == 1
        bulkhead.release()
        await waiter

    asyncio.run(main())
    assert bulkhead.snapshot() == {"max_concurrent": 1, "in_flight": 1, "waiting": 0}


def test_a_waiter_queuing_during_a_release_is_still_woken() -> None:
    # The lock-free path's one race, forced: a thread queues for a slot exactly between the
    # release's look at the queue (empty) and its putting the token back.
    bulkhead = Bulkhead(1, max_wait=math.inf)
    assert bulkhead.try_acquire()
    granted = threading.Event()

    def waiter() -> None:
        bulkhead.acquire()
        granted.set()

    class RacingTokens(list):  # type: ignore[type-arg]
        def append(self, token: object) -> None:
            threading.Thread(target=waiter, daemon=True).start()
            deadline = time.monotonic() + 10
            while bulkhead.waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.001)  # until the thread is queued, not for time to pass
            assert bulkhead.waiting == 1
            super().append(token)

    bulkhead._free = RacingTokens(bulkhead._free)  # type: ignore[assignment]
    bulkhead.release()
    assert granted.wait(10), "the waiter was never woken: a lost wake-up"
    assert bulkhead.in_flight == 1
    assert bulkhead.waiting == 0


def test_a_release_during_a_waiter_queuing_still_wakes_it() -> None:
    # The same race from the other side: the release runs while the waiter, queuing, looks for
    # a token one last time and finds none.
    bulkhead = Bulkhead(1, max_wait=math.inf)
    assert bulkhead.try_acquire()
    granted = threading.Event()
    misses = 0

    class RacingTokens(list):  # type: ignore[type-arg]
        def pop(self, index: int = -1) -> object:
            nonlocal misses
            if threading.current_thread() is not waiter or self:
                return super().pop(index)
            misses += 1
            if misses == 2:  # try_acquire missed; now _queue misses: release right here
                releaser = threading.Thread(target=bulkhead.release, daemon=True)
                releaser.start()
                releaser.join(0.5)  # it may block on the bulkhead's lock, held by _queue
            raise IndexError("pop from empty list")

    def wait_for_slot() -> None:
        bulkhead.acquire()
        granted.set()

    bulkhead._free = RacingTokens(bulkhead._free)  # type: ignore[assignment]
    waiter = threading.Thread(target=wait_for_slot, daemon=True)
    waiter.start()
    assert granted.wait(10), "the waiter was never woken: a lost wake-up"
    assert misses == 2
    assert bulkhead.in_flight == 1
    assert bulkhead.waiting == 0
