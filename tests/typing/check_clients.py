"""Checked by `mypy --strict tests/typing`: a shielded client keeps its client's type."""

from __future__ import annotations

import anthropic
import openai
from typing_extensions import assert_type

import rate_limit_shield as rls


def check(client: openai.OpenAI, aclient: anthropic.AsyncAnthropic) -> None:
    assert_type(rls.shield_client(client), openai.OpenAI)
    registry = rls.default_registry()
    assert_type(rls.shield_client(aclient, registry=registry), anthropic.AsyncAnthropic)
