"""Policy: validation with exact key paths, normalisation, the primitives it builds, TOML files."""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

from rate_limit_shield.breaker import CircuitBreaker, State
from rate_limit_shield.errors import ConfigError
from rate_limit_shield.limiter import Limit, Limiter
from rate_limit_shield.policy import Policy, parse_policies, read_config_file
from rate_limit_shield.retry import RetryBudget, RetryPolicy
from rate_limit_shield.testing import FakeClock

P = 'policies["gpt-4o"]'

EVERY_KEY: dict[str, Any] = {
    "rpm": 500,
    "rpd": 10_000,
    "tpm": 30_000.5,
    "itpm": 20_000,
    "otpm": 8_000,
    "limits": [Limit(5, 1), {"amount": 100, "per_seconds": 10, "unit": "tokens", "burst": 20}],
    "max_wait": math.inf,
    "timeout": 120,
    "retry": {
        "attempts": 5,
        "backoff": "equal",
        "base_delay": 0.25,
        "max_delay": 8,
        "multiplier": 3,
        "max_retry_after": 0,
        "budget": {"ratio": 0.1, "min_per_second": 0.5, "window": 30},
    },
    "breaker": {
        "failure_threshold": 3,
        "failure_rate": 0.5,
        "window_seconds": 60,
        "min_calls": 5,
        "recovery_timeout": 10,
        "max_recovery_timeout": 300,
        "half_open_max_calls": 2,
        "slow_call_duration": 20,
        "slow_call_rate": 1,
    },
    "bulkhead": {"max_concurrent": 8, "max_wait": 2.5},
    "fallbacks": ["gpt-4o-mini", "claude-3-haiku"],
    "adaptive": True,
}

# The TOML reader of this Python: tomllib, or its backport tomli (a dependency on 3.10).
tomllib = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")


def parse(data: dict[str, Any]) -> Policy:
    return Policy.from_mapping(data, path=P)


# -- accepted values ---------------------------------------------------------------------------


def test_every_key_is_accepted_with_a_good_value_and_normalised() -> None:
    policy = parse(EVERY_KEY)
    assert (policy.rpm, policy.rpd, policy.tpm, policy.itpm, policy.otpm) == (
        500, 10_000, 30_000.5, 20_000, 8_000,
    )  # fmt: skip
    assert policy.limits == (Limit(5, 1), Limit(100, 10, "tokens", burst=20))
    assert policy.max_wait == math.inf
    assert policy.timeout == 120
    assert policy.retry == {**EVERY_KEY["retry"]}
    assert policy.retry is not None and policy.retry["budget"] == EVERY_KEY["retry"]["budget"]
    assert policy.breaker == EVERY_KEY["breaker"]
    assert policy.bulkhead == EVERY_KEY["bulkhead"]
    assert policy.fallbacks == ("gpt-4o-mini", "claude-3-haiku")
    assert policy.adaptive is True
    # Every section builds, with every key passed through.
    assert isinstance(policy.make_limiter(), Limiter)
    assert isinstance(policy.make_retry(), RetryPolicy)
    assert isinstance(policy.make_budget(), RetryBudget)
    assert isinstance(policy.make_breaker(), CircuitBreaker)
    bulkhead = policy.make_bulkhead()
    assert bulkhead is not None and bulkhead.max_concurrent == 8


def test_count_window_and_none_for_optional_breaker_keys_are_accepted() -> None:
    policy = Policy(breaker={"failure_threshold": None, "failure_rate": 0.5, "window": 10})
    assert policy.breaker == {"failure_threshold": None, "failure_rate": 0.5, "window": 10}
    breaker = policy.make_breaker()
    assert breaker is not None and breaker.failure_threshold is None


def test_ints_stay_ints_and_other_real_numbers_become_floats() -> None:
    policy = Policy(rpm=60, breaker={"failure_rate": Fraction(1, 2)})
    assert type(policy.rpm) is int
    assert policy.breaker is not None and type(policy.breaker["failure_rate"]) is float
    assert policy.breaker["failure_rate"] == 0.5


def test_defaults_mean_a_breaker_and_a_retry_with_the_primitives_defaults() -> None:
    policy = Policy()
    assert (policy.retry, policy.breaker, policy.bulkhead) == ({}, {}, None)
    assert policy.max_wait == 60.0
    assert policy.make_limiter() is None
    retry = policy.make_retry()
    assert retry is not None and retry.max_attempts == RetryPolicy().max_attempts
    breaker = policy.make_breaker()
    assert breaker is not None and breaker.failure_threshold == 5
    assert policy.make_bulkhead() is None


def test_none_sections_disable_their_primitive() -> None:
    policy = parse({"rpm": 1, "retry": None, "breaker": None, "bulkhead": None})
    assert (policy.retry, policy.breaker, policy.bulkhead) == (None, None, None)
    assert policy.make_retry() is None
    assert policy.make_budget() is None
    assert policy.make_breaker() is None
    assert policy.make_bulkhead() is None


def test_sections_are_read_only_copies_of_what_was_given() -> None:
    given_retry: dict[str, Any] = {"attempts": 4, "budget": {"ratio": 0.5}}
    policy = Policy(retry=given_retry)
    given_retry["attempts"] = 9
    given_retry["budget"]["ratio"] = 0.9
    assert policy.retry == {"attempts": 4, "budget": {"ratio": 0.5}}
    with pytest.raises(TypeError):
        policy.retry["attempts"] = 5  # type: ignore[index]
    with pytest.raises(TypeError):
        policy.retry["budget"]["ratio"] = 1  # type: ignore[index]


# -- refused values: exact messages ------------------------------------------------------------

BAD: list[tuple[dict[str, Any], str]] = [
    ({"rpm": 0}, ".rpm: 0 is not > 0"),
    ({"rpm": -5}, ".rpm: -5 is not > 0"),
    ({"rpm": "sixty"}, ".rpm: 'sixty' is not a number"),
    ({"rpm": True}, ".rpm: True is not a number"),
    ({"tpm": math.nan}, ".tpm: nan is not a number"),
    ({"rpd": math.inf}, ".rpd: inf is not a finite number > 0"),
    ({"itpm": [1]}, ".itpm: [1] is not a number"),
    ({"otpm": -math.inf}, ".otpm: -inf is not a finite number > 0"),
    ({"timeout": 0}, ".timeout: 0 is not > 0"),
    ({"timeout": math.inf}, ".timeout: inf is not a finite number > 0"),
    ({"max_wait": -1}, ".max_wait: -1 is not >= 0"),
    ({"max_wait": None}, ".max_wait: None is not a number"),
    ({"breaker": 5}, ".breaker: 5 is not a mapping or None"),
    ({"breaker": True}, ".breaker: True is not a mapping or None (use {} for the defaults)"),
    ({"retry": False}, ".retry: False is not a mapping or None (use None to disable it)"),
    ({"bulkhead": "yes"}, ".bulkhead: 'yes' is not a mapping or None"),
    ({"breaker": {"failure_rate": 1.5}}, ".breaker.failure_rate: 1.5 is not in (0, 1]"),
    ({"breaker": {"failure_rate": 0}}, ".breaker.failure_rate: 0 is not in (0, 1]"),
    ({"breaker": {"slow_call_rate": 2}}, ".breaker.slow_call_rate: 2 is not in (0, 1]"),
    ({"breaker": {"failure_threshold": 0}}, ".breaker.failure_threshold: 0 is not an integer >= 1"),
    ({"breaker": {"window": 2.0}}, ".breaker.window: 2.0 is not an integer >= 1"),
    ({"breaker": {"min_calls": 0}}, ".breaker.min_calls: 0 is not an integer >= 1"),
    (
        {"breaker": {"half_open_max_calls": True}},
        ".breaker.half_open_max_calls: True is not an integer >= 1",
    ),
    ({"breaker": {"recovery_timeout": 0}}, ".breaker.recovery_timeout: 0 is not > 0"),
    ({"breaker": {"max_recovery_timeout": -1}}, ".breaker.max_recovery_timeout: -1 is not > 0"),
    (
        {"breaker": {"window_seconds": math.inf}},
        ".breaker.window_seconds: inf is not a finite number > 0",
    ),
    (
        {"breaker": {"slow_call_duration": "1s"}},
        ".breaker.slow_call_duration: '1s' is not a number",
    ),
    ({"retry": {"attempts": 0}}, ".retry.attempts: 0 is not an integer >= 1"),
    ({"retry": {"attempts": 2.0}}, ".retry.attempts: 2.0 is not an integer >= 1"),
    ({"retry": {"attempts": "3"}}, ".retry.attempts: '3' is not an integer >= 1"),
    (
        {"retry": {"backoff": "linear"}},
        ".retry.backoff: 'linear' is not one of "
        "'full', 'equal', 'decorrelated', 'constant', 'none'",
    ),
    ({"retry": {"base_delay": -0.5}}, ".retry.base_delay: -0.5 is not >= 0"),
    ({"retry": {"max_delay": -1}}, ".retry.max_delay: -1 is not >= 0"),
    ({"retry": {"multiplier": 0.5}}, ".retry.multiplier: 0.5 is not >= 1"),
    ({"retry": {"max_retry_after": -1}}, ".retry.max_retry_after: -1 is not >= 0"),
    ({"retry": {"budget": 5}}, ".retry.budget: 5 is not a mapping or None"),
    ({"retry": {"budget": {"ratio": -0.1}}}, ".retry.budget.ratio: -0.1 is not >= 0"),
    (
        {"retry": {"budget": {"min_per_second": "x"}}},
        ".retry.budget.min_per_second: 'x' is not a number",
    ),
    (
        {"retry": {"budget": {"window": 2.5}}},
        ".retry.budget.window: 2.5 is not a whole number of seconds > 0",
    ),
    (
        {"retry": {"budget": {"window": 0}}},
        ".retry.budget.window: 0 is not a whole number of seconds > 0",
    ),
    ({"bulkhead": {"max_concurrent": 0}}, ".bulkhead.max_concurrent: 0 is not an integer >= 1"),
    ({"bulkhead": {"max_concurrent": 2, "max_wait": -1}}, ".bulkhead.max_wait: -1 is not >= 0"),
    ({"bulkhead": {}}, ".bulkhead: max_concurrent is required"),
    ({"bulkhead": {"max_wait": 1}}, ".bulkhead: max_concurrent is required"),
    ({"limits": 5}, ".limits: 5 is not a list of Limit"),
    ({"limits": [Limit(1, 1), {"amount": 5, "per_seconds": 1}, 5]}, ".limits[2]: 5 is not a Limit"),
    ({"limits": [{"amount": 5}]}, ".limits[0]: per_seconds is required"),
    ({"limits": [{"amount": 0, "per_seconds": 1}]}, ".limits[0].amount: 0 is not > 0"),
    (
        {"limits": [{"amount": 5, "per_seconds": 1, "unit": "words"}]},
        ".limits[0].unit: 'words' is not one of "
        "'requests', 'tokens', 'input_tokens', 'output_tokens'",
    ),
    ({"adaptive": "yes"}, ".adaptive: 'yes' is not a bool"),
    ({"adaptive": 1}, ".adaptive: 1 is not a bool"),
    (
        {"classifier": "llm"},
        ".classifier: 'llm' is not a classifier (classify_error and classify_result)",
    ),
    ({"cost": 3}, ".cost: 3 is not callable"),
    ({"fallbacks": "gpt-4o-mini"}, ".fallbacks: 'gpt-4o-mini' is not a list of model names"),
    ({"fallbacks": ["gpt-4o-mini", ""]}, ".fallbacks[1]: '' is not a model name (a non-empty str)"),
    ({"fallbacks": [3]}, ".fallbacks[0]: 3 is not a model name (a non-empty str)"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[message for _, message in BAD])
def test_bad_value_is_refused_with_its_exact_key_path_value_and_problem(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value) == P + message
    assert isinstance(info.value, ValueError)


# Checks spanning keys are the primitives' own: their wording is theirs, the prefix is ours.
COMBINATIONS: list[tuple[dict[str, Any], str]] = [
    (
        {"breaker": {"window": 10, "window_seconds": 5}},
        ".breaker: give window (calls) or window_seconds, not both: ",
    ),
    (
        {"retry": {"base_delay": 5, "max_delay": 1}},
        ".retry: max_delay (1) must be >= base_delay (5)",
    ),
    ({"breaker": {"recovery_timeout": 30, "max_recovery_timeout": 10}}, ".breaker: max_recovery"),
    ({"breaker": {"failure_threshold": None}}, ".breaker: "),
    ({"rpm": 60, "limits": [Limit(60, 60)]}, ": limits must not repeat a limit"),
]


@pytest.mark.parametrize(("data", "prefix"), COMBINATIONS, ids=[p for _, p in COMBINATIONS])
def test_bad_combination_is_reported_under_its_section(data: dict[str, Any], prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith(P + prefix)
    assert isinstance(info.value.__cause__, ValueError)  # the primitive's own refusal


UNKNOWN: list[tuple[dict[str, Any], str]] = [
    ({"rmp": 60}, ": unknown key 'rmp' (did you mean 'rpm'?)"),
    (
        {"zzz": 1},
        ": unknown key 'zzz' (known keys: rpm, rpd, tpm, itpm, otpm, limits, max_wait, timeout, "
        "retry, breaker, bulkhead, fallbacks, adaptive, classifier, cost)",
    ),
    (
        {"retry": {"max_attempts": 3}},
        ".retry: unknown key 'max_attempts' (did you mean 'attempts'?)",
    ),
    (
        {"retry": {"budget": {"ratoi": 0.1}}},
        ".retry.budget: unknown key 'ratoi' (did you mean 'ratio'?)",
    ),
    (
        {"breaker": {"failure_treshold": 3}},
        ".breaker: unknown key 'failure_treshold' (did you mean 'failure_threshold'?)",
    ),
    (
        {"bulkhead": {"max_concurrent": 2, "size": 3}},
        ".bulkhead: unknown key 'size' (known keys: max_concurrent, max_wait)",
    ),
    (
        {"limits": [{"amount": 1, "per_second": 1}]},
        ".limits[0]: unknown key 'per_second' (did you mean 'per_seconds'?)",
    ),
    (
        {"breaker": {5: 1}},
        ".breaker: unknown key 5 (known keys: failure_threshold, failure_rate, window, "
        "window_seconds, min_calls, recovery_timeout, max_recovery_timeout, half_open_max_calls, "
        "slow_call_duration, slow_call_rate, shared)",
    ),
]


@pytest.mark.parametrize(("data", "message"), UNKNOWN, ids=[message for _, message in UNKNOWN])
def test_unknown_key_is_refused_with_a_suggestion(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value) == P + message


def test_direct_construction_validates_under_the_default_path() -> None:
    with pytest.raises(ConfigError, match=r"^Policy\.rpm: 0 is not > 0$"):
        Policy(rpm=0)
    with pytest.raises(ConfigError, match=r"^Policy\.retry\.attempts: 0 is not an integer >= 1$"):
        Policy(retry={"attempts": 0})


def test_a_failed_from_mapping_does_not_leak_its_path() -> None:
    with pytest.raises(ConfigError, match=r"^policies\[\"x\"\]\.rpm"):
        Policy.from_mapping({"rpm": 0}, path='policies["x"]')
    with pytest.raises(ConfigError, match=r"^Policy\.rpm"):
        Policy(rpm=0)


def test_from_mapping_refuses_a_non_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        Policy.from_mapping([("rpm", 60)], path=P)  # type: ignore[arg-type]
    assert str(info.value) == f"{P}: [('rpm', 60)] is not a mapping"


def test_each_thread_reports_errors_under_its_own_path() -> None:
    def error_path(number: int) -> bool:
        path = f'policies["model-{number}"]'
        with pytest.raises(ConfigError) as info:
            Policy.from_mapping({"retry": {"attempts": 0}}, path=path)
        return str(info.value).startswith(f"{path}.retry.attempts: 0")

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(error_path, range(800)))


SECTION_KEYS = [(None, key) for key in EVERY_KEY] + [
    (section, key) for section in ("retry", "breaker", "bulkhead") for key in EVERY_KEY[section]
]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(min_value=-2, max_value=5), max_size=3),
    st.dictionaries(st.sampled_from(["amount", "per_seconds", "x"]), st.integers(0, 5), max_size=3),
)


@given(where=st.sampled_from(SECTION_KEYS), value=JUNK)
def test_any_value_parses_or_raises_a_config_error_under_its_key(
    where: tuple[str | None, str], value: object
) -> None:
    section, key = where
    data = {key: value} if section is None else {section: {key: value}}
    try:
        policy = parse(data)
    except ConfigError as error:
        assert str(error).startswith(f"{P}.{section or key}")
    else:
        assert policy == parse(data)
        assert hash(policy) == hash(parse(data))


# -- the primitives it builds ------------------------------------------------------------------


def test_make_limiter_has_the_shorthand_limits_then_the_explicit_ones() -> None:
    limiter = Policy(rpm=60, tpm=1000).make_limiter()
    assert limiter is not None
    assert limiter.limits == (Limit(60, 60), Limit(1000, 60, "tokens"))
    policy = Policy(otpm=5, rpm=1, itpm=4, rpd=2, tpm=3, limits=[Limit(7, 1)])
    assert policy.rate_limits() == (
        Limit(1, 60),
        Limit(2, 86400),
        Limit(3, 60, "tokens"),
        Limit(4, 60, "input_tokens"),
        Limit(5, 60, "output_tokens"),
        Limit(7, 1),
    )


def test_make_limiter_uses_the_clock_and_name_and_builds_a_new_one_each_time() -> None:
    clock = FakeClock()
    policy = Policy(rpm=1)
    limiter = policy.make_limiter(clock=clock, name="gpt-4o")
    assert limiter is not None and limiter.name == "gpt-4o"
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.advance(60)
    assert limiter.try_acquire()
    assert policy.make_limiter() is not limiter


def test_counts_tokens_when_a_limit_is_not_in_requests() -> None:
    assert not Policy().counts_tokens
    assert not Policy(rpm=10, rpd=100, limits=[Limit(1, 1)]).counts_tokens
    assert Policy(tpm=1000).counts_tokens
    assert Policy(limits=[{"amount": 5, "per_seconds": 1, "unit": "output_tokens"}]).counts_tokens


def test_make_retry_maps_attempts_and_keeps_the_other_defaults() -> None:
    retry = Policy(retry={"attempts": 4}).make_retry()
    default = RetryPolicy()
    assert retry is not None and retry.max_attempts == 4
    assert (retry.base_delay, retry.max_delay, retry.multiplier, retry.backoff) == (
        default.base_delay, default.max_delay, default.multiplier, default.backoff,
    )  # fmt: skip


def test_make_retry_passes_every_key() -> None:
    retry = parse(EVERY_KEY).make_retry()
    assert retry is not None
    assert (retry.max_attempts, retry.backoff, retry.base_delay, retry.max_delay) == (
        5, "equal", 0.25, 8,
    )  # fmt: skip
    assert (retry.multiplier, retry.max_retry_after) == (3, 0)


def test_make_budget_defaults_to_retry_budget_defaults() -> None:
    budget = Policy(retry={"attempts": 2}).make_budget()
    default = RetryBudget()
    assert budget is not None
    assert (budget.ratio, budget.min_per_second, budget.window) == (
        default.ratio, default.min_per_second, default.window,
    )  # fmt: skip


def test_make_budget_is_none_when_disabled_or_without_retry() -> None:
    assert Policy(retry={"budget": None}).make_budget() is None
    assert Policy(retry=None).make_budget() is None
    assert Policy(retry={"budget": None}).make_retry() is not None


def test_make_budget_uses_the_given_values_and_clock() -> None:
    clock = FakeClock()
    policy = Policy(retry={"budget": {"ratio": 0, "min_per_second": 1, "window": 1}})
    budget = policy.make_budget(clock=clock)
    assert budget is not None and (budget.ratio, budget.min_per_second, budget.window) == (0, 1, 1)
    assert budget.try_spend()
    assert not budget.try_spend()  # one retry per second, and no share of calls
    clock.advance(1)
    assert budget.try_spend()


def test_make_breaker_uses_the_given_values_clock_and_name() -> None:
    clock = FakeClock()
    policy = Policy(
        breaker={"failure_threshold": 2, "recovery_timeout": 7, "half_open_max_calls": 3}
    )
    breaker = policy.make_breaker(clock=clock, name="gpt-4o")
    assert breaker is not None and breaker.name == "gpt-4o"
    assert (breaker.failure_threshold, breaker.recovery_timeout) == (2, 7)
    assert breaker.half_open_max_calls == 3
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is State.OPEN
    clock.advance(7)
    assert breaker.state is State.HALF_OPEN


def test_make_bulkhead_uses_the_given_values_and_name() -> None:
    bulkhead = Policy(bulkhead={"max_concurrent": 3, "max_wait": 1.5}).make_bulkhead(name="m")
    assert bulkhead is not None
    assert (bulkhead.max_concurrent, bulkhead.max_wait, bulkhead.name) == (3, 1.5, "m")


def test_primitives_work_under_freezegun_with_the_system_clock() -> None:
    policy = Policy(rpm=2, breaker={"failure_threshold": 1, "recovery_timeout": 5})
    with freeze_time("2024-01-01") as frozen:
        limiter = policy.make_limiter()
        breaker = policy.make_breaker()
        assert limiter is not None and breaker is not None
        assert limiter.try_acquire() and limiter.try_acquire()
        assert not limiter.try_acquire()
        breaker.record_failure()
        assert breaker.state is State.OPEN
        frozen.tick(30)  # 2 per minute: one permit back every 30 s; the breaker's 5 s are over
        assert limiter.try_acquire()
        assert not limiter.try_acquire()
        assert breaker.state is State.HALF_OPEN


# -- value semantics ---------------------------------------------------------------------------


def test_policy_is_frozen() -> None:
    policy = Policy(rpm=60)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.rpm = 30  # type: ignore[misc]


def test_equal_policies_are_equal_and_hash_alike() -> None:
    built = Policy(rpm=60, retry={"attempts": 4, "budget": None}, fallbacks=("b",))
    parsed = parse({"rpm": 60.0, "retry": {"attempts": 4, "budget": None}, "fallbacks": ["b"]})
    assert built == parsed
    assert hash(built) == hash(parsed)
    assert len({built, parsed}) == 1
    assert built != Policy(rpm=60, retry={"attempts": 5, "budget": None}, fallbacks=("b",))
    assert Policy(retry={}) == Policy()


def test_repr_shows_only_what_differs_from_the_defaults() -> None:
    assert repr(Policy()) == "Policy()"
    assert repr(Policy(rpm=60, retry={"attempts": 4}, bulkhead=None)) == (
        "Policy(rpm=60, retry={'attempts': 4})"
    )
    assert repr(Policy(breaker=None, retry={"budget": {"ratio": 0.5}})) == (
        "Policy(retry={'budget': {'ratio': 0.5}}, breaker=None)"
    )


# -- parse_policies ----------------------------------------------------------------------------


def test_parse_policies_keeps_policies_and_parses_mappings() -> None:
    default = Policy(rpm=60)
    parsed = parse_policies({"default": default, "gpt-4o*": {"rpm": 500, "fallbacks": ["b"]}})
    assert parsed["default"] is default
    assert parsed["gpt-4o*"] == Policy(rpm=500, fallbacks=("b",))
    assert list(parsed) == ["default", "gpt-4o*"]


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ([("a", {})], "policies: [('a', {})] is not a mapping of model names to policies"),
        ({5: {}}, "policies: 5 is not a model name (a non-empty str)"),
        ({"": {}}, "policies: '' is not a model name (a non-empty str)"),
        ({"a": 5}, 'policies["a"]: 5 is not a Policy or a mapping'),
        ({"gpt-4o": {"rpm": 0}}, 'policies["gpt-4o"].rpm: 0 is not > 0'),
        (
            {"gpt-4o": {"fallbacks": ["gpt-4o-mini", "gpt-4o"]}},
            "policies[\"gpt-4o\"].fallbacks: ('gpt-4o-mini', 'gpt-4o') names 'gpt-4o' itself",
        ),
        (
            {"gpt-4o": Policy(fallbacks=("gpt-4o",))},
            "policies[\"gpt-4o\"].fallbacks: ('gpt-4o',) names 'gpt-4o' itself",
        ),
    ],
)
def test_parse_policies_refuses_bad_input(policies: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policies(policies)
    assert str(info.value) == message


def test_parse_policies_reports_under_the_given_path() -> None:
    with pytest.raises(ConfigError, match=r'^tool\.shield\["a"\]\.rpm: 0 is not > 0$'):
        parse_policies({"a": {"rpm": 0}}, path="tool.shield")


# -- read_config_file --------------------------------------------------------------------------

TOML = """
backend = "redis://localhost:6379/0"

[policies.default]
rpm = 60
retry = { attempts = 4 }

[policies."gpt-4o*"]
tpm = 30_000
breaker = { failure_rate = 0.5 }
"""


def test_read_config_file_returns_the_top_level_table(tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text(TOML, encoding="utf-8")
    for given_path in (path, str(path)):
        config = read_config_file(given_path)
        assert config["backend"] == "redis://localhost:6379/0"
        assert config["policies"]["default"] == {"rpm": 60, "retry": {"attempts": 4}}
    policies = parse_policies(read_config_file(path)["policies"])
    assert policies["gpt-4o*"] == Policy(tpm=30_000, breaker={"failure_rate": 0.5})


def test_read_config_file_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    message = f"{path}: cannot read the configuration file: No such file or directory"
    assert str(info.value) == message


@pytest.mark.parametrize("content", [b"rpm = = 3\n", b"name = '\xff'\n"], ids=["syntax", "bytes"])
def test_read_config_file_names_the_file_and_the_toml_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    assert isinstance(info.value.__cause__, ValueError)


def test_read_config_file_before_3_11_uses_tomli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "shield.toml"
    path.write_text("rpm = 60\n", encoding="utf-8")
    monkeypatch.setattr(sys, "version_info", (3, 10, 12))
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # the backport has tomllib's API
    assert read_config_file(path) == {"rpm": 60}
    monkeypatch.setitem(sys.modules, "tomli", None)  # not installed
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert str(info.value) == (
        f"{path}: reading TOML on Python < 3.11 needs the tomli package: pip install tomli"
    )


def test_adaptive_pacing_needs_a_rate_limit() -> None:
    with pytest.raises(ConfigError, match=r"\.adaptive: True needs a rate limit to adapt"):
        parse({"adaptive": True, "rpm": None})
    assert parse({"adaptive": True, "tpm": 1000}).adaptive is True
