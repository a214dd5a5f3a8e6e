"""The programs in examples/ run as users run them, and do what their docstrings say.

Each runs in a subprocess with this interpreter, as `python examples/<name>.py` from the
repository's root, except the FastAPI service, which runs in this process under FastAPI's
TestClient.
"""

from __future__ import annotations

import importlib.util
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


def run(*command: str) -> subprocess.CompletedProcess[str]:
    """`python *command` from the repository's root; it must exit 0."""
    done = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
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


# -- service -----------------------------------------------------------------------------------


def load(name: str) -> ModuleType:
    """examples/<name>.py imported as the module `examples_<name>`."""
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
