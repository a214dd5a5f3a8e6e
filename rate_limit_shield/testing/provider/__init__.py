"""A local fake OpenAI and Anthropic HTTP server, for tests and benchmarks with the real SDKs."""

from .server import FakeProvider

__all__ = ["FakeProvider"]
