"""`fake-provider`: the fake OpenAI and Anthropic API on 127.0.0.1, for local development.

The options are those of `python -m rate_limit_shield.testing.provider`, passed on as given:
`rate-limit-shield fake-provider --help` lists them.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

__all__ = ["add_command"]


def add_command(commands: Any) -> None:
    command = commands.add_parser(
        "fake-provider",
        add_help=False,  # its own --help, with every option, is the provider's
        help="serve a fake OpenAI and Anthropic API on 127.0.0.1 (--port N, limits, faults)",
    )
    command.set_defaults(run=functools.partial(_serve, command.prog), passes_on=True)


def _serve(prog: str, arguments: argparse.Namespace) -> int:
    """The provider's own command line, on the options `main` passed on."""
    from ..testing.provider import main

    try:
        return main(arguments.passed_on, prog=prog)
    except SystemExit as done:  # its --help, or its argparse refusing an option
        return done.code if isinstance(done.code, int) else 2
