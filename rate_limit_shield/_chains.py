"""How much of an over-estimate a limit may give back, late: the chains of its schedule.

A limit's GCRA schedule is one float, its theoretical arrival time `tat`. Each decision j charges
it c_j seconds from s_j, when its call goes (once every limit and the pause allow), moving it to
max(tat, s_j) + c_j. Call the chain of j the value V_j = s_j + c_j + c_(j+1) + ...: where the
schedule would end had the bucket been full when j's call went, whatever came before. A bucket
charged each call's cost when the call goes (a provider's) ends at the greatest chain, and so
does the schedule, the bucket's own history being one more chain.

A reservation n that really cost e seconds less lowers the chains up to its own by e and leaves
those after it alone, since their calls go when they were told to. So the schedule may come back
to max(tat - e, M_n), M_n being the greatest chain of the decisions after n: a refund gives back
min(e, tat - M_n). More would lift the bucket above what a provider charging real usage holds:
once a later call went out, the time it took from the schedule is spent, so the refund of a call
that lasted longer than the bucket takes to fill, or that later calls queued behind, is cut.

A change of rate rescales what each chain has ahead of now, in units: V_j - now becomes
(V_j - now) * ratio. But a queued call goes at its s_j whatever the rate: the seconds before it
are not the bucket's to shorten, only those after it, so when the rate rises (ratio < 1) a chain
whose call is still ahead is rescaled from its s_j instead. A falling rate rescales every chain
from now, which for a queued call is more than needed, never less. Otherwise a later call could
go before the bucket holds it, the calls queued ahead of it having taken what it refills.

`Chains` keeps only the chains that some later decision does not outgrow (their values fall with
their position), as the differences between neighbours: a charge, a refund and a reshape cost
O(1) amortised and a bisection. A chain that outgrows another takes over its bound: it goes no
earlier than any call it outgrew (the start in its `_marks`). At most `KEPT` chains stay: when
more would, the oldest half merge into one with the oldest's value at the newest's position,
which can only give back less.

A reservation given back whole (a cancel) is no call at all; its chain is left as the bound of
the chains it outgrew (its rest, in its `_marks`), which is itself, unless a rising rate
kept its call's place in the schedule: that place is let go with the call.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import pairwise

__all__ = ["KEPT", "Chains"]

KEPT = 64
"""Chains kept per limit (at least 2): decisions whose refunds stay exact; older ones get back
less."""

_NONE = -math.inf
"""The start of a chain no queued call bounds (the bucket's history, a provider's floor)."""

_FREE = (_NONE, 0.0, _NONE)
"""The marks of a chain no queued call bounds (see `Chains._marks`)."""


class Chains:
    """The chains of one limit's schedule that may still bound a refund; `head` is its tat."""

    __slots__ = ("_gaps", "_last", "_marks", "_positions", "head")

    def __init__(self, position: int, tat: float) -> None:
        self._positions = [position]  # of the decision each chain starts at, increasing
        self._gaps: list[float] = []  # chain i's value minus chain i + 1's, each > 0
        # Of each chain: the latest start of a call it bounds, its value minus its rest's
        # (>= 0), and the latest start of a call its rest bounds.
        self._marks = [_FREE]
        self._last = tat  # the newest chain's value
        self.head = tat  # the oldest (and greatest) chain's value: the schedule's tat

    def charge(self, position: int, now: float, seconds: float, start: float) -> float:
        """Decision `position` charges `seconds` at `now`, its call going at `start`; returns
        the new tat."""
        if self.head <= now:  # every chain has run out: the bucket is full, history is moot
            self._reset(position, start + seconds, start)
            return self.head
        # A call that goes after the schedule ends (a pause, another limit) is charged from then.
        self.head = (self.head if self.head > start else start) + seconds
        self._last += seconds
        value = min(start + seconds, self.head)
        positions, gaps, marks = self._positions, self._gaps, self._marks
        outgrown = _NONE  # the latest start of the chains the new one outgrows
        while positions and self._last <= value:  # the new chain outgrows the newest ones
            positions.pop()
            mark = marks.pop()
            if mark[0] > outgrown:
                outgrown = mark[0]
            if not gaps:
                break
            self._last += gaps.pop()
        if positions:
            gaps.append(self._last - value)
        positions.append(position)
        marks.append((start if start > outgrown else outgrown, 0.0, outgrown))
        self._last = value
        if len(positions) > KEPT:
            self._merge_oldest(len(positions) - KEPT // 2)
        return self.head

    def refund(self, position: int, seconds: float, whole: bool = False) -> float:
        """Give back up to `seconds` charged by decision `position` (`whole`: all it charged,
        so its call is none of this limit's); the new tat."""
        positions, gaps = self._positions, self._gaps
        after = bisect_right(positions, position)  # the first chain of a later decision
        if after == 0:  # a later chain is the greatest: nothing can come back
            return self.head
        self.head -= seconds
        if after == len(positions):  # no later chain: all of it
            self._last -= seconds
        else:
            gaps[after - 1] -= seconds
        own = after - 1
        if whole and positions[own] == position and self._marks[own][1] > 0.0:
            _, rest, rest_start = self._marks[own]
            self._lower(own, rest)  # the place its call had goes with it
            self._marks[own] = (rest_start, 0.0, rest_start)
        while 0 < after < len(positions) and gaps[after - 1] <= 0.0:  # it no longer counts
            self._fold(after - 1)
            after -= 1
        return self.head

    def floor(self, position: int, tat: float) -> None:
        """The schedule reaches `tat`, later than it did, whatever came before (a provider's
        report): no refund of an earlier decision can bring it back."""
        self._reset(position, tat, _NONE)

    def scale(self, now: float, ratio: float) -> float:
        """Stretch what lies ahead of `now` by `ratio`, as a limit's rate changes, keeping the
        start of every call still ahead when the rate rises; the new tat."""
        positions, gaps, marks = self._positions, self._gaps, self._marks
        while positions and self._last <= now:  # chains that have run out bound nothing
            positions.pop()
            marks.pop()
            if not gaps:
                break
            self._last += gaps.pop()
        if not positions:  # the bucket is full: its history is moot
            return self.head
        values = [self.head]
        for gap in gaps:
            values.append(values[-1] - gap)
        for index, (start, rest, rest_start) in enumerate(marks):
            value = values[index]
            values[index] = _scaled(value, start, now, ratio)
            rest = values[index] - _scaled(value - rest, rest_start, now, ratio)
            marks[index] = (start, rest if rest > 0.0 else 0.0, rest_start)
        for index in range(len(values) - 2, -1, -1):  # a later chain may outgrow it now
            if values[index] <= values[index + 1]:
                self._take_over(index, values[index + 1] - values[index])
                del positions[index], values[index]
        self.head, self._last = values[0], values[-1]
        self._gaps = [older - newer for older, newer in pairwise(values)]
        return self.head

    def _reset(self, position: int, tat: float, start: float) -> None:
        """One chain, of decision `position`, whose call goes at `start`."""
        self.head = self._last = tat
        self._positions = [position]
        self._gaps = []
        self._marks = [(start, 0.0, _NONE)]

    def _merge_oldest(self, count: int) -> None:
        """Merge the `count` oldest chains into one: the oldest's value, the newest's place."""
        gaps, marks = self._gaps, self._marks
        gaps[count - 1] = sum(gaps[:count])
        del gaps[: count - 1], self._positions[: count - 1]
        start = max(mark[0] for mark in marks[:count])
        del marks[: count - 1]
        marks[0] = (start, 0.0, start)  # no single call's chain: no rest of its own

    def _lower(self, index: int, seconds: float) -> None:
        """Lower the value of chain `index` alone."""
        if index == 0:
            self.head -= seconds
        else:
            self._gaps[index - 1] += seconds
        if index == len(self._positions) - 1:
            self._last -= seconds
        else:
            self._gaps[index] -= seconds

    def _fold(self, index: int) -> None:
        """Chain `index` no longer exceeds the next one, which takes over its bound."""
        gaps = self._gaps
        self._take_over(index, -gaps[index])
        if index == 0:
            self.head -= gaps[0]  # the next chain is the greatest now
            del gaps[0]
        else:
            gaps[index - 1] += gaps[index]
            del gaps[index]
        del self._positions[index]

    def _take_over(self, index: int, margin: float) -> None:
        """Chain `index + 1`, `margin` seconds above chain `index`, bounds it from now on: it
        starts no earlier, and so does its rest, which is no lower. Chain `index`'s marks go."""
        marks = self._marks
        start = marks.pop(index)[0]
        newer_start, rest, rest_start = marks[index]  # chain index + 1's, once popped
        marks[index] = (max(newer_start, start), min(rest, margin), max(rest_start, start))

    def __len__(self) -> int:
        return len(self._positions)


def _scaled(value: float, start: float, now: float, ratio: float) -> float:
    """A chain's `value` once what lies ahead of now is stretched by `ratio`: from its `start`
    when the rate rises and its call is still ahead, else from now."""
    anchor = start if ratio < 1.0 and start > now else now
    return anchor + (value - anchor) * ratio if value > anchor else value
