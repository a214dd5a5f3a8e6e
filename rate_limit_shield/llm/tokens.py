"""What a call costs in tokens: an estimate from its arguments before, the real usage after.

Token limits (`tpm`, `itpm`, `otpm`) are charged before a call goes out, when only its arguments
are known, and settled from the response's `usage` once it has come back, refunding or charging
the difference. Both sides read SDK objects (pydantic models, read by attribute) and raw JSON or
Bedrock responses (dicts, read by key) through one accessor, and import no SDK. A stream that
fails before it reports its usage is settled at what it delivered (`StreamTally`).

The estimate is deliberately cheap and roughly right, never exact: a tokenizer per model would
cost more than the call's bookkeeping is worth, and the settle corrects every estimate.

- Text: UTF-8 bytes / `BYTES_PER_TOKEN` (4, English averages about that; multibyte scripts cost
  more tokens per character, and bytes follow them better than characters).
- Framing: `MESSAGE_OVERHEAD_TOKENS` per message (OpenAI's cookbook counts 3 plus the role) and
  `REPLY_OVERHEAD_TOKENS` once for the primed reply; a system prompt or instructions count as
  one message, in however many blocks.
- Media: an image, document, audio or video part counts `MEDIA_TOKENS`, not the length of its
  base64 data, which says nothing of its tokens. 1,600 is about what Anthropic charges for the
  largest image it takes without downscaling (1.15 megapixels / 750); other providers differ
  (Gemini: 258 per image) and a long PDF costs far more: the settle corrects the difference.
- Tools, function definitions and response schemas: the length of their compact JSON / 4.
  Providers add a hidden tool-use preamble on top (a few hundred tokens on Anthropic), which
  only the settle charges.
- The input total is rounded up once. Output: the call's limit on output tokens (`max_tokens`,
  `max_completion_tokens`, `max_output_tokens`, Gemini's `max_output_tokens`, Bedrock's
  `maxTokens`, and in an `invoke_model` body Llama's `max_gen_len`, Titan's `maxTokenCount`,
  Nova's `max_new_tokens`) times the number of choices (`n`, `candidate_count`), or
  `DEFAULT_OUTPUT_TOKENS` when the call sets no limit.
- Bedrock's `invoke_model` takes the request as a JSON `body` (bytes or str): it is read as the
  call's arguments (Anthropic's messages, a `prompt`, Titan's `inputText`...), up to
  `MAX_BODY_BYTES`; a stream is never read, since the SDK must send it whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ..limiter import Cost
from .classify import loaded_json

__all__ = [
    "estimate_cost",
    "LearnedEstimate",
    "usage_of",
    "StreamTally",
    "BYTES_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "REPLY_OVERHEAD_TOKENS",
    "MEDIA_TOKENS",
    "DEFAULT_OUTPUT_TOKENS",
    "MAX_BODY_BYTES",
]

BYTES_PER_TOKEN = 4
"""UTF-8 bytes of text per estimated token."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens of framing per message (role and separators)."""
REPLY_OVERHEAD_TOKENS = 3
"""Tokens of framing for the primed reply, once per call."""
MEDIA_TOKENS = 1_600
"""Tokens estimated for one image, document, audio or video part."""
DEFAULT_OUTPUT_TOKENS = 512
"""Output reserved for a call that sets no output limit: a typical reply. The trade-off: a higher
guess holds calls back near the limit (and a limit smaller than it could never grant the call),
a lower one lets a burst of concurrent calls overshoot until their settles charge the rest."""
MAX_BODY_BYTES = 1 << 20
"""The longest `invoke_model` body read for an estimate: about 250,000 tokens of text, more than
a model's context; a longer one holds media, whose base64 says nothing of its tokens, and is
not worth the milliseconds its JSON takes to decode. It costs one request until its settle."""

_MEDIA_BYTES = MEDIA_TOKENS * BYTES_PER_TOKEN
_MAX_DEPTH = 32  # nesting read at most: no real message is deeper, and a cycle ends here
_MAX_COUNT = 2.0**53  # larger "counts" are not counts (and would lose integer precision)

_TEXT_ARGUMENTS = (
    "messages",  # OpenAI chat, Anthropic, Bedrock converse
    "input",  # OpenAI responses
    "contents",  # Gemini
    "prompt",  # completions; Bedrock invoke_model bodies (Llama, Mistral)
    "inputText",  # Bedrock invoke_model bodies (Titan)
    "system",  # Anthropic, Bedrock
    "instructions",  # OpenAI responses
    "system_instruction",  # Gemini config
    "systemInstruction",
)
_SYSTEM_PROMPTS = frozenset({"system", "instructions", "system_instruction", "systemInstruction"})
_JSON_ARGUMENTS = (
    "tools",
    "functions",
    "response_format",  # OpenAI chat structured outputs
    "text",  # OpenAI responses: the output format
    "toolConfig",  # Bedrock
    "response_schema",  # Gemini config
    "responseSchema",
    "response_json_schema",
    "responseJsonSchema",
)
_OUTPUT_LIMITS = (
    "max_completion_tokens",
    "max_tokens",
    "max_output_tokens",
    "maxOutputTokens",
    "maxTokens",
    "max_gen_len",  # Bedrock invoke_model bodies: Llama
    "maxTokenCount",  # Titan
    "max_new_tokens",  # Nova
)
_CHOICES = ("n", "candidate_count", "candidateCount")
_NESTED_CONFIGS = (
    *("config", "generation_config", "generationConfig", "inferenceConfig"),
    "textGenerationConfig",  # Titan
)

_MEDIA_TYPES = frozenset(
    {"image", "image_url", "input_image", "document", "file", "input_file"}
    | {"audio", "input_audio", "video"}
)
_MEDIA_KEYS = frozenset(
    {"image", "document", "video", "audio", "image_url", "input_audio"}  # Bedrock, OpenAI
    | {"inline_data", "inlineData", "file_data", "fileData"}  # Gemini
)
_JSON_KEYS = frozenset({"input", "args", "response", "json"})  # tool calls and their results
_SKIPPED_KEYS = frozenset(
    {"type", "role", "id", "call_id", "tool_call_id", "tool_use_id", "toolUseId", "status"}
    | {"cache_control", "cachePoint", "signature", "encrypted_content"}
)

_PLAIN_RESULTS = frozenset({str, bytes, bytearray, int, float, bool, list, tuple, type(None)})
_NOT_PYDANTIC = object()
_RESPONSE_END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSE_TEXT_EVENTS = frozenset(  # OpenAI responses' events whose `delta` is text it wrote
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
_DELTA_TEXTS = ("text", "partial_json", "thinking")  # Anthropic's content_block_delta
_CHOICE_TEXTS = ("content", "refusal", "reasoning_content")  # OpenAI chat chunks' deltas
_MAX_CHUNK_BYTES = 65_536  # a Bedrock stream chunk read at most: one event is a few hundred


class _UsageNames(NamedTuple):
    """Where one provider's usage keeps its counts; the extras add to input and output."""

    input: str
    output: str
    input_extra: str = ""
    output_extra: str = ""


_USAGE_NAMES = (
    _UsageNames("prompt_tokens", "completion_tokens"),  # OpenAI chat completions
    # Anthropic (cache writes are charged to ITPM, cache reads are not); OpenAI responses
    _UsageNames("input_tokens", "output_tokens", input_extra="cache_creation_input_tokens"),
    _UsageNames("inputTokens", "outputTokens", input_extra="cacheWriteInputTokens"),  # Bedrock
    # Gemini, as SDK attributes and as JSON; thoughts are output not in the candidates' count
    _UsageNames(
        "prompt_token_count", "candidates_token_count", output_extra="thoughts_token_count"
    ),
    _UsageNames("promptTokenCount", "candidatesTokenCount", output_extra="thoughtsTokenCount"),
)


def estimate_cost(*args: object, **kwargs: object) -> dict[str, float]:
    """The estimated cost of an LLM SDK call, by unit, from its keyword arguments.

    Reads OpenAI chat completions and responses, Anthropic messages, Bedrock converse and Gemini
    generate_content arguments (see the module's docstring for the rules); positional arguments
    (a bound method's `self`) are ignored. Never raises: arguments of an unknown shape count the
    text found in them, and anything else counts nothing, since an estimate must not break a call.
    Without a prompt or an output limit, a call costs one request and no tokens.
    """
    return _estimate(kwargs, DEFAULT_OUTPUT_TOKENS)


class LearnedEstimate:
    """`estimate_cost` for one model key, for the calls that set no output limit, learning from
    the key's answers what to reserve for theirs.

    Such a call reserves nothing for its answer: a provider admits it on its prompt and charges
    the answer once it is complete (OpenAI counts the larger of `max_tokens` and the prompt's
    estimate), and so does the shield, whose settle charges the answer as a debt that holds
    back the calls waiting then, as the provider's bucket does. A reserve for it would run
    ahead of the provider's count: while the provider's bucket is full, it loses the refill
    that a schedule holding the reserve still counts, and when the answer ends the reserve
    comes back whole: more than the provider has (and while calls queue, nothing comes back at
    all: see `Reservation`).

    Once one of the key's successes reported no usage (a plain result, a stream without it:
    nothing would charge its answer), and until `window` answers have settled since, such a call
    reserves the mean answer of the key's settled calls weighted by length instead (mean of
    squares over mean, the last `window` weighing most; `DEFAULT_OUTPUT_TOKENS` before any).
    Weighted, because a long answer is in flight for longer: the calls a provider has charged
    and the shield not yet settled are mostly long ones. The shield calls `learn` with each
    call's real usage when it settles, and `unsettled` for a success that reported none.
    """

    __slots__ = ("_mean", "_squares", "_seen", "_unsettled", "window")

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._mean = float(DEFAULT_OUTPUT_TOKENS)
        self._squares = self._mean**2
        self._seen = 0
        self._unsettled = 0  # settled answers to come before the last unsettled one is past

    @property
    def output(self) -> int:
        """What a call that sets no output limit reserves for its answer now."""
        if not self._unsettled:
            return 0
        return math.ceil(self._squares / self._mean) if self._mean > 0.0 else 0

    def __call__(self, *args: object, **kwargs: object) -> dict[str, float]:
        return _estimate(kwargs, self.output)

    def learn(self, actual: object) -> None:
        """Take in a settled call's real cost (a mapping by unit); anything else is ignored."""
        if not isinstance(actual, Mapping):
            return
        output = actual.get("output_tokens")
        if isinstance(output, (int, float)) and 0.0 <= output < _MAX_COUNT:
            self._seen = seen = min(self._seen + 1, self.window)
            self._mean += (output - self._mean) / seen
            self._squares += (output * output - self._squares) / seen
            if self._unsettled:
                self._unsettled -= 1

    def unsettled(self) -> None:
        """A success reported no usage: its estimate stays charged, so the calls that set no
        output limit reserve their answers again, until `window` answers have settled since."""
        self._unsettled = self.window

    def __repr__(self) -> str:
        return f"LearnedEstimate(output={self.output}, seen={self._seen})"


def _estimate(kwargs: dict[str, object], unlimited_output: int) -> dict[str, float]:
    """`estimate_cost`, reserving `unlimited_output` for a call that sets no output limit."""
    if "modelId" in kwargs and "body" in kwargs:  # Bedrock invoke_model
        kwargs = _invoke_body(kwargs["body"])
    sources = [kwargs, *_nested_configs(kwargs)]
    text_bytes = 0
    messages = 0
    for source in sources:
        for name in _TEXT_ARGUMENTS:
            value = source.get(name)
            if value is not None:
                text_bytes += _text_bytes(value, 0)
                count = _message_count(value)
                messages += min(count, 1) if name in _SYSTEM_PROMPTS else count
        text_bytes += sum(_json_bytes(source.get(name)) for name in _JSON_ARGUMENTS)
    framing = messages * MESSAGE_OVERHEAD_TOKENS + REPLY_OVERHEAD_TOKENS if messages else 0
    limit = _first_count(sources, _OUTPUT_LIMITS)
    choices = _first_count(sources, _CHOICES)
    if limit is not None:
        output = math.ceil(limit)
    else:  # a call with no prompt at all is not an LLM call: it costs one request, no tokens
        output = unlimited_output if messages or text_bytes else 0
    return {
        "requests": 1,
        "input_tokens": math.ceil(text_bytes / BYTES_PER_TOKEN) + framing,
        "output_tokens": output * max(1, math.ceil(choices or 1)),
    }


def _invoke_body(body: object) -> dict[str, object]:
    """The JSON object an `invoke_model` body holds; empty when it is no such object, a stream,
    or longer than `MAX_BODY_BYTES`."""
    if not isinstance(body, (bytes, bytearray, str)) or len(body) > MAX_BODY_BYTES:
        return {}
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def usage_of(result: object) -> dict[str, float] | None:
    """The real cost of a call's result, by unit, or None when it reports no usage.

    OpenAI chat: `usage.prompt_tokens` / `completion_tokens`; OpenAI responses and Anthropic:
    `usage.input_tokens` / `output_tokens`; Anthropic's input adds `cache_creation_input_tokens`
    but not `cache_read_input_tokens`, which Anthropic does not charge to ITPM; Bedrock:
    `usage.inputTokens` (plus `cacheWriteInputTokens`) / `outputTokens`; Gemini: `usage_metadata`
    or `usageMetadata`, the candidates' and the thoughts' counts as output; Cohere: `usage` (v2)
    or `meta` (v1), their `tokens` (what the model read and wrote) rather than their
    `billed_units`. A plain HTTP response (httpx, httpx2, requests, aiohttp) is read for the
    usage in its JSON body once that body is in memory; a body not read yet is the caller's to
    stream, and is left alone. A dict it returns for a whole result always holds "requests": 1.

    Also called on every item of a stream, where the shield merges the dicts (a later value for
    a unit replaces an earlier one) and settles with the merge at the end. So a stream item gives
    what it knows: an OpenAI chat chunk its usage (the last one, with `stream_options=
    {"include_usage": True}`), Anthropic's `message_start` the whole count so far and
    `message_delta` only its cumulative `output_tokens` (and input when it carries one), OpenAI
    responses' end events (`response.completed`...) their response's usage, Bedrock's stream
    `metadata` event and Cohere's last event (`message-end`, v1's `stream-end`) their usage.
    Cheap on results without usage: a few field lookups.
    """
    if type(result) in _PLAIN_RESULTS:
        return None
    usage = _field(result, "usage")
    if usage is not None:
        return _counts(usage, partial=_kind(result) == "message_delta")
    if _empty_usage(result):  # an OpenAI chat chunk but the last: the common stream item
        return None
    kind = _kind(result)
    if kind == "message_start":
        usage = _field(_field(result, "message"), "usage")
    elif kind in _RESPONSE_END_EVENTS:
        usage = _field(_field(result, "response"), "usage")
    elif kind == "message-end":  # Cohere v2 stream's last event
        usage = _field(_field(result, "delta"), "usage")
    elif kind:  # any other typed event (Anthropic's, OpenAI responses', Cohere v2's) tells none
        return None
    else:
        usage = _field(result, "usage_metadata")  # Gemini SDK
        if usage is None:
            usage = _field(result, "usageMetadata")  # Gemini JSON
        if usage is None:
            usage = _field(_field(result, "metadata"), "usage")  # Bedrock stream's last event
        if usage is None:
            usage = _field(result, "meta")  # Cohere v1
        if usage is None:
            usage = _field(_field(result, "response"), "meta")  # Cohere v1 stream's last event
    if usage is not None:
        return _counts(usage, partial=False)
    body = _loaded_body(result)
    return None if body is None else usage_of(body)


class StreamTally:
    """What a stream has delivered so far: the usage its items reported and the UTF-8 bytes of
    the text they carried (answers, tool-call arguments, reasoning), for its settle.

    A stream reports its usage at its end (OpenAI's last chunk, Anthropic's `message_delta`,
    Bedrock's `metadata`); one that fails midway has often not, and the provider still charges
    it the prompt and what it wrote: `spent` turns what it delivered into that cost, where its
    estimate would charge the whole answer it never wrote. A stream guard's `Track`: each item
    is folded in with `tally(so_far, item)`, which returns the tally itself.
    """

    __slots__ = ("_usage_of", "usage", "text_bytes")

    def __init__(self, usage_of: Callable[[Any], Cost | None]) -> None:
        self._usage_of = usage_of
        self.usage: Cost | None = None
        """The usage the items reported, merged: a later value for a unit replaces an earlier
        one (a number, which has no units, replaces everything)."""
        self.text_bytes = 0

    def __call__(self, so_far: object, item: object) -> StreamTally:
        more = self._usage_of(item)
        if more is not None:
            usage = self.usage
            if isinstance(usage, Mapping) and isinstance(more, Mapping):
                more = {**usage, **more}
            self.usage = more
        self.text_bytes += _delivered_bytes(item, 0)
        return self

    def spent(self, estimate: Cost) -> Cost:
        """What the stream cost if it ended now, its usage untold: `estimate` with its input
        replaced by the input its usage told, if any, and its output by the output its usage
        told or its text holds (`BYTES_PER_TOKEN`), whichever is more; a "tokens" amount
        becomes their sum. An estimate with no output of its own (a number, or a mapping that
        does not set output_tokens) cannot tell what the answer took: it stays whole."""
        if not isinstance(estimate, Mapping) or "output_tokens" not in estimate:
            return estimate
        usage = self.usage if isinstance(self.usage, Mapping) else {}
        inputs = usage.get("input_tokens", estimate.get("input_tokens", 0))
        outputs = max(usage.get("output_tokens", 0), math.ceil(self.text_bytes / BYTES_PER_TOKEN))
        spent = {**estimate, "input_tokens": inputs, "output_tokens": outputs}
        if "tokens" in estimate:
            spent["tokens"] = inputs + outputs
        return spent

    def __repr__(self) -> str:
        return f"StreamTally(usage={self.usage!r}, text_bytes={self.text_bytes})"


def _delivered_bytes(item: object, depth: int) -> int:
    """UTF-8 bytes of the text a stream item carries: OpenAI chat chunks (litellm's too) and
    responses events, Anthropic's deltas, Bedrock's `converse_stream` deltas and the model events
    in `invoke_model_with_response_stream` chunks, Gemini's parts, Cohere's text; 0 for anything
    else (framing, usage, audio)."""
    kind = _kind(item)
    if kind == "content_block_delta":  # Anthropic
        return _texts_bytes(_field(item, "delta"), _DELTA_TEXTS)
    if kind in _RESPONSE_TEXT_EVENTS:  # OpenAI responses
        return _texts_bytes(item, ("delta",))
    if kind == "content-delta":  # Cohere v2
        return _texts_bytes(_field(_field(_field(item, "delta"), "message"), "content"), ("text",))
    if kind:
        return 0
    choices = _field(item, "choices")  # OpenAI chat
    if isinstance(choices, list):
        total = 0
        for choice in choices:
            delta = _field(choice, "delta")
            total += _texts_bytes(delta, _CHOICE_TEXTS) + _texts_bytes(choice, ("text",))
            calls = _field(delta, "tool_calls")
            for call in calls if isinstance(calls, list) else ():
                total += _texts_bytes(_field(call, "function"), ("arguments",))
        return total
    block = _field(item, "contentBlockDelta")  # Bedrock converse_stream
    if block is not None:
        delta = _field(block, "delta")
        reasoning = _field(delta, "reasoningContent")
        return (
            _texts_bytes(delta, ("text",))
            + _texts_bytes(_field(delta, "toolUse"), ("input",))
            + _texts_bytes(reasoning, ("text",))
        )
    chunk = _field(_field(item, "chunk"), "bytes")  # Bedrock invoke_model_with_response_stream
    if isinstance(chunk, bytes) and depth == 0:
        return _chunk_bytes(chunk)
    candidates = _field(item, "candidates")  # Gemini
    if isinstance(candidates, list):
        parts = (_field(_field(candidate, "content"), "parts") for candidate in candidates)
        return sum(
            _texts_bytes(part, ("text",))
            for group in parts
            if isinstance(group, list)
            for part in group
        )
    if _field(item, "event_type") == "text-generation":  # Cohere v1
        return _texts_bytes(item, ("text",))
    return 0


def _chunk_bytes(chunk: bytes) -> int:
    """The text bytes of the model's event a Bedrock stream chunk holds as JSON; only chunks
    that can hold a delta are decoded."""
    if len(chunk) > _MAX_CHUNK_BYTES or b"delta" not in chunk:
        return 0
    try:
        event = json.loads(chunk)
    except (ValueError, RecursionError):
        return 0
    return _delivered_bytes(event, 1) if isinstance(event, dict) else 0


def _texts_bytes(source: object, names: tuple[str, ...]) -> int:
    """UTF-8 bytes of the strings `source` holds under `names`."""
    total = 0
    for name in names:
        text = _field(source, name)
        if isinstance(text, str):
            total += _utf8_bytes(text)
    return total


def _loaded_body(result: object) -> Mapping[Any, Any] | None:
    """The JSON object of a plain HTTP response (one with an HTTP status) whose body is in
    memory, however long; None for anything else. SDK models are not looked into: they keep no
    body, and pydantic is slow to tell an attribute is missing."""
    fields = getattr(result, "__dict__", None)
    if not isinstance(fields, dict):
        return None
    status = fields.get("status_code", fields.get("status"))
    if type(status) is not int or isinstance(result, Mapping):
        return None
    return loaded_json(result, max_bytes=math.inf)


def _counts(usage: object, *, partial: bool) -> dict[str, float] | None:
    """Read a usage object by the first provider's names it answers to, or Cohere's, which
    nests the counts of what the model read and wrote (`tokens`) and of what it bills
    (`billed_units`): the former when it tells them."""
    counts = _named_counts(usage, partial=partial)
    if counts is None:
        counts = _named_counts(_field(usage, "tokens"), partial=partial)
    if counts is None:
        counts = _named_counts(_field(usage, "billed_units"), partial=partial)
    return counts


def _named_counts(usage: object, *, partial: bool) -> dict[str, float] | None:
    """The counts of a usage object under the first provider's names it answers to.

    A whole result's counts hold every unit (a count Gemini's JSON leaves out is zero); a partial
    one (a stream's running count) holds only the units the usage reports itself.
    """
    if usage is None:
        return None
    for names in _USAGE_NAMES:
        inputs = _count(_field(usage, names.input))
        outputs = _count(_field(usage, names.output))
        if inputs is None and outputs is None:
            continue
        counts: dict[str, float] = {} if partial else {"requests": 1}
        if inputs is not None or not partial:
            counts["input_tokens"] = (inputs or 0) + _extra(usage, names.input_extra)
        if outputs is not None or not partial:
            counts["output_tokens"] = (outputs or 0) + _extra(usage, names.output_extra)
        return counts
    return None


def _extra(usage: object, name: str) -> float:
    """The count under `name`, 0 when there is none (or no name)."""
    return (_count(_field(usage, name)) or 0) if name else 0


def _field(source: object, name: str) -> object:
    """`source[name]` for a dict, else its attribute `name`; None when it has neither.

    A pydantic model (as SDK responses are) is read from its fields and extra fields (where an
    SDK keeps what the API sent but the SDK does not know yet), never through `getattr`: most
    lookups here miss, and pydantic answers a missing attribute in microseconds, not nanoseconds.
    """
    if isinstance(source, dict):
        return source.get(name)
    if source is None:  # the end of a chain of lookups that missed
        return None
    fields = getattr(source, "__dict__", None)
    if isinstance(fields, dict) and name in fields:
        return fields[name]
    extra = getattr(source, "__pydantic_extra__", _NOT_PYDANTIC)
    if extra is _NOT_PYDANTIC:
        return getattr(source, name, None)
    return extra.get(name) if isinstance(extra, dict) else None


def _empty_usage(source: object) -> bool:
    """Whether `source` has a `usage` field that is empty, so that no other field holds one."""
    fields = source if isinstance(source, dict) else getattr(source, "__dict__", None)
    return isinstance(fields, dict) and "usage" in fields and fields["usage"] is None


def _kind(source: object) -> str:
    """A stream event's `type`, or "" when it has none."""
    kind = _field(source, "type")
    return kind if isinstance(kind, str) else ""


def _count(value: object) -> float | None:
    """A token count (an int, or a float from odd JSON), or None if it is no finite count >= 0."""
    if type(value) is int or type(value) is float:  # not bool, nor a str of digits
        return value if 0 <= value < _MAX_COUNT else None
    return None


def _first_count(sources: Iterable[dict[str, object]], names: tuple[str, ...]) -> float | None:
    """The first valid count under any of `names` in `sources`, in that order."""
    for source in sources:
        for name in names:
            count = _count(source.get(name))
            if count is not None:
                return count
    return None


def _fields_of(value: object) -> dict[str, object] | None:
    """A dict, or an object's public instance fields (pydantic models, dataclasses); else None.

    Private fields are no payload: the SDKs' NOT_GIVEN sentinels keep a `__module__` there.
    """
    if isinstance(value, dict):
        return value
    fields = getattr(value, "__dict__", None)
    if not isinstance(fields, dict):
        return None
    return {key: item for key, item in fields.items() if not str(key).startswith("_")}


def _nested_configs(kwargs: dict[str, object]) -> list[dict[str, object]]:
    """Gemini's `config` / `generation_config` and Bedrock's `inferenceConfig`, as field dicts."""
    configs = (_fields_of(kwargs.get(name)) for name in _NESTED_CONFIGS)
    return [config for config in configs if config]


def _message_count(value: object) -> int:
    """How many messages an argument holds: the items of a list, or one text or object."""
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, str):
        return 1 if value else 0
    return 1 if _fields_of(value) else 0


def _text_bytes(value: object, depth: int) -> int:
    """UTF-8 bytes of the text in a message-like value; a media part counts `MEDIA_TOKENS`.

    Ids, roles, types and signatures are no text the model reads; tool inputs count as JSON.
    Only lists and tuples are iterated: an iterator argument must reach the SDK unconsumed.
    """
    if isinstance(value, str):
        return _utf8_bytes(value)
    if depth >= _MAX_DEPTH:
        return 0
    if isinstance(value, (list, tuple)):
        return sum(_text_bytes(item, depth + 1) for item in value)
    fields = _fields_of(value)
    if fields is None:
        return 0
    kind = fields.get("type")
    if isinstance(kind, str) and kind in _MEDIA_TYPES:
        return _MEDIA_BYTES
    total = 0
    for key, item in fields.items():
        if item is None or key in _SKIPPED_KEYS:
            continue
        if key in _MEDIA_KEYS:
            total += _MEDIA_BYTES
        elif key in _JSON_KEYS:
            total += _json_bytes(item)
        else:
            total += _text_bytes(item, depth + 1)
    return total


def _json_bytes(value: object) -> int:
    """UTF-8 bytes of `value` as compact JSON; 0 for None, an empty list or dict, and what JSON
    cannot encode."""
    if value is None or (isinstance(value, (list, tuple, dict)) and not value):
        return 0
    try:
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), skipkeys=True, default=_fields_of
        )
    except (TypeError, ValueError, RecursionError):  # a cycle, an int too long to print
        return 0
    return _utf8_bytes(text)


def _utf8_bytes(text: str) -> int:
    # "surrogatepass": a lone surrogate (which no SDK would send) must not make the estimate raise
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
