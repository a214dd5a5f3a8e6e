"""How much of an over-estimate a limit may give back, late: the chains of its schedule.

A limit's GCRA schedule is one float, its theoretical arrival time `tat`. Each decision j charges
it c_j seconds; its call goes at s_j, once the limit allows (`tat - tau`, or at once). Call the
chain of j the value V_j = s_j + c_j + c_(j+1) + ...: where the schedule would end had the bucket
been full when j's call went, whatever came before. A bucket charged each call's cost when the
call goes (a provider's) ends at the greatest chain, and so does the schedule, the bucket's own
history being one more chain.

A reservation n that really cost e seconds less lowers the chains up to its own by e and leaves
those after it alone, since their calls go when they were told to. So the schedule may come back
to max(tat - e, M_n), M_n being the greatest chain of the decisions after n: a refund gives back
min(e, tat - M_n). More would lift the bucket above what a provider charging real usage holds:
once a later call went out, the time it took from the schedule is spent, so the refund of a call
that lasted longer than the bucket takes to fill, or that later calls queued behind, is cut.

`Chains` keeps only the chains that some later decision does not outgrow (their values fall with
their position), as the differences between neighbours: a charge, a refund and a reshape cost
O(1) amortised and a bisection. At most `KEPT` chains stay: the two oldest merge into one with the
older's value at the newer's position, which can only give back less, never more.
"""

from __future__ import annotations

from bisect import bisect_right

__all__ = ["KEPT", "Chains"]

KEPT = 64
"""Chains kept per limit (at least 2): decisions whose refunds stay exact; older ones get back
less."""


class Chains:
    """The chains of one limit's schedule that may still bound a refund; `head` is its tat."""

    __slots__ = ("_gaps", "_last", "_positions", "head")

    def __init__(self, position: int, tat: float) -> None:
        self._positions = [position]  # of the decision each chain starts at, increasing
        self._gaps: list[float] = []  # chain i's value minus chain i + 1's, each > 0
        self._last = tat  # the newest chain's value
        self.head = tat  # the oldest (and greatest) chain's value: the schedule's tat

    def charge(self, position: int, now: float, seconds: float, start: float) -> float:
        """Decision `position` charges `seconds` at `now`, its call going at `start`; returns
        the new tat."""
        if self.head <= now:  # every chain has run out: the bucket is full, history is moot
            self.head = self._last = now + seconds
            self._positions = [position]
            self._gaps = []
            return self.head
        self.head += seconds
        self._last += seconds
        value = min(start + seconds, self.head)
        positions, gaps = self._positions, self._gaps
        while positions and self._last <= value:  # the new chain outgrows the newest ones
            positions.pop()
            if not gaps:
                break
            self._last += gaps.pop()
        if positions:
            gaps.append(self._last - value)
        positions.append(position)
        self._last = value
        if len(positions) > KEPT:  # merge the two oldest: the older's value, the newer's place
            del positions[0]
            gaps[1] += gaps[0]
            del gaps[0]
        return self.head

    def refund(self, position: int, seconds: float) -> float:
        """Give back up to `seconds` charged by decision `position`; the new tat."""
        positions, gaps = self._positions, self._gaps
        after = bisect_right(positions, position)  # the first chain of a later decision
        if after == 0:  # a later chain is the greatest: nothing can come back
            return self.head
        self.head -= seconds
        if after == len(positions):  # no later chain: all of it
            self._last -= seconds
            return self.head
        gaps[after - 1] -= seconds
        while after > 0 and gaps[after - 1] <= 0.0:  # chain after - 1 no longer counts
            if after == 1:
                self.head -= gaps[0]  # the next chain is the greatest now
                del gaps[0]
            else:
                gaps[after - 2] += gaps[after - 1]
                del gaps[after - 1]
            del positions[after - 1]
            after -= 1
        return self.head

    def floor(self, position: int, tat: float) -> None:
        """The schedule reaches `tat`, later than it did, whatever came before (a provider's
        report): no refund of an earlier decision can bring it back."""
        self.head = self._last = tat
        self._positions = [position]
        self._gaps = []

    def scale(self, now: float, ratio: float) -> None:
        """Stretch what lies ahead of `now` by `ratio`, as a limit's rate changes."""
        positions, gaps = self._positions, self._gaps
        while positions and self._last <= now:  # chains that have run out bound nothing
            positions.pop()
            if not gaps:
                return
            self._last += gaps.pop()
        if positions:
            self._gaps = [gap * ratio for gap in gaps]
            self.head = now + (self.head - now) * ratio
            self._last = now + (self._last - now) * ratio

    def __len__(self) -> int:
        return len(self._positions)
