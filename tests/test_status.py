"""`rate-limit-shield status` and the reader under it, against a real redis-server: the state a
fleet of processes shares there, as they left it."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from redis_server import run_fleet

import rate_limit_shield as rls
from rate_limit_shield.backends.redis import SharedBreaker, from_url
from rate_limit_shield.backends.redis.status import KeyPolicy, read_fleet
from rate_limit_shield.cli import main

CALLS = 7  # successful calls each process makes
POLICIES = """\
backend = "{url}"

[policies."gpt-fleet"]
rpd = 1000
retry = {{ attempts = 1 }}

[policies."budget-fleet"]
retry = {{ attempts = 2, base_delay = 0, budget = {{ shared = true }} }}
breaker = {{ failure_threshold = 100 }}

[policies."breaker-fleet"]
retry = {{ attempts = 1 }}
breaker = {{ failure_threshold = 1, recovery_timeout = 60, shared = true }}

[policies."paused-fleet"]
rpm = 60
max_wait = 0
retry = {{ attempts = 1 }}
"""


class Throttled(Exception):
    """A 429 as an HTTP client raises it: status and headers."""

    status_code = 429
    headers = {"retry-after": "30"}  # noqa: RUF012


def _member(config: str, start: Any, results: Any) -> None:
    """One process of the fleet: successes on gpt-fleet, failures retried on budget-fleet's
    shared budget, a failure that opens breaker-fleet's shared breaker, and a 429."""
    logging.getLogger("rate_limit_shield").addHandler(logging.NullHandler())  # give-ups expected
    registry = rls.Registry()
    registry.configure_from_file(config)

    @rls.shielded(registry=registry)
    def call(*, model: str, error: BaseException | None = None) -> str:
        if error is not None:
            raise error
        return "ok"

    start.wait()
    for _ in range(CALLS):
        call(model="gpt-fleet")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            call(model="budget-fleet", error=ConnectionError("reset"))
    with pytest.raises((ConnectionError, rls.CircuitOpen)):
        call(model="breaker-fleet", error=ConnectionError("reset"))
    with pytest.raises((Throttled, rls.RateLimited)):  # the second finds the key paused
        call(model="paused-fleet", error=Throttled("429 Too Many Requests"))
    results.put(os.getpid())


@pytest.fixture
def fleet(redis_url: str, tmp_path: Path) -> str:
    """Two processes have made their calls; returns their policy file."""
    config = tmp_path / "fleet.toml"
    config.write_text(POLICIES.format(url=redis_url), encoding="utf-8")
    pids = run_fleet(_member, (str(config),), size=2)
    assert len(set(pids)) == 2
    return str(config)


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["status", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_shows_what_two_processes_share(
    capsys: pytest.CaptureFixture[str], redis_url: str, fleet: str
) -> None:
    code, out, err = status(capsys, "--backend", redis_url, "--config", fleet, "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["backend"] == redis_url and shown["prefix"] == "rls"
    assert abs(shown["now"] - time.time()) < 60
    models = {model["model"]: model for model in shown["models"]}
    assert sorted(models) == ["breaker-fleet", "budget-fleet", "gpt-fleet", "paused-fleet"]

    gpt = models["gpt-fleet"]
    assert gpt["processes"] == 2  # both limiters sent a heartbeat
    [limit] = gpt["limits"]
    assert limit["limit"] == "1000/86400s requests" and limit["capacity"] == 1000
    assert 1000 - 2 * CALLS <= limit["left"] < 1000 - 2 * CALLS + 1  # refills 1 per 86.4s
    assert limit["full_in"] == pytest.approx((1000 - limit["left"]) * 86.4)
    assert gpt["paused_for"] == 0 and gpt["breaker"] is None and gpt["budget"] is None

    budget = models["budget-fleet"]["budget"]  # 3 calls, each retried once, in each process
    assert (budget["calls"], budget["retries"], budget["window"]) == (6, 6, 10)
    assert budget["retries_left"] == pytest.approx(0.2 * 6 + 1.0 * 10 - 6)

    breaker = models["breaker-fleet"]["breaker"]
    assert breaker["state"] == "open" and breaker["probes"] == 0
    assert 30 < breaker["open_for"] <= 60
    assert breaker["open_until"] == pytest.approx(shown["now"] + breaker["open_for"])

    paused = models["paused-fleet"]
    assert 15 < paused["paused_for"] <= 30  # the 429's Retry-After, for every process
    assert [limit["limit"] for limit in paused["limits"]] == ["60/60s requests"]


def test_status_table(capsys: pytest.CaptureFixture[str], redis_url: str, fleet: str) -> None:
    code, out, _ = status(capsys, "--backend", redis_url, "--config", fleet)
    assert code == 0
    head, blank, columns, _, *rows = out.splitlines()
    assert head.startswith(f"{redis_url} (prefix 'rls') at ") and head.endswith(": 4 models")
    assert blank == ""
    assert columns.split() == [
        "model", "processes", "limit", "left", "full", "in", "pause", "breaker", "probes",
        "retries",
    ]  # fmt: skip
    table = "\n".join(rows)
    assert f"gpt-fleet      2          1000/86400s requests  {1000 - 2 * CALLS}" in table
    assert "6 retries / 6 calls" in table and "5.2 left" in table
    assert "open " in table and "until " in table
    assert "--config" not in out  # every limit is known


def test_status_without_the_policy_file_names_limits_by_id(
    capsys: pytest.CaptureFixture[str], redis_url: str, fleet: str, monkeypatch: Any
) -> None:
    monkeypatch.delenv(rls.registry.CONFIG_ENV, raising=False)
    code, out, _ = status(capsys, "--backend", redis_url, "--json")
    assert code == 0
    models = {model["model"]: model for model in json.loads(out)["models"]}
    [limit] = models["gpt-fleet"]["limits"]
    assert limit["limit"].startswith("unknown ") and limit["left"] is None
    assert limit["full_in"] > 0
    assert models["breaker-fleet"]["breaker"]["state"] == "open"  # on Redis: told anyway
    budget = models["budget-fleet"]["budget"]
    assert (budget["calls"], budget["retries"], budget["retries_left"]) == (6, 6, None)
    code, out, _ = status(capsys, "--backend", redis_url)
    assert "--config FILE tells what each has left" in out


def test_status_reads_the_policy_file_the_environment_names(
    capsys: pytest.CaptureFixture[str], redis_url: str, fleet: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv(rls.registry.CONFIG_ENV, fleet)
    code, out, _ = status(capsys, "--backend", redis_url, "--json")
    assert code == 0
    models = {model["model"]: model for model in json.loads(out)["models"]}
    assert models["gpt-fleet"]["limits"][0]["limit"] == "1000/86400s requests"


def test_a_half_open_breakers_probes_in_flight(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    opener = SharedBreaker(client=client, name="probed", failure_threshold=1)
    opener.record(opener.acquire(), rls.Outcome.FAILURE)
    # The open time ends now, as if recovery_timeout had passed on the server.
    seconds, micros = client.time()
    client.hset("{rls:probed}:breaker", "open_until", repr(seconds + micros / 1e6 - 1.0))
    prober = SharedBreaker(client=client, name="probed", failure_threshold=1)
    prober.acquire()  # leases one of the fleet's probe slots
    [model] = read_fleet(client, policy_of=lambda name: KeyPolicy(shared_breaker=True)).models
    assert model.breaker is not None
    assert (model.breaker.state, model.breaker.probes, model.breaker.open_until) == (
        "half_open", 1, None,
    )  # fmt: skip
    assert model.processes == 0 and model.limits == () and model.budget is None


def test_a_forced_open_breaker_and_a_shared_one_never_opened(redis_url: str) -> None:
    client = from_url(redis_url)[0]
    SharedBreaker(client=client, name="forced").force_open()
    policy = KeyPolicy(shared_breaker=True)
    forced = read_fleet(client, policy_of=lambda name: policy).models[0]
    assert forced.breaker is not None and forced.breaker.state == "forced_open"
    [closed] = read_fleet(client, policy_of=lambda name: policy, models=["quiet"]).models
    assert closed.breaker is not None and closed.breaker.state == "closed"


def test_status_of_another_prefix(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    client = from_url(redis_url)[0]
    backend = rls.backends.RedisBackend(client, prefix="team")
    backend.limiter([rls.Limit(10, 60)], clock=rls.SYSTEM_CLOCK, name="gpt").try_acquire(3)
    code, out, _ = status(capsys, "--backend", redis_url, "--prefix", "team", "--json")
    assert code == 0
    [model] = json.loads(out)["models"]
    assert model["model"] == "gpt" and len(model["limits"]) == 1
    code, out, _ = status(capsys, "--backend", redis_url, "--json")
    assert json.loads(out)["models"] == []  # nothing under rls


def test_status_watch_refreshes_until_ctrl_c(
    capsys: pytest.CaptureFixture[str], redis_url: str, monkeypatch: Any
) -> None:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    code, out, err = status(capsys, "--backend", redis_url, "--watch", "0.5", "--json")
    assert (code, err, naps) == (0, "", [0.5, 0.5])
    assert [json.loads(line)["models"] for line in out.splitlines()] == [[], []]  # then Ctrl-C


@pytest.mark.parametrize(
    ("backend", "code", "message"),
    [
        ("redis://:s3cret@127.0.0.1:1/0", 1, "cannot read Redis at redis://:***@127.0.0.1:1/0"),
        ("http://127.0.0.1:1", 2, "--backend http://127.0.0.1:1: "),
    ],
)
def test_status_errors_are_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str], backend: str, code: int, message: str
) -> None:
    exit_code, out, err = status(capsys, "--backend", backend)
    assert exit_code == code and out == "" and "Traceback" not in err and "s3cret" not in err
    [line] = err.splitlines()
    assert line.startswith(f"rate-limit-shield: {message}")
