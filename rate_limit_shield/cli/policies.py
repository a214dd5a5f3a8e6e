"""`check FILE` and `explain FILE MODEL`: what a TOML policy file configures, and which of its
policies a model name gets, and why.

Both read the file as the library does (`Registry.configure_from_file`, into a registry of their
own), so a file they accept is one `configure_from_file` accepts, and the policy `explain` names
is the one a call for that model would get.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._redact import redact
from ..breaker import _DEFAULT_WINDOW, CircuitBreaker
from ..errors import ConfigError
from ..policy import Policy, read_config_file
from ..registry import _BUILT_IN_NAME, _DEFAULT, Registry, _is_glob, _specificity
from ._output import seconds, table

__all__ = ["POLICY_HEADERS", "Resolution", "add_commands", "policy_row", "resolve", "shared"]

POLICY_HEADERS = (
    "pattern", "limits", "max wait", "timeout", "retry", "breaker", "bulkhead", "fallbacks",
)  # fmt: skip
_BREAKER_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(CircuitBreaker).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}
_BACKOFFS = {
    "full": "full jitter",
    "equal": "equal jitter",
    "decorrelated": "decorrelated jitter",
    "none": "no jitter",
}


def add_commands(commands: Any) -> None:
    """Add `check` and `explain` to the subcommands of the `rate-limit-shield` parser."""
    check = commands.add_parser(
        "check",
        help="validate a TOML policy file and show each pattern's policy",
        description="Validate a TOML policy file as configure_from_file reads it, and print "
        "each pattern's policy, defaults included. A bad file exits 2 naming the key and value.",
    )
    check.add_argument("file", metavar="FILE", help="the TOML policy file")
    check.set_defaults(run=_check)
    explain = commands.add_parser(
        "explain",
        help="show which policy a model name gets, and why",
        description="Show which pattern of a TOML policy file MODEL resolves to: its exact "
        "name, else the most specific matching glob, else \"default\", else the built-in "
        "policy (or a refusal under strict = true). Exits 1 when the model is refused.",
    )
    explain.add_argument("file", metavar="FILE", help="the TOML policy file")
    explain.add_argument("model", metavar="MODEL", help="a model name, e.g. gpt-4o-mini")
    explain.set_defaults(run=_explain)


def _registry(path: str) -> Registry:
    registry = Registry()
    registry.configure_from_file(path)
    return registry


def _check(arguments: argparse.Namespace) -> int:
    settings = read_config_file(arguments.file)
    registry = _registry(arguments.file)
    policies = registry.policies
    backend = settings.get("backend") or "memory"
    if isinstance(backend, str):
        backend = redact(backend)
    strict = "true" if settings.get("strict") else "false"
    print(f"{arguments.file}: {len(policies)} policies, strict = {strict}, backend = {backend}")
    rows = [policy_row(pattern, policy) for pattern, policy in policies.items()]
    print(table(POLICY_HEADERS, rows))
    return 0


class Resolution(NamedTuple):
    """Which policy a model gets, and why: `kind` is "exact", "glob", "default", "built-in"
    or "refused"; `globs` the matching globs, most specific first, with their literal count."""

    pattern: str | None
    policy: Policy | None
    kind: str
    globs: list[tuple[str, int]]
    refusal: str = ""


def resolve(registry: Registry, model: str) -> Resolution:
    """The registry's own answer for `model`, with the globs that competed for it."""
    globs = [(glob, _specificity(glob)) for glob in registry.matching_globs(model)]
    try:
        key = registry.key(model)
    except ConfigError as refusal:
        return Resolution(None, None, "refused", globs, refusal.message)
    pattern = key.pattern
    if pattern == model and not _is_glob(model):
        kind = "exact"
    elif pattern == _BUILT_IN_NAME:
        kind = "built-in"
    elif pattern == _DEFAULT:
        kind = "default"
    else:
        kind = "glob"
    return Resolution(pattern, key.policy, kind, globs)


def _explain(arguments: argparse.Namespace) -> int:
    model = arguments.model
    registry = _registry(arguments.file)
    found = resolve(registry, model)
    print(f"{model}: {_verdict(found, model)}")
    exact = "yes" if found.kind == "exact" else f"no policy is named {model!r}"
    lines = [("exact name", exact)]
    for number, (glob, literal) in enumerate(found.globs):
        chosen = "  <- chosen" if glob == found.pattern else ""
        label = "matching globs" if number == 0 else ""
        lines.append((label, f"{glob!r}: {literal} literal characters{chosen}"))
    if not found.globs:
        lines.append(("matching globs", "none"))
    has_default = _DEFAULT in registry.policies
    lines.append(("default", "configured" if has_default else "none"))
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        print(f"  {label.ljust(width)}  {text}")
    if found.policy is None or found.pattern is None:
        return 1
    print()
    print(table(POLICY_HEADERS, [policy_row(found.pattern, found.policy)]))
    return 0


def _verdict(found: Resolution, model: str) -> str:
    if found.kind == "refused":
        return f"refused: {found.refusal}"
    if found.kind == "exact":
        return f"policy {found.pattern!r}, its exact name"
    if found.kind == "glob":
        if len(found.globs) == 1:
            return f"policy {found.pattern!r}, the only glob that matches"
        return f"policy {found.pattern!r}, the most specific of {len(found.globs)} matching globs"
    if found.kind == "default":
        return f"policy {_DEFAULT!r}: no exact name or glob matches {model!r}"
    return (
        f"the built-in policy: nothing matches {model!r}, there is no {_DEFAULT!r} and "
        "strict is false"
    )


def policy_row(pattern: str, policy: Policy) -> list[str]:
    """One row of `POLICY_HEADERS`: the policy with every default filled in."""
    limits = [str(limit) for limit in policy.rate_limits()]
    if policy.adaptive:
        limits.append("adaptive")
    return [
        pattern,
        "\n".join(limits) or "-",
        seconds(policy.max_wait),
        seconds(policy.timeout),
        _retry(policy),
        _breaker(policy.breaker),
        _bulkhead(policy),
        "\n".join(policy.fallbacks) or "-",
    ]


def _retry(policy: Policy) -> str:
    retry = policy.make_retry()
    if retry is None:
        return "off"
    if retry.backoff == "constant":
        backoff = f"every {seconds(retry.base_delay)}"
    else:
        start, cap = seconds(retry.base_delay), seconds(retry.max_delay)
        backoff = f"{start} x{retry.multiplier:g} to {cap}, {_BACKOFFS[retry.backoff]}"
    lines = [
        f"{retry.max_attempts} attempts",
        backoff,
        f"Retry-After up to {seconds(retry.max_retry_after)}",
    ]
    budget = policy.make_budget()
    if budget is None:
        lines.append("no budget")
    else:
        fleet = ", shared" if shared(policy.retry and policy.retry.get("budget")) else ""
        lines.append(
            f"budget {budget.ratio:.0%} + {budget.min_per_second:g}/s "
            f"over {seconds(budget.window)}{fleet}"
        )
    return "\n".join(lines)


def _breaker(section: Mapping[str, Any] | None) -> str:
    if section is None:
        return "off"
    options = {**_BREAKER_DEFAULTS, **section}
    opens: list[str] = []
    if options["failure_threshold"] is not None:
        opens.append(f"{options['failure_threshold']} failures in a row")
    if options["failure_rate"] is not None:
        opens.append(f"{options['failure_rate']:.0%} failed over {_window(options)}")
    if options["slow_call_duration"] is not None:
        rate = options["slow_call_rate"] if options["slow_call_rate"] is not None else 1.0
        slow = seconds(options["slow_call_duration"])
        opens.append(f"{rate:.0%} slower than {slow} over {_window(options)}")
    open_for = seconds(options["recovery_timeout"])
    if options["max_recovery_timeout"] is not None:
        open_for += f" to {seconds(options['max_recovery_timeout'])}"
    probes = options["half_open_max_calls"]
    lines = [
        *opens,
        f"open {open_for}",
        f"{probes} probe{'s' if probes > 1 else ''}",
    ]
    if shared(section):
        lines.append("shared")
    return "\n".join(lines)


def _window(options: Mapping[str, Any]) -> str:
    """The window a rate is counted over, and the calls it needs first."""
    if options["window_seconds"] is not None:
        return f"{seconds(options['window_seconds'])} (min {options['min_calls']} calls)"
    size = options["window"] if options["window"] is not None else _DEFAULT_WINDOW
    return f"{size} calls (min {min(options['min_calls'], size)})"


def _bulkhead(policy: Policy) -> str:
    bulkhead = policy.make_bulkhead()
    if bulkhead is None:
        return "-"
    return f"{bulkhead.max_concurrent} at once\nwait {seconds(bulkhead.max_wait)}"


def shared(section: object) -> bool:
    """Whether a breaker or budget section says its state is the fleet's (on the backend)."""
    return isinstance(section, Mapping) and bool(section.get("shared", False))

