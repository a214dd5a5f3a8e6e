"""The dialects the fake provider speaks, by the path each answers on."""

from __future__ import annotations

from .anthropic_dialect import PATH as ANTHROPIC_PATH
from .anthropic_dialect import Anthropic
from .openai_dialect import PATH as OPENAI_PATH
from .openai_dialect import OpenAI

__all__ = ["ANTHROPIC_PATH", "DIALECTS", "OPENAI_PATH", "Dialect"]

Dialect = OpenAI | Anthropic
DIALECTS: dict[str, Dialect] = {OPENAI_PATH: OpenAI(), ANTHROPIC_PATH: Anthropic()}
