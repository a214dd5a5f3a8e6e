"""A local fake OpenAI and Anthropic HTTP server, for tests and benchmarks with the real SDKs,
and `main(argv)` to run one on its own (`python -m rate_limit_shield.testing.provider`)."""

from .cli import main
from .server import FakeProvider

__all__ = ["FakeProvider", "main"]
