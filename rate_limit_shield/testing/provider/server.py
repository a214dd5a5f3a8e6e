"""A local fake OpenAI and Anthropic HTTP server, for tests and benchmarks with the real SDKs.

Mocks of an SDK method test the mock. The real `openai` and `anthropic` clients pointed at this
server go through their own HTTP, parsing and error mapping, so a test sees exactly the
exceptions, headers and usage a shielded call sees in production, at local speed.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import math
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from ...clock import SYSTEM_CLOCK, Clock
from .buckets import WINDOWS, Bucket, charges, settle
from .dialects import ANTHROPIC_PATH, DIALECTS, OPENAI_PATH, Dialect, serves
from .streams import timeline
from .transport import Server
from .wire import (
    CONTEXT_WINDOW,
    GARBAGE,
    BadRequest,
    Completion,
    Headers,
    Reply,
    Request,
    prompt_tokens,
    retry_after_headers,
)

__all__ = ["FakeProvider"]

_JOIN_TIMEOUT = 5.0
_POLL_INTERVAL = 0.01  # how long `stop` may wait for the serving loop to notice


class _Script:
    """A scripted change to the next `times` matching requests; `arg` is its status or seconds."""

    __slots__ = ("kind", "path", "model", "arg", "times")

    def __init__(
        self, kind: str, path: str | None, model: str | None, arg: float, times: int
    ) -> None:
        self.kind, self.path, self.model, self.arg, self.times = kind, path, model, arg, times


_ANSWERS = ("fail", "quota", "context", "throttle")


def _model_names(models: Iterable[str]) -> tuple[str, ...]:
    """`models` as a tuple of names or glob patterns, each a non-empty string."""
    names = None if isinstance(models, str) else tuple(models)
    if names is None or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"models: {models!r} must be a list of model names or glob patterns")
    return names


def _length_range(completion_tokens: object) -> tuple[int, int]:
    """`completion_tokens` as the (shortest, longest) answer: a fixed length is a range of one."""
    bounds = completion_tokens if isinstance(completion_tokens, tuple) else (completion_tokens,) * 2
    if (
        len(bounds) == 2
        and all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        and 1 <= bounds[0] <= bounds[1]
    ):
        return bounds[0], bounds[1]
    raise ValueError(
        f"completion_tokens: {completion_tokens!r} must be a length of at least 1, "
        "or a (shortest, longest) pair of them"
    )


class FakeProvider:
    """A local HTTP server speaking OpenAI's `/v1/chat/completions` and Anthropic's `/v1/messages`.

    ```python
    with FakeProvider(requests=20, tokens=10_000, per_seconds=1) as provider:  # 1,200 RPM
        gpt = openai.OpenAI(base_url=provider.url + "/v1", api_key="k", max_retries=0)
        claude = anthropic.Anthropic(base_url=provider.url, api_key="k", max_retries=0)
        provider.fail(529, times=3, path=FakeProvider.ANTHROPIC_PATH)
    ```

    Limits: each amount given is a token bucket of that capacity per model, refilled
    continuously at amount/`per_seconds` on `clock.monotonic()` (pass a `FakeClock` and
    `advance()` it to refill at once). `per_seconds` is a minute (the default) or a slice of
    one that divides it (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30 s): a per-minute limit enforced
    a slice at a time, as OpenAI does, and stated per minute, so `requests=20, per_seconds=1`
    is 1,200 requests a minute in bursts of at most 20. `requests` costs 1 per request;
    `tokens` (OpenAI's TPM) prompt + max_tokens; `input_tokens` / `output_tokens` (Anthropic's
    ITPM / OTPM) the prompt / max_tokens. All given buckets apply to both APIs; a request is
    admitted by all or refused by all, and its charge is then settled to the real usage
    (refunding unused max_tokens; a request without max_tokens, admitted on its prompt, then
    owes its whole answer, which may leave a bucket in debt that later requests wait out). As
    OpenAI and Anthropic document, the settle comes when the answer is complete: at once for a
    whole answer, and when its last token is written for a stream that takes time (with
    `stream_pace` or `first_token_delay`; until then the stream's charge is its admission
    charge, and the headers say so).
    A refused request is a 429 with the API's body and message (in per-minute terms),
    `retry-after` (whole seconds rounded up) and `retry-after-ms`; a request bigger than a
    bucket is a 429 without them. Every answer to a model carries the rate-limit headers of its
    buckets and a request id. The headers are per minute, as both APIs document: the limit is
    the per-minute amount, `remaining` that amount less what the bucket lacks, and the reset
    when it is full again (so remaining + what refills until the reset = the limit). OpenAI:
    `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, the reset as a Go duration;
    Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
    remaining,reset}`, the reset as an RFC 3339 time.

    Answers: prompt tokens follow `prompt_tokens()`; each choice has min(max_tokens, length)
    tokens, "ok" words (finish "length" / "max_tokens" when cut short), where the length is
    `completion_tokens`, or, for a (shortest, longest) pair, drawn uniformly from that range
    by `random.Random(seed)` for each request admitted, in order (refusals draw nothing).
    `stream=True` sends the API's real SSE sequence, event by event as a model generates it:
    the head (OpenAI's role chunks; Anthropic's message_start and content_block_start) at once,
    the first token `first_token_delay` seconds later, each next token 1/`stream_pace` seconds
    after the last (tokens per second), and the end with the last token, on `clock`. Without
    `stream_pace` the tokens come together; `first_token_delay` defaults to one token's time
    (none without a pace). Events due at once go in one write; `stop` cuts a stream under way
    short.
    Anything but POST to the two paths is a 404, a body that is not a JSON object or lacks a
    field the API requires a 400.

    Models: each dialect answers a model it does not serve with its own 404 (OpenAI:
    `model_not_found`; Anthropic: `not_found_error`), before any script or bucket, as in
    production. It serves its own models (OpenAI: `gpt-*`, `chatgpt-*`, `o1`, `o3-mini`...,
    `text-embedding-*`, `ft:*`; Anthropic: `claude-*`) and those `models` names (names or glob
    patterns, served on both paths). Another provider's model, such as `claude-3-5-haiku` asked
    of OpenAI, is not served unless named. A name of no provider's ("bench-model") is served
    while `models` is None, so that tests and benchmarks with neutral names keep working; give
    `models` to have the fake refuse every name but those.

    Scripting: each method changes the next `times` requests (to `path` and `model` only,
    when given), in the order scripted. `fail`, `insufficient_quota`, `context_length` and
    `throttle` answer instead of the buckets and charge nothing; `slow` delays, and
    `malformed_headers` garbles, whatever the answer is; `stream_error` breaks the next
    streamed successes after their first `after` events, when the next one was due (Anthropic:
    `event: error` overloaded_error; OpenAI: a `data: {"error": ...}` chunk); such a stream is
    charged its prompt and the tokens it sent.

    Counters (thread-safe, updated before the answer is sent): `received`, `statuses`,
    `tokens_charged` (prompt + completion tokens of successful answers), `received_by_model()`,
    `reset_counts()`.
    """

    OPENAI_PATH = OPENAI_PATH
    ANTHROPIC_PATH = ANTHROPIC_PATH

    def __init__(
        self,
        *,
        requests: float | None = None,
        tokens: float | None = None,
        input_tokens: float | None = None,
        output_tokens: float | None = None,
        per_seconds: float = 60.0,
        completion_tokens: int | tuple[int, int] = 16,
        seed: int | None = None,
        stream_pace: float | None = None,
        clock: Clock | None = None,
        models: Iterable[str] | None = None,
        first_token_delay: float | None = None,
        port: int = 0,
    ) -> None:
        amounts = {
            "requests": requests,
            "tokens": tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
        for name, amount in amounts.items():
            if amount is not None and not amount > 0:
                raise ValueError(f"{name}: {amount!r} must be a positive amount or None")
        if isinstance(per_seconds, bool) or per_seconds not in WINDOWS:
            raise ValueError(
                f"per_seconds: {per_seconds!r} is not a window providers use: a minute (60) or "
                f"a slice of one that divides it ({', '.join(map(str, WINDOWS[:-1]))}), which "
                "the headers state per minute"
            )
        if stream_pace is not None and not 0 < stream_pace < math.inf:
            raise ValueError(f"stream_pace: {stream_pace!r} must be a positive number or None")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port: {port!r} must be a TCP port number, or 0 for any free one")
        if first_token_delay is not None and not 0 <= first_token_delay < math.inf:
            raise ValueError(
                f"first_token_delay: {first_token_delay!r} must be a number of seconds or None"
            )
        self._models = None if models is None else _model_names(models)
        self._limits = {unit: float(a) for unit, a in amounts.items() if a is not None}
        self._per_seconds = float(per_seconds)
        self._lengths = _length_range(completion_tokens)
        self._random = random.Random(seed)
        self._port = port
        self._interval = 0.0 if stream_pace is None else 1 / stream_pace
        self._first_token = self._interval if first_token_delay is None else first_token_delay
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, Bucket]] = {}
        # Settles of streams still being written: (when, order, model, change by unit).
        self._settles: list[tuple[float, int, str, dict[str, float]]] = []
        self._order = itertools.count()
        self._scripts: list[_Script] = []
        self._received = 0
        self._statuses: Counter[int] = Counter()
        self._by_model: Counter[str] = Counter()
        self._tokens_charged = 0
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`; OpenAI's base_url is this + "/v1", Anthropic's this."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not running: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeProvider:
        """Bind `port` (any free one if 0) on 127.0.0.1 and serve from a daemon thread; returns
        self. OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError(f"FakeProvider is already running at {self.url}")
        self._stopping.clear()
        self._server = Server(self, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"FakeProvider:{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, free the port, close every open connection and join the threads.

        Connections the clients keep alive are shut down here; a `slow` answer under way is
        sent at once. Calling it again, or before `start`, does nothing."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
        with self._lock:
            connections = list(self._connections.items())
        for connection, handler in connections:
            with contextlib.suppress(OSError):  # the client closed it first
                connection.shutdown(socket.SHUT_RDWR)
            handler.join(_JOIN_TIMEOUT)
        self._server = self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"FakeProvider({where}, limits={self._limits!r}, per_seconds={self._per_seconds!r})"

    # -- scripting -------------------------------------------------------------------------

    def fail(
        self,
        status: int = 503,
        *,
        times: int = 1,
        path: str | None = None,
        model: str | None = None,
    ) -> None:
        """Answer with an outage (500, 502, 503, 504, 529 or any 5xx) in each API's error body."""
        if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
            raise ValueError(f"status: {status!r} is not a 5xx status")
        self._script("fail", status, times, path, model)

    def insufficient_quota(
        self, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Answer that the money is gone: OpenAI's 429 `insufficient_quota` without
        retry-after, Anthropic's 400 credit-balance error."""
        self._script("quota", 0.0, times, path, model)

    def context_length(
        self, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Answer 400: OpenAI `context_length_exceeded`, Anthropic "prompt is too long"."""
        self._script("context", 0.0, times, path, model)

    def throttle(
        self,
        retry_after: float,
        *,
        times: int = 1,
        path: str | None = None,
        model: str | None = None,
    ) -> None:
        """Answer 429 with this Retry-After (and retry-after-ms), whatever the buckets hold."""
        if not retry_after >= 0:
            raise ValueError(f"retry_after: {retry_after!r} must be >= 0")
        self._script("throttle", retry_after, times, path, model)

    def slow(
        self, seconds: float, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Send the answer, whatever it is, after a real delay of `seconds`."""
        if not seconds >= 0:
            raise ValueError(f"seconds: {seconds!r} must be >= 0")
        self._script("slow", seconds, times, path, model)

    def malformed_headers(
        self, *, times: int = 1, path: str | None = None, model: str | None = None
    ) -> None:
        """Garble the retry and rate-limit headers of the answer, whatever it is: retry-after
        "soon", retry-after-ms "NaN", every limit "1e400", remaining "-1", reset "whenever"."""
        self._script("garble", 0.0, times, path, model)

    def stream_error(
        self,
        *,
        after: int = 1,
        times: int = 1,
        path: str | None = None,
        model: str | None = None,
    ) -> None:
        """Break the next streamed successful answers after their first `after` events (at
        most all but the last), when the next one was due."""
        if isinstance(after, bool) or not isinstance(after, int) or after < 1:
            raise ValueError(f"after: {after!r} must be a positive number of events")
        self._script("stream_error", after, times, path, model)

    def _script(
        self, kind: str, arg: float, times: int, path: str | None, model: str | None
    ) -> None:
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times: {times!r} must be a positive integer")
        if path is not None and path not in DIALECTS:
            raise ValueError(f"path: {path!r} is not one of {sorted(DIALECTS)}")
        with self._lock:
            self._scripts.append(_Script(kind, path, model, float(arg), times))

    def _take(self, kinds: tuple[str, ...], path: str, model: str) -> _Script | None:
        """The first scripted change of these kinds matching the request, used once.
        Called under the lock."""
        for script in self._scripts:
            if (
                script.kind in kinds
                and script.path in (None, path)
                and script.model in (None, model)
            ):
                script.times -= 1
                if script.times == 0:
                    self._scripts.remove(script)
                return script
        return None

    # -- counters --------------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Requests received, on any path."""
        with self._lock:
            return self._received

    @property
    def statuses(self) -> Counter[int]:
        """Answers sent, by HTTP status (a copy)."""
        with self._lock:
            return Counter(self._statuses)

    @property
    def tokens_charged(self) -> int:
        """Prompt + completion tokens of the successful answers."""
        with self._lock:
            return self._tokens_charged

    def received_by_model(self) -> dict[str, int]:
        """Requests received per model (those whose JSON body named one)."""
        with self._lock:
            return dict(self._by_model)

    def reset_counts(self) -> None:
        """Zero the counters; buckets and scripts stay as they are."""
        with self._lock:
            self._received = self._tokens_charged = 0
            self._statuses.clear()
            self._by_model.clear()

    @staticmethod
    def prompt_tokens(messages: list[Any], system: object = None) -> int:
        """The fixed rule for prompt tokens: ceil(UTF-8 bytes of all the text / 4) + 4 per
        message, a `system` prompt (when not None) counting as one more message. The text of a
        content is the string itself or the `text` of its parts."""
        return prompt_tokens(messages, system)

    # -- answering -------------------------------------------------------------------------

    def _answer(self, method: str, target: str, raw: bytes) -> Reply:
        """The whole reply to one request; the counters count it before it is sent."""
        path = target.split("?", 1)[0]
        dialect = DIALECTS.get(path) if method == "POST" else None
        with self._lock:
            self._received += 1
            ident = f"{self._received:012x}"
        if dialect is None:
            body = DIALECTS[ANTHROPIC_PATH].error(
                "not_found_error", f"{method} {path}: not found"
            )
            return self._sent(Reply(404, [("request-id", f"req_{ident}")], body))
        request_id = (dialect.request_id_header, f"req_{ident}")
        try:
            request = self._read(dialect, raw)
        except BadRequest as error:
            body = dialect.bad_request(error.message, error.param)
            return self._sent(Reply(400, [request_id], body))
        if not serves(dialect, request.model, self._models):
            body = dialect.model_not_found(request.model)
            return self._sent(Reply(404, [request_id], body))
        with self._lock:
            reply = self._reply(dialect, request, ident)
            slow = self._take(("slow",), path, request.model)
            garble = self._take(("garble",), path, request.model)
            headers = [request_id, *reply.headers]
            if garble is not None:
                headers = self._garbled(dialect, headers)
            delay = slow.arg if slow is not None else 0.0
            self._statuses[reply.status] += 1
            return reply._replace(headers=headers, delay=delay)

    def _read(self, dialect: Dialect, raw: bytes) -> Request:
        """The request, counted under its model as soon as it names one."""
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise BadRequest(
                f"We could not parse the JSON body of your request: {error}"
            ) from None
        if not isinstance(body, dict):
            raise BadRequest("The request body is not a JSON object.")
        if isinstance(body.get("model"), str):
            with self._lock:
                self._by_model[body["model"]] += 1
        return dialect.read(body)

    def _sent(self, reply: Reply) -> Reply:
        with self._lock:
            self._statuses[reply.status] += 1
        return reply

    @staticmethod
    def _garbled(dialect: Dialect, headers: Headers) -> Headers:
        kept = [
            (name, value)
            for name, value in headers
            if "ratelimit" not in name and not name.startswith("retry-after")
        ]
        retry = [(name, GARBAGE[name]) for name in ("retry-after", "retry-after-ms")]
        return [*kept, *retry, *dialect.garbage_headers()]

    def _reply(self, dialect: Dialect, request: Request, ident: str) -> Reply:
        """A scripted answer, a 429 from the buckets, or the completion. Called under the lock."""
        now, wall = self._clock.monotonic(), self._clock.time()
        buckets = self._buckets_of(request.model, now)
        scripted = self._take(_ANSWERS, dialect.path, request.model)
        if scripted is not None:
            return self._scripted(dialect, request, scripted, dialect.limit_headers(buckets, wall))
        admission = charges(request.prompt_tokens, (request.max_tokens or 0) * request.choices)
        refusal = self._refusal(dialect, request, buckets, admission)
        if refusal is not None:
            return refusal._replace(
                headers=[*refusal.headers, *dialect.limit_headers(buckets, wall)]
            )
        length = self._random.randint(*self._lengths)  # drawn once admitted
        per_choice = min(request.max_tokens or length, length)
        answer = Completion(
            request=request,
            ident=ident,
            created=int(wall),
            words=["ok" if i == 0 else " ok" for i in range(per_choice)],
            cut=per_choice < length,
        )
        if not request.stream:
            completion = per_choice * request.choices
            self._use(request, buckets, admission, completion, done=now, answered=True)
            return Reply(200, dialect.limit_headers(buckets, wall), dialect.completion(answer))
        broken = self._take(("stream_error",), dialect.path, request.model)
        stream = timeline(
            dialect.stream(answer),
            first_token=self._first_token,
            interval=self._interval,
            error=None if broken is None else dialect.stream_error(),
            after=0 if broken is None else int(broken.arg),
        )
        done = now + stream.duration
        self._use(request, buckets, admission, stream.tokens, done=done, answered=broken is None)
        (_, head), *later = stream.writes
        return Reply(
            200,
            dialect.limit_headers(buckets, wall),
            head,
            content_type="text/event-stream; charset=utf-8",
            later=tuple(later),
        )

    def _use(
        self,
        request: Request,
        buckets: dict[str, Bucket],
        admission: dict[str, float],
        completion: int,
        *,
        done: float,
        answered: bool,
    ) -> None:
        """Settle an admitted request's charge to its prompt and the `completion` tokens it was
        sent, once they are all written (at `done`), and count an `answered` one's tokens.
        Called under the lock."""
        used = charges(request.prompt_tokens, completion)
        change = {unit: admission[unit] - used[unit] for unit in buckets}
        if answered:
            self._tokens_charged += request.prompt_tokens + completion
        if done <= self._clock.monotonic():
            settle(buckets, change)
        else:
            heapq.heappush(self._settles, (done, next(self._order), request.model, change))

    def _buckets_of(self, model: str, now: float) -> dict[str, Bucket]:
        """The model's buckets refilled to `now`, made full on the model's first request."""
        buckets = self._buckets.get(model)
        if buckets is None:
            buckets = self._buckets[model] = {
                unit: Bucket(amount, self._per_seconds, now)
                for unit, amount in self._limits.items()
            }
        settles = self._settles
        while settles and settles[0][0] <= now:
            done, _, settled, change = heapq.heappop(settles)
            for bucket in self._buckets[settled].values():
                bucket.refill(done)
            settle(self._buckets[settled], change)
        for bucket in buckets.values():
            bucket.refill(now)
        return buckets

    def _refusal(
        self,
        dialect: Dialect,
        request: Request,
        buckets: dict[str, Bucket],
        admission: dict[str, float],
    ) -> Reply | None:
        """A 429 when a bucket lacks room; else None, with every bucket charged. A request
        larger than a bucket gets no retry hint: no wait can help it."""
        too_large = [unit for unit, bucket in buckets.items() if admission[unit] > bucket.capacity]
        waits = {unit: bucket.wait_for(admission[unit]) for unit, bucket in buckets.items()}
        unit = too_large[0] if too_large else max(waits, key=waits.__getitem__, default="")
        if not too_large and waits.get(unit, 0.0) <= 0:
            for name, bucket in buckets.items():
                bucket.level -= admission[name]
            return None
        bucket, requested = buckets[unit], admission[unit]
        if too_large:
            return Reply(429, [], dialect.too_large(request.model, unit, bucket, requested))
        wait = waits[unit]
        body = dialect.over_limit(request.model, unit, bucket, requested, wait)
        return Reply(429, retry_after_headers(wait), body)

    def _scripted(
        self, dialect: Dialect, request: Request, script: _Script, headers: Headers
    ) -> Reply:
        if script.kind == "fail":
            return Reply(int(script.arg), headers, dialect.outage(int(script.arg)))
        if script.kind == "quota":
            status, body = dialect.quota_gone()
            return Reply(status, headers, body)
        if script.kind == "context":
            return Reply(400, headers, dialect.context_too_long(CONTEXT_WINDOW + 1))
        message = f"Rate limit reached for {request.model}. Please try again later."
        hints = retry_after_headers(script.arg)
        return Reply(429, [*hints, *headers], dialect.throttled("requests", message))

    def _write_later(self, write: Callable[[bytes], object], reply: Reply) -> None:
        """Write each later part when it is due on the provider's clock, counted from now (the
        body was just written), by deadlines, so that late wake-ups do not add up. `stop` ends
        it by closing the connection: the next write fails."""
        started = self._clock.monotonic()
        for due, part in reply.later:
            wait = started + due - self._clock.monotonic()
            if wait > 0:
                self._clock.sleep(wait)
            write(part)

    def _opened(self, connection: socket.socket, handler: threading.Thread) -> None:
        with self._lock:
            self._connections[connection] = handler

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(connection, None)
