"""What may be said of an error in a log line: nothing that could be a secret.

An SDK's error carries its request (an `Authorization`, `x-api-key` or `api-key` header) and
its message may quote a key, a URL with a password or a provider's own words: the library
never renders a foreign error's message, only its class and HTTP status. Its own messages
(a `ShieldError`'s) are rendered with anything shaped like a credential masked, in case a
provider's words reached them.
"""

from __future__ import annotations

import re

from .errors import ShieldError

__all__ = ["describe", "redact"]

_MASK = "***"
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@", re.IGNORECASE)
_NAMED = re.compile(
    r"\b(authorization|proxy-authorization|x-api-key|api[-_]?key|x-goog-api-key|access[-_]token"
    r"|token|password|passwd|secret|key)(\"?'?\s*[:=]\s*\"?'?)((?:bearer|basic)\s+)?"
    r"[^\s\"',;&)}\]]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(bearer|basic)\s+[a-z0-9._~+/=-]+", re.IGNORECASE)
_KEY_SHAPES = re.compile(
    r"\b(?:sk-[a-z0-9_-]{6,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{20,}|xox[a-z]-[a-z0-9-]{6,})",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with URL passwords, credential headers and parameters, bearer tokens and API keys
    of the usual shapes (`sk-...`) masked."""
    text = _URL_PASSWORD.sub(rf"\1{_MASK}@", text)
    text = _NAMED.sub(lambda match: f"{match[1]}{match[2]}{match[3] or ''}{_MASK}", text)
    text = _BEARER.sub(rf"\1 {_MASK}", text)
    return _KEY_SHAPES.sub(_MASK, text)


def describe(error: BaseException) -> str:
    """`error` in words safe to log: a `ShieldError`'s message (redacted), or only the class
    and the HTTP status of any other."""
    name = type(error).__name__
    if isinstance(error, ShieldError):
        hint = f" (retry after {error.retry_after:.3f}s)" if error.retry_after is not None else ""
        return f"{name}: {redact(error.message)}{hint}"
    status = _status(error)
    return name if status is None else f"{name} (HTTP {status})"


def _status(error: BaseException) -> int | None:
    for holder in (error, getattr(error, "response", None)):
        status = getattr(holder, "status_code", None)
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
            return status
    return None
