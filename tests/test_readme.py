"""The README's examples run as written: each Python block, and the TOML configuration."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import rate_limit_shield as rls
from rate_limit_shield.testing import isolated

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def run(source: str) -> str:
    """Run one block in a fresh namespace, with fresh shield state; return what it printed."""
    printed = io.StringIO()
    with isolated(), contextlib.redirect_stdout(printed):
        exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
    return printed.getvalue()


def test_the_readme_has_the_examples_this_file_checks() -> None:
    assert len(blocks("python")) >= 5
    assert len(blocks("toml")) == 1


@pytest.mark.parametrize("source", blocks("python"), ids=lambda source: source.splitlines()[2])
def test_python_example_runs(source: str) -> None:
    run(source)


def test_quickstart_prints_both_calls() -> None:
    printed = run(blocks("python")[0]).splitlines()
    assert printed == ["A long page about token buckets ...", "claude-sonnet-4 says hi to 'Ada'"]


def test_stream_example_retries_before_the_first_token() -> None:
    (stream,) = [source for source in blocks("python") if "def tokens" in source]
    assert (
        run(stream).strip() == "['streams', 'are', 'retried', 'until', 'their', 'first', 'token'] 2"
    )


def test_toml_example_configures(tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text(blocks("toml")[0], encoding="utf-8")
    with isolated():
        rls.configure_from_file(path)
        key = rls.default_registry().key("gpt-4o-mini")
        assert key.pattern == "gpt-4o*"
        assert key.policy.rpm == 500 and key.policy.fallbacks == ("claude-sonnet-4",)
        assert rls.default_registry().key("other").retry.max_attempts == 4  # type: ignore[union-attr]


def test_the_set_up_commands_are_the_ones_ci_runs() -> None:
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    for command in blocks("bash")[:2]:
        assert command.strip() in ci
