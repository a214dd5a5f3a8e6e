"""Streams through the shield: retried only before the first item, held until they end.

A call that returns a generator, an async generator or an SDK stream (a class named `Stream` or
`AsyncStream`, as the OpenAI and Anthropic SDKs and their kin name theirs, or litellm's
`CustomStreamWrapper`, read either way) has not finished when it returns. The shield takes the
first item inside the attempt, so that a stream failing before it delivers anything is retried
like any failed call, then hands the caller a guard that holds the breaker permit and the
bulkhead slot until the stream ends, fails or is closed, and reports that end once. Other
iterators (files, cursors) are plain results: taking an item from them would change what the
caller reads.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from types import AsyncGeneratorType, GeneratorType
from typing import TYPE_CHECKING, Any

import wrapt

from ._bounded import remember

if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:
    _Proxy = wrapt.ObjectProxy

__all__ = [
    "PLAIN",
    "SYNC",
    "ASYNC",
    "BOTH",
    "END",
    "KINDS",
    "OnEnd",
    "Track",
    "kind_of",
    "first_item",
    "afirst_item",
]

PLAIN, SYNC, ASYNC = 1, 2, 4  # bits, all true, so that `KINDS.get(cls) or kind_of(cls)` works
BOTH = SYNC | ASYNC
"""A stream class read either way (litellm's `CustomStreamWrapper`): a sync call's answer is a
sync stream, an async call's an async one; test a kind with `kind & SYNC` or `kind & ASYNC`."""
END: Any = object()
"""What `first_item` returns for a stream that ended before its first item."""

KINDS: dict[type, int] = {}
"""What `kind_of` learnt, by class: bounded, since a program may make a result class per call."""
_GENERATORS: dict[type, int] = {GeneratorType: SYNC, AsyncGeneratorType: ASYNC}
OnEnd = Callable[[BaseException | None, Any], BaseException | None]
"""Told once how a stream ended (its error or None, and its last item or what `Track` made of the
items); may return an error to raise instead of the stream's own."""
Track = Callable[[Any, Any], Any]
"""Folds each item into what the stream's end is told instead of its last item: `(so_far, item)`."""


def kind_of(cls: type) -> int:
    """PLAIN, SYNC or ASYNC for a result's class, learnt once per class."""
    kind = KINDS.get(cls)
    if kind is None:
        kind = _GENERATORS.get(cls) or _sdk_stream_kind(cls)
        remember(KINDS, cls, kind)
    return kind


def _sdk_stream_kind(cls: type) -> int:
    names = {base.__name__ for base in cls.__mro__}
    if "Stream" in names and hasattr(cls, "__next__"):
        return SYNC
    if "AsyncStream" in names and hasattr(cls, "__anext__"):
        return ASYNC
    if "CustomStreamWrapper" in names and hasattr(cls, "__next__") and hasattr(cls, "__anext__"):
        return BOTH
    return PLAIN


def first_item(stream: Iterator[Any]) -> Any:
    """The stream's first item, or END; a stream that fails here is closed."""
    try:
        return next(stream)
    except StopIteration:
        return END
    except BaseException:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        raise


async def afirst_item(stream: AsyncIterator[Any]) -> Any:
    """The async stream's first item, or END; a stream that fails here is closed."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return END
    except BaseException:
        await _aclose(stream)
        raise


async def _aclose(stream: object) -> None:
    """Close an async stream: `aclose()` for async generators, `close()` for SDK streams."""
    close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
    if close is not None:
        closing = close()
        if inspect.isawaitable(closing):
            await closing


class _Guard(_Proxy):
    """Proxies the stream (its attributes stay reachable) and reports its end exactly once."""

    def __init__(
        self, stream: object, first: Any, on_end: OnEnd, track: Track | None = None
    ) -> None:
        super().__init__(stream)
        self._self_first = first
        self._self_last: Any = None
        self._self_on_end: OnEnd | None = on_end
        self._self_track = track

    def _self_take_first(self) -> Any:
        first = self._self_first
        self._self_first = END
        self._self_saw(first)
        return first

    def _self_saw(self, item: Any) -> None:
        track = self._self_track
        self._self_last = item if track is None else track(self._self_last, item)

    def _self_end(self, error: BaseException | None) -> BaseException | None:
        on_end, self._self_on_end = self._self_on_end, None
        if on_end is None:
            return None
        return on_end(error, self._self_last)

    def _self_stopped(self, stop: BaseException) -> BaseException:
        """Report how the stream stopped; returns what to raise: `stop` itself, or the error
        the shield raises instead of a failure."""
        if isinstance(stop, (StopIteration, StopAsyncIteration)):
            self._self_end(None)
            return stop
        replacement = self._self_end(stop)
        if replacement is None:
            return stop
        replacement.__cause__ = stop
        return replacement

    def __del__(self) -> None:
        # A stream dropped before its end has ended: give back what it holds.
        if self._self_on_end is not None:
            self._self_end(None)


class GuardedStream(_Guard):
    """A guarded synchronous stream."""

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> Any:
        if self._self_first is not END:
            return self._self_take_first()
        try:
            item = next(self.__wrapped__)
        except BaseException as stop:
            raise self._self_stopped(stop)  # noqa: B904 - the stream's own error, or its cause
        self._self_saw(item)
        return item

    def close(self) -> None:
        try:
            close = getattr(self.__wrapped__, "close", None)
            if close is not None:
                close()
        finally:
            self._self_end(None)

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class GuardedAsyncStream(_Guard):
    """A guarded asynchronous stream."""

    def __aiter__(self) -> GuardedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        if self._self_first is not END:
            return self._self_take_first()
        try:
            item = await self.__wrapped__.__anext__()
        except BaseException as stop:
            raise self._self_stopped(stop)  # noqa: B904 - the stream's own error, or its cause
        self._self_saw(item)
        return item

    async def aclose(self) -> None:
        try:
            await _aclose(self.__wrapped__)
        finally:
            self._self_end(None)

    close = aclose  # the name SDK async streams use

    async def __aenter__(self) -> GuardedAsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
