"""Provider headers: Retry-After in all its forms, durations, and the rate-limit headers of
OpenAI, Azure OpenAI, Groq, Together and Anthropic, from every kind of headers container."""

from __future__ import annotations

import email.utils
import itertools
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.message import Message

import httpx2
import pytest
import requests.structures
from hypothesis import given
from hypothesis import strategies as st

from rate_limit_shield.llm.headers import (
    MAX_PAIRS,
    Quota,
    RateLimitInfo,
    header,
    parse_duration,
    parse_retry_after,
)

# Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
RFC_EXAMPLE = datetime(1994, 11, 6, 8, 49, 37, tzinfo=timezone.utc).timestamp()
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
MAX_SECONDS = float(2**31)


def message(*pairs: tuple[str, str]) -> Message:
    headers = Message()
    for name, value in pairs:
        headers[name] = value
    return headers


NAMES_WITHOUT_RETRY_AFTER = st.one_of(
    st.sampled_from(["x-ratelimit-limit-tokens", "x-ratelimit-reset-requests", "x-should-retry"]),
    st.text(max_size=20).filter(lambda name: not name.strip().lower().startswith("retry-after")),
    st.integers(),
    st.just(10**5000),
)
ODD_VALUES = st.one_of(
    st.text(max_size=20),
    st.binary(max_size=20),
    st.integers(),
    st.just(10**5000),
    st.floats(),
    st.none(),
    st.builds(object),
)


# --- header(): every container, case-insensitive, first value ---------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "5"},
        {"retry-after": "5"},
        {"RETRY-AFTER": " 5 "},
        httpx2.Headers({"Retry-After": "5"}),
        requests.structures.CaseInsensitiveDict({"Retry-After": "5"}),
        [("Retry-After", "5")],
        (("retry-after", "5"),),
        [(b"retry-after", b"5")],
        [["Retry-After", "5"]],
        message(("Retry-After", "5")),
        {"retry-after": 5},
    ],
    ids=[
        "dict",
        "dict-lower",
        "dict-upper-padded",
        "httpx2",
        "requests",
        "list-of-pairs",
        "tuple-of-pairs",
        "bytes-pairs",
        "list-of-lists",
        "email-message",
        "int-value",
    ],
)
def test_header_reads_every_container_case_insensitively(headers):
    assert header(headers, "retry-after") == "5"
    assert header(headers, "Retry-After") == "5"


def test_header_reads_a_one_shot_iterator_of_pairs():
    assert header(iter([("X-Other", "1"), ("Retry-After", "5")]), "RETRY-AFTER") == "5"


@pytest.mark.parametrize(
    "headers",
    [
        [("Retry-After", "5"), ("retry-after", "7")],
        httpx2.Headers([("Retry-After", "5"), ("retry-after", "7")]),
        message(("Retry-After", "5"), ("retry-after", "7")),
    ],
    ids=["pairs", "httpx2", "email-message"],
)
def test_header_gives_the_first_of_repeated_values(headers):
    assert header(headers, "RETRY-AFTER") == "5"


class ExplodingHeaders:
    def __iter__(self):
        raise RuntimeError("a broken container")


class ExplodingMapping(dict):
    def items(self):
        raise RuntimeError("a broken mapping")


@pytest.mark.parametrize(
    "headers",
    [
        None,
        "retry-after: 5",
        b"retry-after: 5",
        5,
        object(),
        ExplodingHeaders(),
        ExplodingMapping({"retry-after": "5"}),
        [("retry-after",)],
        [("retry-after", "5", "extra")],
        ["retry-after"],
        [(None, "5")],
        [("retry-after", None)],
        {"retry-after": ["5"]},
        {"retry-after": True},
    ],
)
def test_header_is_none_for_anything_that_is_not_a_header(headers):
    assert header(headers, "retry-after") is None


def test_header_skips_malformed_pairs_and_keeps_the_good_ones():
    assert header([("x",), ("Retry-After", "5")], "retry-after") == "5"


def test_header_with_a_name_that_is_not_a_string_is_none():
    assert header({"5": "x"}, 5) is None  # type: ignore[arg-type]


HUGE = 10**5000  # past Python's int-to-str digit limit: str() of it raises ValueError


class PoisonedPair(tuple):
    """A pair whose items cannot be read."""

    def __getitem__(self, index):
        raise RuntimeError("a pair that cannot be read")


def pairs_then_failure():
    yield ("Retry-After", "5")
    raise RuntimeError("a container that breaks halfway")


@pytest.mark.parametrize(
    "headers",
    [
        {"x-request-id": HUGE, "retry-after": 5},
        [(HUGE, "1"), ("retry-after", "5")],
        [("x-ratelimit-limit-tokens", HUGE), ("retry-after", "5")],
        [PoisonedPair(("x", "y")), ("retry-after", "5")],
        pairs_then_failure(),
    ],
    ids=["huge-int-value", "huge-int-name", "huge-int-limit", "unreadable-pair", "broken-later"],
)
def test_one_bad_header_loses_only_itself(headers):
    info = RateLimitInfo.from_headers(headers, now=NOW)
    assert info.retry_after == 5.0


def test_a_huge_int_value_loses_only_its_own_header():
    headers = {"x-ratelimit-remaining-tokens": HUGE, "x-ratelimit-remaining-requests": 7}
    assert RateLimitInfo.from_headers(headers).requests == Quota(None, 7.0, None)
    assert header(headers, "x-ratelimit-remaining-requests") == "7"


def finishes(read: Callable[[], object]) -> object:
    """What `read()` returns, failing the test instead of hanging if it never does."""
    answers: list[object] = []
    worker = threading.Thread(target=lambda: answers.append(read()), daemon=True)
    worker.start()
    worker.join(timeout=30.0)
    assert answers, "reading the headers never finished"
    return answers[0]


def test_an_endless_iterable_of_headers_is_read_only_so_far():
    endless = itertools.repeat(("a", "b"))
    assert finishes(lambda: parse_retry_after(endless)) is None
    assert not finishes(lambda: RateLimitInfo.from_headers(itertools.repeat(("a", "b"))))
    assert finishes(lambda: header(itertools.repeat(("a", "b")), "a")) == "b"
    found = itertools.chain([("retry-after", "5")], itertools.repeat(("a", "b")))
    assert finishes(lambda: parse_retry_after(found)) == 5.0
    late = itertools.chain(itertools.repeat(("a", "b"), MAX_PAIRS), [("retry-after", "5")])
    assert parse_retry_after(late) is None  # past the first MAX_PAIRS: not read


@given(
    st.lists(st.tuples(NAMES_WITHOUT_RETRY_AFTER, ODD_VALUES), max_size=12),
    st.integers(0, 12),
)
def test_a_good_retry_after_survives_any_other_header(others, where):
    headers = [*others[:where], ("Retry-After", "5"), *others[where:]]
    assert parse_retry_after(headers, now=NOW) == 5.0
    assert RateLimitInfo.from_headers(headers, now=NOW).retry_after == 5.0


# --- parse_retry_after --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": ".5"}, 0.5),
        ({"Retry-After": "2."}, 2.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "20.5"}, 0.0205),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # milliseconds win
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),  # unless unusable
        ({"retry-after-ms": "-5", "retry-after": "9"}, 9.0),
        ({"Retry-After": "1e3"}, 1000.0),
        ({"Retry-After": "1e400"}, MAX_SECONDS),  # overflows: clamped as RFC 9111 says
        ({"Retry-After": "9" * 30}, MAX_SECONDS),
    ],
)
def test_retry_after_delta_seconds_and_milliseconds(headers, expected):
    assert parse_retry_after(headers) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
        "sun, 06 nov 1994 08:49:37 gmt",
        "Sun,  06   Nov 1994   08:49:37 UTC",
        "06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Nov 6 08:49:37 1994",
    ],
)
def test_retry_after_http_dates_in_every_form(value):
    assert parse_retry_after({"Retry-After": value}, now=RFC_EXAMPLE - 30) == 30.0


def test_retry_after_date_in_the_past_is_zero():
    assert parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, now=NOW) == 0.0


def test_retry_after_dates_are_measured_from_time_time_at_call_time(monkeypatch):
    # Looked up at each call, so freezegun and monkeypatching both work.
    monkeypatch.setattr(time, "time", lambda: RFC_EXAMPLE - 37)
    assert parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}) == 37.0
    monkeypatch.setattr(time, "time", lambda: RFC_EXAMPLE - 7)
    assert parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}) == 7.0


def test_rfc850_two_digit_years_more_than_50_years_ahead_are_in_the_last_century():
    now = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    in_2031 = datetime(2031, 1, 1, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after({"Retry-After": "Wednesday, 01-Jan-31 00:00:00 GMT"}, now=now) == (
        in_2031 - now
    )
    # "99" read as 2099 would be 69 years ahead: it is 1999, long past.
    assert parse_retry_after({"Retry-After": "Friday, 01-Jan-99 00:00:00 GMT"}, now=now) == 0.0


def test_a_leap_second_counts_as_the_second_before():
    value = "Sat, 31 Dec 2016 23:59:60 GMT"
    then = datetime(2016, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after({"Retry-After": value}, now=then - 1) == 1.0


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "-1",
        "-0.5",
        "+5",
        "soon",
        "5 seconds",
        "inf",
        "nan",
        "Infinity",
        "0x10",
        "1_000",
        "\u0661\u0662",  # Arabic-Indic digits, which float() would take
        "Sun, 31 Feb 2030 08:49:37 GMT",  # no such day
        "Sun, 06 Foo 2030 08:49:37 GMT",
        "Sun, 06 Nov 2030 25:49:37 GMT",
        "Sun, 06 Nov 2030 08:49:37 PST",
        "2030-11-06T08:49:37Z",  # RFC 3339 is not an HTTP-date
    ],
)
def test_retry_after_garbage_negative_or_empty_is_none(value):
    assert parse_retry_after({"Retry-After": value}, now=NOW) is None


def test_retry_after_absent_is_none():
    assert parse_retry_after({"Content-Type": "application/json"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf, 1e300])
def test_retry_after_dates_with_an_unusable_now_are_none(now):
    assert parse_retry_after({"Retry-After": "Sunday, 06-Nov-94 08:49:37 GMT"}, now=now) is None
    assert parse_retry_after({"Retry-After": "12"}, now=now) == 12.0  # needs no clock


def test_retry_after_far_future_dates_are_clamped():
    value = "Fri, 31 Dec 9999 23:59:59 GMT"
    assert parse_retry_after({"Retry-After": value}, now=NOW) == MAX_SECONDS


@given(st.integers(min_value=0, max_value=2**31))
def test_retry_after_integers_round_trip(seconds):
    assert parse_retry_after({"Retry-After": str(seconds)}) == float(seconds)


@given(st.integers(min_value=0, max_value=10**7), st.booleans())
def test_retry_after_dates_round_trip(seconds_ahead, imf):
    target = NOW + seconds_ahead
    if imf:
        value = email.utils.formatdate(target, usegmt=True)
    else:
        value = datetime.fromtimestamp(target, timezone.utc).strftime("%a %b %d %H:%M:%S %Y")
    assert parse_retry_after({"Retry-After": value}, now=NOW) == float(seconds_ahead)


# --- parse_duration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("2m59.56s", 179.56),
        ("1h2m3s", 3723.0),
        ("0.5", 0.5),
        ("7", 7.0),
        ("0s", 0.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("500us", 0.0005),
        ("500\u00b5s", 0.0005),  # micro sign
        ("500\u03bcs", 0.0005),  # Greek mu
        ("1500ns", 1.5e-6),
        ("1m1ms", 60.001),
        ("  7.66s ", 7.66),
        ("6M0S", 360.0),
        ("9" * 400 + "h", MAX_SECONDS),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    ["", "s", "ms", "-1s", "1d", "1 s", "1s 2m", "one", "1e3s", "nan", "inf", "1\u017f", None, 5],
)
def test_parse_duration_rejects_what_is_not_a_duration(text):
    assert parse_duration(text) is None


# --- RateLimitInfo.from_headers -----------------------------------------------------------------


def test_openai_headers():
    info = RateLimitInfo.from_headers(
        httpx2.Headers(
            {
                "x-ratelimit-limit-requests": "5000",
                "x-ratelimit-limit-tokens": "160000",
                "x-ratelimit-remaining-requests": "4999",
                "x-ratelimit-remaining-tokens": "159976",
                "x-ratelimit-reset-requests": "12ms",
                "x-ratelimit-reset-tokens": "6m0s",
                "x-request-id": "req_123",
            }
        )
    )
    assert info.requests == Quota(5000.0, 4999.0, pytest.approx(0.012))
    assert info.tokens == Quota(160000.0, 159976.0, 360.0)
    assert info.input_tokens is None and info.output_tokens is None
    assert info.should_retry is None and info.retry_after is None
    assert info.quotas() == {"requests": info.requests, "tokens": info.tokens}
    assert info


def test_azure_openai_sends_only_remaining():
    info = RateLimitInfo.from_headers(
        {"x-ratelimit-remaining-requests": "59", "x-ratelimit-remaining-tokens": "59000"}
    )
    assert info.requests == Quota(None, 59.0, None)
    assert info.tokens == Quota(None, 59000.0, None)


def test_groq_headers_and_a_429():
    info = RateLimitInfo.from_headers(
        {
            "x-ratelimit-limit-requests": "14400",
            "x-ratelimit-limit-tokens": "18000",
            "x-ratelimit-remaining-requests": "14370",
            "x-ratelimit-remaining-tokens": "17997",
            "x-ratelimit-reset-requests": "2m59.56s",
            "x-ratelimit-reset-tokens": "7.66s",
            "retry-after": "2",
        }
    )
    assert info.requests == Quota(14400.0, 14370.0, pytest.approx(179.56))
    assert info.tokens == Quota(18000.0, 17997.0, pytest.approx(7.66))
    assert info.retry_after == 2.0


GROQ = {
    "x-ratelimit-limit-requests": "1000",
    "x-ratelimit-limit-tokens": "12000",
    "x-ratelimit-remaining-requests": "999",
    "x-ratelimit-remaining-tokens": "11990",
    "x-ratelimit-reset-requests": "1m26.4s",
    "x-ratelimit-reset-tokens": "50ms",
}


@pytest.mark.parametrize("marker", ["x-groq-region", "X-Groq-Region", "x-groq-id"])
def test_groq_counts_requests_per_day(marker):
    # Groq documents x-ratelimit-*-requests as requests per day, -tokens as tokens per minute.
    info = RateLimitInfo.from_headers({**GROQ, marker: "us-east-1"})
    assert info.requests == Quota(1000.0, 999.0, pytest.approx(86.4), per_seconds=86_400.0)
    assert info.tokens == Quota(12000.0, 11990.0, pytest.approx(0.05))
    assert info.tokens is not None and info.tokens.per_seconds is None


def test_the_same_headers_without_a_groq_marker_keep_the_keys_window():
    info = RateLimitInfo.from_headers({**GROQ, "openai-organization": "org-1"})
    assert info.requests == Quota(1000.0, 999.0, pytest.approx(86.4))
    assert info.requests is not None and info.requests.per_seconds is None


def test_together_headers():
    info = RateLimitInfo.from_headers(
        {
            "x-ratelimit-limit": "10",
            "x-ratelimit-remaining": "9",
            "x-ratelimit-reset": "1",
            "x-tokenlimit-limit": "1000",
            "x-tokenlimit-remaining": "990",
        }
    )
    assert info.requests == Quota(10.0, 9.0, 1.0)
    assert info.tokens == Quota(1000.0, 990.0, None)


def test_anthropic_headers_with_rfc3339_resets():
    info = RateLimitInfo.from_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
            "anthropic-ratelimit-tokens-limit": "28000",
            "anthropic-ratelimit-tokens-remaining": "27000",
            "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:30.500Z",
            "anthropic-ratelimit-input-tokens-limit": "20000",
            "anthropic-ratelimit-input-tokens-remaining": "19500",
            "anthropic-ratelimit-input-tokens-reset": "2023-11-14T23:13:25+01:00",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "7500",
            "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:00:00Z",  # past
            "retry-after": "3",
        },
        now=NOW,
    )
    assert info.requests == Quota(50.0, 49.0, 1.0)
    assert info.tokens == Quota(28000.0, 27000.0, 10.5)
    assert info.input_tokens == Quota(20000.0, 19500.0, 5.0)
    assert info.output_tokens == Quota(8000.0, 7500.0, 0.0)
    assert info.retry_after == 3.0
    assert list(info.quotas()) == ["requests", "tokens", "input_tokens", "output_tokens"]


def test_rfc3339_with_nanoseconds_and_lower_case():
    info = RateLimitInfo.from_headers(
        {"anthropic-ratelimit-requests-reset": "2023-11-14t22:13:22.123456789z"}, now=NOW
    )
    assert info.requests is not None
    assert info.requests.reset == pytest.approx(2.123456789)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (str(int(NOW) + 30), 30.0),  # Unix seconds
        (str(int(NOW) * 1000 + 1500), 1.5),  # Unix milliseconds
        (str(int(NOW) - 30), 0.0),  # already passed
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # an HTTP-date
        ("59", 59.0),  # a delay
    ],
)
def test_resets_as_timestamps_dates_or_delays(value, expected):
    info = RateLimitInfo.from_headers({"x-ratelimit-reset": value}, now=NOW)
    assert info.requests == Quota(None, None, expected)


def test_a_malformed_header_counts_as_absent():
    info = RateLimitInfo.from_headers(
        {
            "x-ratelimit-limit-requests": "lots",
            "x-ratelimit-remaining-requests": "-1",
            "x-ratelimit-reset-requests": "soon",
            "x-ratelimit-limit-tokens": "1e400",  # not a finite count
            "x-ratelimit-remaining-tokens": "12",
        }
    )
    assert info.requests is None
    assert info.tokens == Quota(None, 12.0, None)


def test_a_malformed_header_gives_way_to_the_next_provider_spelling():
    info = RateLimitInfo.from_headers(
        {"x-ratelimit-limit-requests": "n/a", "anthropic-ratelimit-requests-limit": "50"}
    )
    assert info.requests == Quota(50.0, None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("TRUE", True), (" False ", False), ("yes", None)],
)
def test_x_should_retry(value, expected):
    info = RateLimitInfo.from_headers({"X-Should-Retry": value})
    assert info.should_retry is expected
    assert bool(info) is (expected is not None)


def test_retry_after_on_the_info_uses_the_same_clock():
    info = RateLimitInfo.from_headers({"retry-after": "Tue, 14 Nov 2023 22:13:25 GMT"}, now=NOW)
    assert info.retry_after == 5.0
    assert info.quotas() == {}
    assert info


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"content-type": "application/json"}, "x-ratelimit-limit: 5", ExplodingHeaders()],
)
def test_headers_that_say_nothing_are_falsy(headers):
    info = RateLimitInfo.from_headers(headers)
    assert info == RateLimitInfo()
    assert not info
    assert info.quotas() == {}


def test_every_container_works_for_rate_limit_info():
    pairs = [("X-RateLimit-Remaining-Requests", "7"), ("x-ratelimit-remaining-requests", "8")]
    for headers in (pairs, httpx2.Headers(pairs), message(*pairs), dict(pairs[:1])):
        assert RateLimitInfo.from_headers(headers).requests == Quota(None, 7.0, None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"x-ratelimit-remaining-requests": "0"}, None),  # no reset: no hint
        ({"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "7.5s"}, 7.5),
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "20s",
                "x-ratelimit-remaining-tokens": "900",
                "x-ratelimit-reset-tokens": "45s",
            },
            20.0,  # the bucket that ran out, not the longer one that did not
        ),
        (
            {
                "anthropic-ratelimit-input-tokens-remaining": "0",
                "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:13:30Z",
                "anthropic-ratelimit-output-tokens-remaining": "0.5",
                "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:50Z",
                "anthropic-ratelimit-requests-remaining": "40",
                "anthropic-ratelimit-requests-reset": "2023-11-14T22:14:20Z",
            },
            30.0,  # the longer of the two that ran out
        ),
    ],
)
def test_the_reset_hint_is_the_longest_reset_of_the_buckets_that_ran_out(headers, expected):
    assert RateLimitInfo.from_headers(headers, now=NOW).reset_hint() == expected


def test_rate_limit_info_is_frozen():
    info = RateLimitInfo()
    with pytest.raises(AttributeError):
        info.requests = Quota(1.0, 1.0, 1.0)  # type: ignore[misc]


# --- never raises, only None or finite floats >= 0 ----------------------------------------------

HEADER_NAMES = st.sampled_from(
    [
        "retry-after",
        "Retry-After",
        "retry-after-ms",
        "x-should-retry",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-reset",
        "x-tokenlimit-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-output-tokens-remaining",
    ]
)
DATE_LIKE = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(timezone.utc)
).flatmap(
    lambda moment: st.sampled_from(
        [
            email.utils.format_datetime(moment, usegmt=True),
            moment.strftime("%A, %d-%b-%y %H:%M:%S GMT"),
            moment.strftime("%a %b %d %H:%M:%S %Y"),
            moment.isoformat(),
        ]
    )
)
# Header-like text as servers send it (printable ASCII: what every container accepts) ...
ASCII_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.text(alphabet="0123456789.-+eEhmsun:TZ ", max_size=30),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers().map(str),
    DATE_LIKE,
)
# ... and anything at all.
VALUES = st.one_of(
    ASCII_VALUES,
    st.text(),
    st.text(alphabet="0123456789.hms\u00b5\u03bcn", max_size=30),
    st.binary(max_size=20),
)
NAMES = st.one_of(HEADER_NAMES, st.text(max_size=30), st.binary(max_size=30))
ANY_VALUE = st.one_of(VALUES, st.none(), st.integers(), st.floats(), st.booleans())
CONTAINERS = st.one_of(
    st.dictionaries(NAMES, ANY_VALUE, max_size=12),
    st.lists(st.tuples(NAMES, ANY_VALUE), max_size=12),
    st.lists(st.lists(ANY_VALUE, max_size=3), max_size=6),
    st.lists(st.tuples(HEADER_NAMES, ASCII_VALUES), max_size=8).map(httpx2.Headers),
    VALUES,
    st.none(),
    st.integers(),
)
NOWS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 2**40))


def usable(seconds: float | None) -> bool:
    return seconds is None or (
        isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0.0
    )


@given(CONTAINERS, NOWS)
def test_parse_retry_after_never_raises_and_gives_a_usable_delay(headers, now):
    assert usable(parse_retry_after(headers, now=now))


@given(CONTAINERS, NOWS)
def test_rate_limit_info_never_raises_and_holds_only_usable_numbers(headers, now):
    info = RateLimitInfo.from_headers(headers, now=now)
    assert usable(info.retry_after)
    assert info.should_retry in (None, True, False)
    for quota in info.quotas().values():
        assert usable(quota.limit) and usable(quota.remaining) and usable(quota.reset)
        assert (quota.limit, quota.remaining, quota.reset) != (None, None, None)
    assert bool(info) == (bool(info.quotas()) or info != RateLimitInfo())
    assert usable(info.reset_hint())


@given(st.one_of(st.text(), st.text(alphabet="0123456789.hmsun\u00b5\u03bc", max_size=40)))
def test_parse_duration_never_raises_and_gives_a_usable_duration(text):
    assert usable(parse_duration(text))


@given(st.dictionaries(HEADER_NAMES, ASCII_VALUES, max_size=6), NOWS)
def test_every_container_reads_the_same_headers_alike(headers, now):
    pairs = list(headers.items())
    expected = RateLimitInfo.from_headers(headers, now=now if now is not None else NOW)
    for container in (pairs, httpx2.Headers(pairs), message(*pairs)):
        found = RateLimitInfo.from_headers(container, now=now if now is not None else NOW)
        assert found == expected


def test_past_reset_and_retry_after_dates_never_go_negative():
    past = (datetime.fromtimestamp(NOW, timezone.utc) - timedelta(days=1)).isoformat()
    info = RateLimitInfo.from_headers(
        {
            "anthropic-ratelimit-requests-reset": past,
            "retry-after": "Thu, 01 Jan 1970 00:00:00 GMT",
        },
        now=NOW,
    )
    assert info.requests == Quota(None, None, 0.0)
    assert info.retry_after == 0.0
