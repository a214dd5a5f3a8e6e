"""The examples of README.md and docs/ run as written, and every name they use exists.

Each ```python block runs alone, in a fresh namespace under `testing.isolated()`; one that names
`redis://localhost:6379` runs against this session's redis-server instead; one followed by a
```text block prints what it shows, last lines first.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
from pathlib import Path
from types import ModuleType

import pytest
from doc_pages import (
    REDIS_URL,
    ROOT,
    Block,
    blocks,
    dotted_names,
    imported_names,
    pages,
    resolve,
)

import rate_limit_shield as rls
from rate_limit_shield.testing import isolated

README = ROOT / "README.md"
PYTHON = [block for page in pages() for block in blocks(page, "python")]
TOML = [block for page in pages() for block in blocks(page, "toml")]


def run(block: Block, redis_url: str | None = None) -> str:
    """Run one block in a fresh namespace, with fresh shield state; return what it printed."""
    source = block.source
    if redis_url is not None:
        source = source.replace(REDIS_URL, redis_url.rsplit("/", 1)[0])
    printed = io.StringIO()
    with isolated(), contextlib.redirect_stdout(printed):
        exec(compile(source, block.where, "exec"), {"__name__": "docs_example"})
    return printed.getvalue()


@pytest.mark.parametrize("block", PYTHON, ids=lambda block: block.where)
def test_python_example_runs(block: Block, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if REDIS_URL in block.source else None
    printed = run(block, redis_url)
    if block.output is not None:  # the page shows the end of what it prints
        shown = block.output.strip().splitlines()
        assert printed.strip().splitlines()[-len(shown) :] == shown


@pytest.mark.parametrize("block", TOML, ids=lambda block: block.where)
def test_toml_example_configures(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "shield.toml"
    path.write_text(block.source, encoding="utf-8")
    with isolated():
        rls.configure_from_file(path)
        assert rls.default_registry().policies


SHOWN_ONLY = {"text", "bash", "console"}
"""Languages of blocks that are shown, not run: output and shell."""


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_block_is_run_or_shown_on_purpose(page: Path) -> None:
    """A ```py or unlabelled block would silently go untested: each names a language the tests
    run (python, toml) or one that is only shown."""
    unknown = [
        block.where
        for block in blocks(page)
        if block.language not in {"python", "toml"} | SHOWN_ONLY
    ]
    assert not unknown


def test_quickstart_prints_both_calls() -> None:
    printed = run(blocks(README, "python")[0]).splitlines()
    assert printed == ["A long page about token buckets ...", "claude-sonnet-4 says hi to 'Ada'"]


def test_the_set_up_commands_are_the_ones_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [block.source.strip() for block in blocks(README, "bash")[:2]]
    assert commands == [
        "python -m pip install -e . && rate-limit-shield demo",
        "python -m pip install -e '.[test]' && python -m pytest",
    ]
    for command in commands:
        assert command in ci


@functools.cache
def emitted_names() -> frozenset[str]:
    """The dotted names the package writes out rather than defines: its loggers, OpenTelemetry
    instruments, span events and attributes. They are its string literals that start with the
    package's name, or such a prefix in an f-string joined to a literal of the same module
    (`f"rate_limit_shield.{name}"` over `"breaker.state"`, ...)."""
    found: set[str] = set()
    prefix = f"{rls.__name__}."
    for path in Path(rls.__file__).parent.rglob("*.py"):
        nodes = list(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
        literals = {
            node.value
            for node in nodes
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        found |= {literal for literal in literals if literal.startswith(prefix)}
        prefixed = [
            node
            for node in nodes
            if isinstance(node, ast.JoinedStr)
            and isinstance(node.values[0], ast.Constant)
            and node.values[0].value == prefix
        ]
        if prefixed:
            found |= {prefix + literal for literal in literals}
    return frozenset(found)


def used_names(page: Path) -> set[str]:
    """Every name of the package a page uses: imported, or spelt `rls.X` / `rate_limit_shield.X`
    (less the names the package writes out, which its log and metric excerpts show)."""
    imported = {f"{module}.{name}" if name else module for module, name in imported_names(page)}
    return imported | (dotted_names(page) - emitted_names())


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_name_a_page_uses_exists(page: Path) -> None:
    missing = []
    for dotted in sorted(used_names(page)):
        try:
            resolve(dotted)
        except (ImportError, AttributeError) as error:
            missing.append(f"{dotted}: {error}")
    assert not missing


def test_the_name_check_sees_what_the_readme_uses() -> None:
    taught = {"rate_limit_shield", "rate_limit_shield.configure", "rate_limit_shield.shielded"}
    assert taught <= used_names(README)
    assert isinstance(resolve("rate_limit_shield.breaker.CircuitBreaker"), type)
    assert isinstance(resolve("rate_limit_shield.backends.redis"), ModuleType)
    for wrong in ("rate_limit_shield.backends.NoSuchBackend", "rate_limit_shield.no.such"):
        with pytest.raises((ImportError, AttributeError)):
            resolve(wrong)
