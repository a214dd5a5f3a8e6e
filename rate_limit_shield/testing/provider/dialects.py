"""The dialects the fake provider speaks, by the path each answers on, and which models each
serves."""

from __future__ import annotations

from fnmatch import fnmatchcase

from .anthropic_dialect import PATH as ANTHROPIC_PATH
from .anthropic_dialect import Anthropic
from .openai_dialect import PATH as OPENAI_PATH
from .openai_dialect import OpenAI

__all__ = ["ANTHROPIC_PATH", "DIALECTS", "OPENAI_PATH", "Dialect", "serves"]

Dialect = OpenAI | Anthropic
DIALECTS: dict[str, Dialect] = {OPENAI_PATH: OpenAI(), ANTHROPIC_PATH: Anthropic()}


def _named(model: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(model, pattern) for pattern in patterns)


def serves(dialect: Dialect, model: str, models: tuple[str, ...] | None) -> bool:
    """Whether `dialect` answers `model` rather than with its 404: its own models (OpenAI's
    gpt-*, o1..., Anthropic's claude-*) and the names or patterns in `models`, always; another
    provider's models, never unless named; a name of no provider's, only while `models` is None,
    so that neutral names ("bench-model") keep working until the caller says what exists."""
    if _named(model, dialect.own_models) or (models is not None and _named(model, models)):
        return True
    if models is not None:
        return False
    return not any(_named(model, other.own_models) for other in DIALECTS.values())
