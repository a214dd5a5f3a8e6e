"""What providers say and spend: rate-limit headers, the error taxonomy, token costs, pacing.

Nothing here imports a provider SDK: errors and responses are read by their shape
(`status_code`, `headers`, `body`, error codes, `usage`), so every SDK and plain HTTP clients work.
"""

from __future__ import annotations

from .classify import LLMClassifier, headers_of, status_of
from .headers import Quota, RateLimitInfo, parse_retry_after
from .pacing import AdaptiveRate, Guide
from .tokens import LearnedEstimate, estimate_cost, usage_of

__all__ = [
    "LLMClassifier",
    "headers_of",
    "status_of",
    "Quota",
    "RateLimitInfo",
    "parse_retry_after",
    "AdaptiveRate",
    "Guide",
    "estimate_cost",
    "LearnedEstimate",
    "usage_of",
]
