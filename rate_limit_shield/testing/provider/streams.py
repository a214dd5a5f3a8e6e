"""When each event of a streamed answer is written: the head at once, the first token after the
time to first token, each next one a token's interval later, the end with the last token; and
where a stream broken mid-way stops."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Timeline", "timeline"]

Steps = list[list[bytes]]
"""A stream's events by step: its head, then one step per token (the token's event and any
events that end its choice or the stream)."""


class Timeline(NamedTuple):
    """What to write and when: `writes` as (seconds after the head, bytes), the first at 0;
    `tokens` the tokens written before any error."""

    writes: tuple[tuple[float, bytes], ...]
    tokens: int

    @property
    def duration(self) -> float:
        """Seconds from the head to the last write."""
        return self.writes[-1][0]


def timeline(
    steps: Steps, *, first_token: float, interval: float, error: bytes | None, after: int
) -> Timeline:
    """The writes of `steps`, each step at its time; events due at the same time go together.

    With `error`, the stream breaks after its first `after` events (at most all but the last,
    so that it never ends cleanly first): the error is written when the next event was due."""
    events = [(step, event) for step, events in enumerate(steps) for event in events]
    broken_at = len(events)
    if error is not None:
        broken_at = min(after, len(events) - 1)
        events[broken_at:] = [(events[broken_at][0], error)]
    tokens = len({step for step, _ in events[:broken_at] if step > 0})
    writes: list[tuple[float, bytes]] = []
    for step, event in events:
        due = 0.0 if step == 0 else first_token + (step - 1) * interval
        if writes and writes[-1][0] == due:
            writes[-1] = (due, writes[-1][1] + event)
        else:
            writes.append((due, event))
    return Timeline(tuple(writes), tokens)
