"""The fake provider on its own, for local development against real SDK clients:

    python -m rate_limit_shield.testing.provider --port 8080 --requests 60 --tokens 100000

`main(argv)` is what the `fake-provider` command of a command line calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .buckets import WINDOWS
from .server import FakeProvider

__all__ = ["main"]

_NAP = 3600.0  # seconds the main thread sleeps at a time; Ctrl-C wakes it


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m rate_limit_shield.testing.provider",
        description="A local fake OpenAI (/v1/chat/completions) and Anthropic (/v1/messages) "
        "API. Each model has its own buckets of the limits given, stated per minute in each "
        "API's headers.",
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port on 127.0.0.1, 0 for any free one (8080)"
    )
    for unit in ("requests", "tokens", "input-tokens", "output-tokens"):
        words = unit.replace("-", " ")
        parser.add_argument(f"--{unit}", type=float, metavar="N", help=f"{words} per window")
    parser.add_argument(
        "--per-seconds",
        type=int,
        default=60,
        choices=WINDOWS,
        help="the window: a minute, or a slice of one that enforces it (60)",
    )
    parser.add_argument(
        "--completion-tokens",
        type=int,
        nargs="+",
        default=[16],
        metavar="N",
        help="answer length, or the shortest and longest to draw from (16)",
    )
    parser.add_argument("--seed", type=int, help="seed of the drawn answer lengths")
    parser.add_argument("--stream-pace", type=float, metavar="N", help="tokens streamed a second")
    parser.add_argument(
        "--first-token-delay", type=float, metavar="SECONDS", help="a stream's time to first token"
    )
    parser.add_argument(
        "--models", nargs="+", metavar="NAME", help="the only other models served (or globs)"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Serve on 127.0.0.1 until interrupted (Ctrl-C); 0 then, 1 if the port is taken. Bad
    settings exit with status 2 and the reason, as argparse does."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    lengths = args.completion_tokens
    try:
        provider = FakeProvider(
            requests=args.requests,
            tokens=args.tokens,
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
            per_seconds=args.per_seconds,
            completion_tokens=lengths[0] if len(lengths) == 1 else tuple(lengths),
            seed=args.seed,
            stream_pace=args.stream_pace,
            first_token_delay=args.first_token_delay,
            models=args.models,
            port=args.port,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        provider.start()
    except OSError as error:
        print(
            f"{parser.prog}: cannot listen on 127.0.0.1:{args.port}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    print(f"FakeProvider serving on {provider.url}", flush=True)
    print(f"  OpenAI:    base_url={provider.url}/v1")
    print(f"  Anthropic: base_url={provider.url}")
    print("Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(_NAP)
    except KeyboardInterrupt:
        return 0
    finally:
        provider.stop()
