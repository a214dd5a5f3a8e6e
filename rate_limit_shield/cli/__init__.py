"""The `rate-limit-shield` command (also `python -m rate_limit_shield`): a demo of the shield,
a policy file's check and explanation, a Redis fleet's live state, and a fake LLM provider.

Each command lives in a module of this package and adds its own subparser; this one parses,
dispatches and turns every failure into one line on stderr and a non-zero exit: 2 for a bad
command line or configuration, 1 for anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import ConfigError
from . import demo, policies, provider, status
from ._output import CommandError

__all__ = ["main", "CommandError"]

PROG = "rate-limit-shield"
_USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, pointing at `--help`."""

    def error(self, message: str) -> NoReturn:
        self.exit(_USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog=PROG,
        description="Rate limits, circuit breakers, bulkheads and retries for LLM API calls: "
        "see them work (demo), check a policy file (check, explain), watch a fleet on Redis "
        "(status), or serve a fake LLM provider to develop against (fake-provider).",
    )
    top.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = top.add_subparsers(title="commands", metavar="COMMAND", required=True)
    demo.add_command(commands)
    policies.add_commands(commands)
    status.add_command(commands)
    provider.add_command(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`); returns the exit status, also
    for `--help`, `--version` and a bad command line."""
    top = parser()
    try:
        arguments, extra = top.parse_known_args(argv)
        if extra and not getattr(arguments, "passes_on", False):  # only fake-provider's go on
            top.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as done:  # argparse's way of ending: keep it a return value
        return done.code if isinstance(done.code, int) else _USAGE_ERROR
    arguments.passed_on = extra
    try:
        code: int = arguments.run(arguments)
    except ConfigError as error:
        return _fail(error.message, _USAGE_ERROR)
    except CommandError as error:
        return _fail(str(error), error.code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as error:  # a bug or an unforeseen failure: still one line, no traceback
        return _fail(f"{type(error).__name__}: {error}", 1)
    return code


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
