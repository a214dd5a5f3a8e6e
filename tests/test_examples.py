"""The programs in examples/ run as users run them, and do what their docstrings say.

Each runs in a subprocess with this interpreter, as `python examples/<name>.py` from the
repository's root, except the FastAPI service, which runs in this process under FastAPI's
TestClient.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from rate_limit_shield.testing import FakeProvider, isolated

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 120  # seconds: the SDKs take seconds to import on a busy machine


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python *command` from the repository's root, with `env` added to the environment; it
    must exit 0."""
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def number(pattern: str, text: str) -> int:
    """The integer `pattern`'s group captures in `text`, which must match it."""
    found = re.search(pattern, text)
    assert found is not None, f"{pattern!r} not in:\n{text}"
    return int(found.group(1))


def test_the_examples_readme_names_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for program in sorted(EXAMPLES.glob("*.py")):
        assert f"[`{program.name}`]" in readme
    assert "[`test_suite/`]" in readme


# -- quickstart --------------------------------------------------------------------------------


def test_quickstart_comes_through_an_outage_and_a_429() -> None:
    done = run("examples/quickstart.py")
    assert "answer: ok ok" in done.stdout
    assert "the provider answered: {503: 1, 429: 1, 200: 1}" in done.stdout
    log = done.stderr
    assert "[gpt-4o-mini] attempt 1 failure: InternalServerError (HTTP 503); retrying" in log
    assert "[gpt-4o-mini] throttled by the server for 0.5s (retry-after)" in log


# -- batch_async -------------------------------------------------------------------------------


def test_batch_falls_back_to_claude_while_gpt_is_down_and_the_provider_throttles_nothing() -> None:
    out = run("examples/batch_async.py", "--prompts", "60", "--concurrency", "8").stdout
    assert "60 prompts, at most 8 in flight" in out
    by_gpt = number(r"answered by gpt-4o-mini: (\d+)", out)
    by_claude = number(r"answered by claude-3-5-haiku-latest: (\d+)", out)
    assert by_gpt > 0 and by_claude > 0 and by_gpt + by_claude == 60
    assert number(r"fallbacks: (\d+)", out) == by_claude
    assert number(r"retries: (\d+)", out) >= 1
    assert number(r"breaker changes: (\d+)", out) >= 3  # opened, half-open, closed
    assert number(r"the provider answered: 200 x (\d+)", out) == 60
    assert "503 x 5" in out and "429" not in out


# -- test_suite --------------------------------------------------------------------------------


def test_the_example_test_suite_passes_every_test_it_has() -> None:
    """Run as a user runs it, with the pytest plugin the package installs: 6 tests, all passed
    (none failed, skipped or in error, which the summary line would name)."""
    done = run("-m", "pytest", "examples/test_suite", "-p", "no:cacheprovider")
    assert re.search(r"^6 passed in ", done.stdout, flags=re.MULTILINE), done.stdout


# -- redis_fleet -------------------------------------------------------------------------------


def fleet(*options: str, env: dict[str, str] | None = None) -> tuple[str, int, float]:
    """Run the fleet: its output, the requests its processes admitted, and the most the limit
    allows over the time it ran (its burst, and its rate times that time, as printed to 0.01 s:
    the bound of the longest time that prints so)."""
    out = run("examples/redis_fleet.py", *options, env=env).stdout
    limits = load("redis_fleet")
    admitted = number(r"admitted (\d+) in", out)
    found = re.search(r"admitted \d+ in (\d+\.\d\d) s", out)
    assert found is not None, out
    took = float(found.group(1)) + 0.005
    return out, admitted, limits.BURST + limits.RATE * took


def test_a_fleet_sharing_redis_stays_within_the_limit(redis_url: str) -> None:
    out, admitted, allowed = fleet("--processes", "4", env={"REDIS_URL": redis_url})
    assert "4 processes, sharing one quota on Redis" in out
    assert number(r"refused (\d+)", out) > 0  # offered more than the limit allows
    assert load("redis_fleet").BURST <= admitted <= allowed
    assert "within the limit" in out


def test_the_same_fleet_in_memory_goes_over_the_limit() -> None:
    """Without a shared backend each process has the whole quota: the bound is not vacuous."""
    out, admitted, allowed = fleet("--backend", "memory", "--processes", "4")
    assert "4 processes, in memory, a quota each" in out
    assert admitted > allowed
    assert "OVER THE LIMIT" in out


# -- service -----------------------------------------------------------------------------------


@functools.cache
def load(name: str) -> ModuleType:
    """examples/<name>.py imported (once) as the module `examples_<name>`."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


class Service(NamedTuple):
    """The service started under a TestClient, and the stand-in for the API it started."""

    client: TestClient
    provider: FakeProvider

    def ask(self) -> tuple[int, str | None]:
        """POST a prompt to /chat: the status and Retry-After of the answer."""
        response = self.client.post("/chat", json={"prompt": "Say hi"})
        return response.status_code, response.headers.get("Retry-After")


@pytest.fixture
def service() -> Iterator[Service]:
    """The service, started (its lifespan configures the shield) with fresh shield state on a
    FakeClock, which `isolated` gives back as it was when the test ends."""
    app: FastAPI = load("service").app
    with isolated(), TestClient(app) as client:
        yield Service(client, app.state.provider)


def test_service_answers_until_the_quota_is_used_then_429_with_retry_after(
    service: Service,
) -> None:
    response = service.client.post("/chat", json={"prompt": "Say hi"})
    assert response.status_code == 200
    assert response.json() == {"model": "gpt-4o-mini", "answer": " ".join(["ok"] * 16)}
    assert [service.ask() for _ in range(2)] == [(200, None)] * 2
    # 3 requests a minute: the next permit comes 20 s after the third.
    assert service.ask() == (429, "20")


def test_service_passes_on_the_providers_wait_rounded_up(service: Service) -> None:
    service.provider.throttle(29.2)  # more than the policy's max_retry_after
    assert service.ask() == (429, "30")
    assert service.ask() == (429, "30")  # the model is paused for every request meanwhile


def test_service_answers_503_when_the_quota_is_gone(service: Service) -> None:
    service.provider.insufficient_quota()
    assert service.ask() == (503, None)


def test_service_answers_502_when_the_provider_fails_every_attempt(service: Service) -> None:
    service.provider.fail(503, times=2)
    assert service.ask() == (502, None)
    assert service.ask() == (200, None)
