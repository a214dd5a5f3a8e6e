"""The `rate-limit-shield` command line: each command, its exit status, and bad input told in
one line on stderr, never a traceback."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import rate_limit_shield as rls
from rate_limit_shield import demo
from rate_limit_shield.cli import main
from rate_limit_shield.cli._output import LiveBlock
from rate_limit_shield.cli.demo import _View
from rate_limit_shield.testing import FakeClock

POLICIES = """\
[policies.default]
rpm = 60
retry = { attempts = 4 }

[policies."gpt-4o*"]
rpm = 500
tpm = 30000
breaker = { failure_rate = 0.5, shared = true }
fallbacks = ["claude-sonnet-4"]

[policies."gpt-*"]
rpm = 100
breaker = { slow_call_duration = 20, window_seconds = 120, max_recovery_timeout = 300 }

[policies."claude-sonnet-4"]
rpm = 40
bulkhead = { max_concurrent = 8 }
retry = { attempts = 2, backoff = "decorrelated", budget = { ratio = 0.1 } }
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The error a failed command printed: exactly one line, and no traceback."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rate-limit-shield")
    return lines[0]


@pytest.fixture
def policies(tmp_path: Path) -> str:
    path = tmp_path / "shield.toml"
    path.write_text(POLICIES, encoding="utf-8")
    return str(path)


# -- the command line itself ------------------------------------------------------------------


def test_python_m_prints_the_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rate_limit_shield", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"rate-limit-shield {rls.__version__}"
    assert done.stderr == ""


@pytest.mark.parametrize(
    "argv",
    [[], ["demo"], ["check"], ["explain"], ["status"], ["fake-provider"]],
    ids=lambda argv: " ".join(argv) or "top",
)
def test_help_everywhere(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv, "--help")
    assert code == 0
    assert out.startswith(f"usage: rate-limit-shield {' '.join(argv)}".rstrip())
    assert err == ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["check"],
        ["explain", "only-a-file.toml"],
        ["status"],
        ["status", "--backend", "redis://127.0.0.1:1", "--watch", "soon"],
        ["demo", "--slow"],
        ["check", "shield.toml", "--bogus"],
    ],
    ids=lambda argv: " ".join(argv) or "nothing",
)
def test_a_bad_command_line_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "--help" in one_line_error(err)
    assert out == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_live_block_is_redrawn_in_place_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    screen = Terminal()
    block = LiveBlock(screen)
    block.show("one\ntwo")
    block.show("three")
    assert screen.getvalue() == "one\ntwo\n\x1b[2F\x1b[Jthree\n"  # up 2 lines, clear, redraw


def test_a_live_block_prints_below_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    for stream in (Terminal(), io.StringIO()):
        block = LiveBlock(stream)
        block.show("one")
        block.show("two")
        assert stream.getvalue() == "one\ntwo\n"


# -- check ------------------------------------------------------------------------------------


def test_check_prints_each_patterns_policy_defaults_included(
    capsys: pytest.CaptureFixture[str], policies: str
) -> None:
    code, out, err = run(capsys, "check", policies)
    assert (code, err) == (0, "")
    header, columns, _, *rows = out.splitlines()
    assert header == f"{policies}: 4 policies, strict = false, backend = memory"
    assert columns.split() == [
        "pattern", "limits", "max", "wait", "timeout", "retry", "breaker", "bulkhead", "fallbacks",
    ]  # fmt: skip
    patterns = [row.split()[0] for row in rows if not row.startswith(" ")]
    assert patterns == ["default", "gpt-4o*", "gpt-*", "claude-sonnet-4"]
    for shown in (
        "500/60s requests",
        "30000/60s tokens",
        "4 attempts",
        "1s x2 to 30s, full jitter",  # RetryPolicy's defaults, filled in
        "50% failed over 20 calls (min 10)",
        "100% slower than 20s over 2m (min 10 calls)",
        "open 30s to 5m",
        "shared",
        "8 at once",
        "budget 10% + 1/s over 10s",
        "decorrelated jitter",
        "claude-sonnet-4",
    ):
        assert shown in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[policies."gpt"]\nrpm = -1\n', 'policies["gpt"].rpm: -1 is not > 0'),
        (
            '[policies."gpt"]\nretry = { attempts = 0 }\n',
            'policies["gpt"].retry.attempts: 0 is not an integer >= 1',
        ),
        ('[policies."gpt"]\nrmp = 5\n', "unknown key 'rmp' (did you mean 'rpm'?)"),
        ('[policies."gpt"]\nrpm = \n', "invalid TOML"),
        ('[policy."gpt"]\nrpm = 5\n', "unknown key 'policy'"),
    ],
)
def test_check_a_bad_file_exits_2_with_the_config_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    code, out, err = run(capsys, "check", str(path))
    assert code == 2
    line = one_line_error(err)
    assert line.startswith(f"rate-limit-shield: {path}: ") and message in line
    assert out == ""


def test_check_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "check", str(tmp_path / "none.toml"))
    assert code == 2
    assert "cannot read the configuration file" in one_line_error(err)


def test_check_never_prints_a_backends_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "redis.toml"
    path.write_text(
        'backend = "redis://fleet:s3cret@127.0.0.1:1/0"\n[policies.default]\nrpm = 5\n',
        encoding="utf-8",
    )
    code, out, err = run(capsys, "check", str(path))
    assert code == 0
    assert "backend = redis://fleet:***@127.0.0.1:1/0" in out
    assert "s3cret" not in out + err


# -- explain ----------------------------------------------------------------------------------


def test_explain_a_glob_names_the_globs_it_beat(
    capsys: pytest.CaptureFixture[str], policies: str
) -> None:
    code, out, err = run(capsys, "explain", policies, "gpt-4o-mini")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "gpt-4o-mini: policy 'gpt-4o*', the most specific of 2 matching globs"
    assert "'gpt-4o*': 6 literal characters  <- chosen" in lines[2]
    assert "'gpt-*': 4 literal characters" in lines[3] and "chosen" not in lines[3]
    assert "30000/60s tokens" in out  # the chosen policy's row


def test_explain_an_exact_name_wins_over_the_globs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "shield.toml"
    path.write_text('[policies."gpt-4o"]\nrpm = 1\n[policies."gpt-*"]\nrpm = 2\n', "utf-8")
    code, out, _ = run(capsys, "explain", str(path), "gpt-4o")
    assert code == 0
    assert out.splitlines()[0] == "gpt-4o: policy 'gpt-4o', its exact name"
    assert "'gpt-*': 4 literal characters" in out and "chosen" not in out


def test_explain_follows_the_registrys_tie_breaks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Equally literal globs: the longer wins; equally long ones: the first in the file."""
    path = tmp_path / "shield.toml"
    globs = ("gpt-4*", "gpt-?o*", "*-4o*")
    path.write_text("".join(f'[policies."{glob}"]\nrpm = 1\n' for glob in globs), "utf-8")
    registry = rls.Registry()
    registry.configure_from_file(path)
    assert registry.key("gpt-4o").pattern == "gpt-?o*"
    code, out, _ = run(capsys, "explain", str(path), "gpt-4o")
    assert code == 0
    globs = [line.split("'")[1] for line in out.splitlines() if "literal characters" in line]
    assert globs == ["gpt-?o*", "gpt-4*", "*-4o*"]
    assert "'gpt-?o*': 5 literal characters  <- chosen" in out


def test_explain_the_default(capsys: pytest.CaptureFixture[str], policies: str) -> None:
    code, out, _ = run(capsys, "explain", policies, "llama-3")
    assert code == 0
    assert out.splitlines()[0] == (
        "llama-3: policy 'default': no exact name or glob matches 'llama-3'"
    )


def test_explain_the_built_in_policy(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text('[policies."gpt-*"]\nrpm = 1\n', "utf-8")
    code, out, _ = run(capsys, "explain", str(path), "llama-3")
    assert code == 0
    assert out.splitlines()[0].startswith("llama-3: the built-in policy")
    assert "(built-in)" in out


def test_explain_a_strict_refusal_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "shield.toml"
    path.write_text('strict = true\n[policies."gpt-*"]\nrpm = 1\n', "utf-8")
    code, out, err = run(capsys, "explain", str(path), "llama-3")
    assert code == 1
    assert out.splitlines()[0] == (
        "llama-3: refused: unknown model 'llama-3': no policy matches it and strict=True "
        "(policies: 'gpt-*')"
    )
    assert err == ""


# -- demo -------------------------------------------------------------------------------------


def test_the_demo_plays_every_stage_and_sums_them_up() -> None:
    """On a FakeClock: the same requests as in real time, without waiting for any."""
    clock = FakeClock()
    configured = dict(rls.default_registry().policies)
    last = demo.run(lambda progress: None, timing=demo.FULL, clock=clock)
    gpt, claude = last.models
    assert (gpt.model, claude.model) == (demo.GPT, demo.CLAUDE)
    calls = demo.FULL.calls + 6  # the burst, and one call per earlier stage (three in the third)
    # Two retries of the 503s, one after the 429, two of the first call of the outage.
    assert (gpt.calls, gpt.answered, gpt.retries, gpt.throttled) == (calls, calls - 3, 5, 1)
    # The breaker opened on the outage's 4th failure: the second call fell back at once, the
    # third was refused without calling; the probe then closed it.
    assert (gpt.refused, gpt.fell_back, gpt.breaker) == (1, 3, "closed")
    assert (claude.calls, claude.answered, claude.requests) == (0, 3, 3)
    assert gpt.requests == calls + 4  # the retries that reached the provider: 2 + 1 + 2 - 1
    assert last.statuses == {200: calls, 429: 1, 503: 6}  # none of the burst was throttled
    assert clock.monotonic() >= demo.FULL.recovery + (calls - 6 - demo.FULL.burst) / 10
    assert dict(rls.default_registry().policies) == configured  # a registry of its own


def test_the_demos_plain_view_prints_each_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Reading the breaker moves it to half-open, which logs a line while a report is being
    made: that line is printed once, not again by the report made before it."""
    view = _View()
    last = demo.run(view.update, timing=demo.QUICK, clock=FakeClock())
    assert capsys.readouterr().out.splitlines() == list(last.log)
    assert sum("open -> half_open" in line for line in last.log) == 1


def test_the_demos_live_view_redraws_its_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    view = _View()
    last = demo.run(view.update, timing=demo.QUICK, clock=FakeClock())
    frames = screen.getvalue().split("\x1b[J")
    assert len(frames) > 50  # a frame after every step
    final = frames[-1]
    assert final.startswith("rate-limit-shield demo: stage 5/5")
    assert "[##############################] 100%" in final
    assert final.rstrip().endswith(last.log[-1])  # the last lines of what happened
    assert "fake-gpt-4o  36     33" in final  # calls and answers, per model


def test_demo_quick_runs_in_a_few_seconds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a console where logging is not configured: the library's warnings (a give-up, an
    open circuit) would go to stderr across the view, which tells them already."""
    monkeypatch.setattr(logging.root, "handlers", [])
    started = time.monotonic()
    code, out, err = run(capsys, "demo", "--quick")
    assert (code, err) == (0, "")
    assert time.monotonic() - started < 30  # a few seconds, with room for a busy machine
    for seen in (
        "[1/5]",
        "retrying in",
        "throttled: the key pauses 0.20s (HTTP 429)",
        "breaker closed -> open",
        "falling back to fake-claude",
        "breaker half_open -> closed",
        "the provider, whose limit is 20/s too, throttled 0 of them",
        "Summary: 5 stages in",
    ):
        assert seen in out
    assert "\x1b[" not in out  # not a terminal: plain lines, nothing redrawn


# -- fake-provider ----------------------------------------------------------------------------


def test_fake_provider_serves_until_ctrl_c() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "rate_limit_shield", "fake-provider", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # printed once it listens
        assert first.startswith("FakeProvider serving on http://127.0.0.1:")
        url = first.split()[-1] + "/v1/chat/completions"
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            assert json.load(response)["model"] == "gpt-4o"
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0
        assert "Traceback" not in err
    finally:
        server.kill()
        server.wait()


def test_fake_provider_refuses_a_bad_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "fake-provider", "--requests", "-5")
    assert code == 2
    assert "Traceback" not in err and "requests" in err
    assert out == ""
