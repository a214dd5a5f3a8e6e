"""What a provider's response headers say: when to retry, and how much of each quota is left.

Providers answer every call (errors included) with their view of the key's buckets, and a 429
with how long to wait. Reading both lets the shield pause exactly as long as asked and hold its
local buckets to the provider's. Headers are untrusted input: a malformed one is ignored, never
raised, and loses only itself; every number handed out is finite and >= 0. Durations longer than
2**31 seconds are clamped to it, as RFC 9111 (1.2.2) does for delta-seconds that overflow. Only
the first `MAX_PAIRS` headers of a container are read, so that an endless one cannot hang a call.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.message import Message
from itertools import islice

__all__ = ["MAX_PAIRS", "header", "parse_retry_after", "parse_duration", "Quota", "RateLimitInfo"]

MAX_PAIRS = 1000
"""Headers read from one container at most: far more than any response carries."""

_Parser = Callable[[str], "float | None"]

_MAX_SECONDS = float(2**31)
_DAY = 86_400.0
_EPOCH_SECONDS = 1e9  # a bare reset this large is a Unix timestamp (2001 on), not a delay
_EPOCH_MILLISECONDS = 1e12

_FLAGS = re.IGNORECASE | re.ASCII
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?", _FLAGS)
_DURATION_PART = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(h|ms|m|s|us|\u00b5s|\u03bcs|ns)"
_DURATION = re.compile(f"(?:{_DURATION_PART})+", _FLAGS)
_DURATION_PARTS = re.compile(_DURATION_PART, _FLAGS)
_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ns": 1e-9,
}

# RFC 9110 (5.6.7) HTTP-date: IMF-fixdate, the obsolete RFC 850 form and asctime. The weekday is
# redundant and not checked; GMT may also be spelled UTC.
_IMF_FIXDATE = re.compile(
    r"(?:[a-z]{3},\s*)?(\d{1,2})\s+([a-z]{3})\s+(\d{4})\s+(\d{2}):(\d{2}):(\d{2})\s+(?:gmt|utc)",
    _FLAGS,
)
_RFC850_DATE = re.compile(
    r"(?:[a-z]+,\s*)?(\d{1,2})-([a-z]{3})-(\d{2}|\d{4})\s+(\d{2}):(\d{2}):(\d{2})\s+(?:gmt|utc)",
    _FLAGS,
)
_ASCTIME_DATE = re.compile(
    r"(?:[a-z]{3}\s+)?([a-z]{3})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})\s+(\d{4})", _FLAGS
)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[t ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(z|[+-]\d{2}:?\d{2})", _FLAGS
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}

# Where each provider reports each bucket, in order of preference: OpenAI, Azure OpenAI and Groq
# (`x-ratelimit-*-requests|tokens`, resets as Go durations like "6m0s"; Groq's requests are per
# day), Anthropic
# (`anthropic-ratelimit-*`, resets as RFC 3339 times), then Together (`x-ratelimit-*` for
# requests with the reset in seconds, `x-tokenlimit-*` for tokens, no token reset).
_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "requests": (
        ("x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit", "x-ratelimit-limit"),
        (
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-requests-remaining",
            "x-ratelimit-remaining",
        ),
        ("x-ratelimit-reset-requests", "anthropic-ratelimit-requests-reset", "x-ratelimit-reset"),
    ),
    "tokens": (
        ("x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit", "x-tokenlimit-limit"),
        (
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-remaining",
            "x-tokenlimit-remaining",
        ),
        ("x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-reset"),
    ),
    "input_tokens": (
        ("anthropic-ratelimit-input-tokens-limit",),
        ("anthropic-ratelimit-input-tokens-remaining",),
        ("anthropic-ratelimit-input-tokens-reset",),
    ),
    "output_tokens": (
        ("anthropic-ratelimit-output-tokens-limit",),
        ("anthropic-ratelimit-output-tokens-remaining",),
        ("anthropic-ratelimit-output-tokens-reset",),
    ),
}


def header(headers: object, name: str) -> str | None:
    """First value of header `name`, case-insensitive, from a Mapping (dict, httpx/httpx2 Headers),
    an iterable of (name, value) pairs, or an email.message.Message; None when absent or on any
    odd input. Names and values may be bytes (decoded as Latin-1); values are stripped."""
    if not isinstance(name, str):
        return None
    return _index(headers).get(name.lower())


def parse_retry_after(headers: object, now: float | None = None) -> float | None:
    """Seconds to wait before retrying, as the server asked, or None when it did not say usably.

    `retry-after-ms` first (as the OpenAI and Anthropic SDKs read it), then `Retry-After` as
    delta-seconds (an int or, leniently, a float) or an HTTP-date. `now` is the wall-clock time
    (epoch seconds) HTTP-dates are measured from, `time.time()` by default; a date in the past
    gives 0.0. Negative, empty or garbage values give None. Never raises.
    """
    return _retry_after(_index(headers), _wall(now))


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration ("6m0s", "1.5s", "20ms", "2m59.56s", "1h2m3s") or a bare
    number of seconds ("0.5"), as OpenAI and Groq send their resets; None when it is not one
    (negative, empty, garbage)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    plain = _number(text)
    if plain is not None:
        return _clamp(plain)
    if _DURATION.fullmatch(text) is None:
        return None
    total = 0.0
    for amount, unit in _DURATION_PARTS.findall(text):
        total += float(amount) * _UNIT_SECONDS[unit.lower()]
    return _clamp(total)


@dataclass(frozen=True, slots=True)
class Quota:
    """One provider bucket as the headers describe it; a field the headers left out is None."""

    limit: float | None
    """How much the bucket holds when full."""
    remaining: float | None
    """How much is left now."""
    reset: float | None
    """Seconds from now until it is full again (>= 0)."""
    per_seconds: float | None = None
    """The window `limit` is counted over, where the provider's headers are known to count over
    one of their own (Groq's requests: a day); None: the key's own window for the unit."""


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """Everything a response's headers say about the key's quotas and about retrying."""

    requests: Quota | None = None
    """The requests bucket, if the headers describe one."""
    tokens: Quota | None = None
    """The tokens bucket (input and output together), if described."""
    input_tokens: Quota | None = None
    """The input tokens bucket (Anthropic's), if described."""
    output_tokens: Quota | None = None
    """The output tokens bucket (Anthropic's), if described."""
    should_retry: bool | None = None
    """`x-should-retry`, which the official SDKs obey; None when absent."""
    retry_after: float | None = None
    """Seconds to wait, as `parse_retry_after` reads the same headers; None when absent."""

    @classmethod
    def from_headers(cls, headers: object, now: float | None = None) -> RateLimitInfo:
        """Read OpenAI, Azure OpenAI, Groq, Together and Anthropic rate-limit headers (Groq's
        requests quota counted per day, see `Quota.per_seconds`).

        Resets may be Go durations or seconds ("6m0s", "7.66s", "20ms", "1"), RFC 3339 or HTTP
        dates, or bare numbers of at least 1e9, read as Unix timestamps (in milliseconds from
        1e12) as some OpenAI-compatible gateways send them. `now` is as for
        `parse_retry_after`. A header that is present but malformed counts as absent. Never
        raises.
        """
        index = _index(headers)
        wall = _wall(now)
        quotas = {unit: _quota(index, sources, wall) for unit, sources in _SOURCES.items()}
        requests = quotas["requests"]
        if requests is not None and _from_groq(index):
            quotas["requests"] = replace(requests, per_seconds=_DAY)
        flag = index.get("x-should-retry", "").lower()
        return cls(
            **quotas,
            should_retry=True if flag == "true" else False if flag == "false" else None,
            retry_after=_retry_after(index, wall),
        )

    def quotas(self) -> dict[str, Quota]:
        """The buckets the headers described, by unit name."""
        found = {
            "requests": self.requests,
            "tokens": self.tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
        return {unit: quota for unit, quota in found.items() if quota is not None}

    def reset_hint(self) -> float | None:
        """How long a throttle without Retry-After lasts, by the resets: the longest reset of the
        buckets reported empty (remaining below 1), else of every bucket reported, since one of
        them turned the request away; None when no reset was given."""
        every: list[float] = []
        empty: list[float] = []
        for quota in self.quotas().values():
            if quota.reset is not None:
                every.append(quota.reset)
                if quota.remaining is not None and quota.remaining < 1:
                    empty.append(quota.reset)
        return max(empty or every, default=None)

    def __bool__(self) -> bool:
        """False when the headers said nothing at all."""
        return bool(self.quotas()) or self.should_retry is not None or self.retry_after is not None


def _from_groq(index: dict[str, str]) -> bool:
    """Whether Groq sent these headers: it counts `x-ratelimit-*-requests` per day where OpenAI,
    which shares the names, counts per minute. Its edge adds `x-groq-*` headers (`x-groq-region`)
    to every answer. Nothing else tells: `openai-organization` is missing from every
    OpenAI-compatible server's answers too, and a daily bucket barely used is full again in
    seconds, so its reset looks like a minute's."""
    return any(name.startswith("x-groq-") for name in index)


def _index(headers: object) -> dict[str, str]:
    """Lower-cased name -> first value, of the first `MAX_PAIRS` pairs; empty for anything that
    is not a headers container. A container that fails halfway keeps what it gave before."""
    index: dict[str, str] = {}
    if headers is None or isinstance(headers, (str, bytes, bytearray)):
        return index
    with contextlib.suppress(Exception):  # a foreign container that fails to iterate
        for pair in islice(_pairs(headers), MAX_PAIRS):
            entry = _entry(pair)
            if entry is not None:
                index.setdefault(*entry)
    return index


def _entry(pair: object) -> tuple[str, str] | None:
    """A (lower-cased name, value) pair as text; None for anything else, whatever it raises."""
    try:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            return None
        name, value = _text(pair[0]), _text(pair[1])
        return None if name is None or value is None else (name.lower(), value)
    except Exception:  # an int past the digit limit, a pair that cannot be read: this one only
        return None


def _pairs(headers: object) -> Iterable[object]:
    """Every (name, value) pair, duplicates included, so the first value can win."""
    if isinstance(headers, Message):
        return headers.items()
    multi_items = getattr(headers, "multi_items", None)  # httpx, httpx2, starlette
    if callable(multi_items):
        pairs: Iterable[object] = multi_items()
        return pairs
    if isinstance(headers, Mapping):
        return headers.items()
    if isinstance(headers, Iterable):
        return headers
    return ()


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("latin-1").strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _number(text: str) -> float | None:
    """A non-negative decimal number (exponent allowed); inf when it overflows."""
    return float(text) if _NUMBER.fullmatch(text) else None


def _clamp(seconds: float) -> float | None:
    """A usable delay: None unless >= 0 (NaN included), at most 2**31 s."""
    return min(seconds, _MAX_SECONDS) if seconds >= 0.0 else None


def _wall(now: object) -> float | None:
    """The wall-clock time dates are measured from; None when the caller's `now` is unusable."""
    if now is None:
        return time.time()
    if isinstance(now, (int, float)) and not isinstance(now, bool) and math.isfinite(now):
        return float(now)
    return None


def _until(epoch: float | None, wall: float | None) -> float | None:
    """Seconds from `wall` to `epoch`, 0.0 when it has passed."""
    if epoch is None or wall is None:
        return None
    return _clamp(max(0.0, epoch - wall))


def _retry_after(index: dict[str, str], wall: float | None) -> float | None:
    milliseconds = index.get("retry-after-ms")
    if milliseconds is not None:
        value = _number(milliseconds)
        if value is not None:
            return _clamp(value / 1000.0)
    text = index.get("retry-after")
    if text is None:
        return None
    value = _number(text)
    if value is not None:
        return _clamp(value)
    return _until(_http_date(text, wall), wall)


def _quota(
    index: dict[str, str],
    sources: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
    wall: float | None,
) -> Quota | None:
    limits, remainings, resets = sources
    limit = _first(index, limits, _count)
    remaining = _first(index, remainings, _count)
    reset = _first(index, resets, lambda text: _reset(text, wall))
    if limit is None and remaining is None and reset is None:
        return None
    return Quota(limit, remaining, reset)


def _first(index: dict[str, str], names: tuple[str, ...], parse: _Parser) -> float | None:
    """The first of `names` that is present and parses."""
    for name in names:
        text = index.get(name)
        if text is not None:
            value = parse(text)
            if value is not None:
                return value
    return None


def _count(text: str) -> float | None:
    value = _number(text)
    return value if value is not None and math.isfinite(value) else None


def _reset(text: str, wall: float | None) -> float | None:
    plain = _number(text)
    if plain is not None and plain >= _EPOCH_SECONDS:
        return _until(plain / 1000.0 if plain >= _EPOCH_MILLISECONDS else plain, wall)
    seconds = parse_duration(text)
    if seconds is not None:
        return seconds
    epoch = _rfc3339(text)
    return _until(epoch if epoch is not None else _http_date(text, wall), wall)


def _rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 time such as "2024-05-01T12:00:30.5Z" or "...+02:00"."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    epoch = _epoch(int(year), int(month), int(day), int(hour), int(minute), int(second))
    if epoch is None:
        return None
    if zone.lower() != "z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        epoch -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return epoch + (float(fraction) if fraction else 0.0)


def _http_date(text: str, wall: float | None) -> float | None:
    """Epoch seconds of an HTTP-date in any of its three forms."""
    if match := _IMF_FIXDATE.fullmatch(text) or _RFC850_DATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
    elif match := _ASCTIME_DATE.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    number = _MONTHS.get(month.lower())
    full_year = _full_year(int(year), wall) if len(year) == 2 else int(year)
    if number is None or full_year is None:
        return None
    return _epoch(full_year, number, int(day), int(hour), int(minute), int(second))


def _full_year(two_digits: int, wall: float | None) -> int | None:
    """RFC 9110: a two-digit year more than 50 years ahead is in the previous century."""
    if wall is None:
        return None
    try:
        current = datetime.fromtimestamp(wall, timezone.utc).year
    except (OverflowError, OSError, ValueError):
        return None
    year = current - current % 100 + two_digits
    return year - 100 if year > current + 50 else year


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    """Epoch seconds of a UTC time; None for an impossible one. A leap second 60 counts as 59."""
    try:
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=timezone.utc)
    except ValueError:
        return None
    return moment.timestamp()
