"""`shield_client`: an SDK client whose every model call goes through that model's shield.

Each SDK family has a module here that shields its clients; `shield_client` picks it by the
top-level package of the client's class, or of the first of its bases that has one, so that a
subclass of an SDK's client is shielded as that SDK's. No SDK is imported until a client of it is
given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from ..registry import Registry, default_registry
from . import bedrock, stainless

__all__ = ["shield_client"]

C = TypeVar("C")

_FAMILIES: dict[str, Callable[[Any, Registry], Any]] = {
    "openai": stainless.shield,
    "anthropic": stainless.shield,
    "botocore": bedrock.shield,  # boto3's clients: Bedrock's runtime only
}
"""What shields the clients of each SDK, by the SDK's top-level package."""


def shield_client(client: C, *, registry: Registry | None = None) -> C:
    """A client that behaves as `client` does, except that every API call naming a `model=`
    goes through that model's shield (as `@shielded` calls do, in `registry` or the default one),
    whatever form it takes: plain, parsed, streamed, through a stream helper, or raw.

    The SDK's own retries are off in it (the shield retries, once); the rate-limit headers of
    every HTTP response it gets teach the model's key the provider's limits; usage settles token
    reservations, from parsed results, streams and raw responses alike. `client` itself is left
    as it was. For `openai` (`OpenAI`, `AsyncOpenAI`, `AzureOpenAI`) and `anthropic`
    (`Anthropic`, `AsyncAnthropic`) clients, and boto3 `bedrock-runtime` clients (see
    `clients.bedrock`: their model calls, by `modelId`).
    """
    shield = _family(client)
    return cast(C, shield(client, registry if registry is not None else default_registry()))


def _family(client: object) -> Callable[[Any, Registry], Any]:
    for cls in type(client).__mro__:
        shield = _FAMILIES.get(cls.__module__.partition(".")[0])
        if shield is not None:
            return shield
    raise TypeError(
        f"shield_client: {type(client).__qualname__} is not a client of an SDK it knows; give a "
        f"client of one of: {', '.join(sorted(_FAMILIES))}"
    )
