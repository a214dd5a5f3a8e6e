"""A FastAPI service that asks a model through the shield and, when the shield refuses, answers
429 with a Retry-After header, so that its own clients back off for as long as it takes.

Run it with:  uvicorn examples.service:app      (or: python examples/service.py)
   then try:  curl -i -X POST 127.0.0.1:8000/chat -H 'content-type: application/json' \\
                   -d '{"prompt": "Say hi"}'

It needs `pip install fastapi uvicorn` and no API key: a local fake OpenAI server
(`rate_limit_shield.testing.FakeProvider`), started with the app, stands in for the API. The
model is allowed 3 requests a minute here and a request never queues for a permit (`max_wait`
0: a web request should not hang for 20 s), so the fourth request within a minute gets
`429 Too Many Requests` with `Retry-After: 20`. Any refusal that knows when trying again makes
sense (no rate permit, the provider's own 429 with a wait longer than the policy accepts, an
open circuit) becomes a 429 with that many seconds, rounded up; one that does not (the
provider's quota is gone) a 503; a provider that keeps failing after the retries, a 502.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import rate_limit_shield as rls
from rate_limit_shield.testing import FakeProvider

MODEL = "gpt-4o-mini"
POLICIES = {
    MODEL: {
        "rpm": 3,  # small, to see the 429 by hand
        "max_wait": 0,  # refuse at once rather than hold the request open
        "retry": {"attempts": 2, "base_delay": 0.2, "max_retry_after": 5},
    }
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Configure the shield once, at start-up, and make the one client every request shares."""
    rls.configure(POLICIES)
    with FakeProvider() as provider:  # in production: openai.AsyncOpenAI(), with your API key
        app.state.provider = provider
        app.state.client = rls.shield_client(
            openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test")
        )
        yield


app = FastAPI(title="chat", lifespan=lifespan)


class Question(BaseModel):
    prompt: str


class Reply(BaseModel):
    model: str
    answer: str


@app.post("/chat")
async def chat(question: Question, request: Request) -> Reply:
    client: openai.AsyncOpenAI = request.app.state.client
    completion = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question.prompt}]
    )
    return Reply(model=MODEL, answer=completion.choices[0].message.content or "")


@app.exception_handler(rls.ShieldError)
async def refused(request: Request, error: rls.ShieldError) -> JSONResponse:
    """The shield would not call the model: 429 and when to come back, if it knows, else 503."""
    if error.retry_after is None:
        return JSONResponse({"detail": "The model is unavailable."}, status_code=503)
    seconds = max(1, math.ceil(error.retry_after))  # Retry-After takes whole seconds
    return JSONResponse(
        {"detail": f"Too many requests: try again in {seconds} s."},
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )


@app.exception_handler(openai.APIError)
async def provider_failed(request: Request, error: openai.APIError) -> JSONResponse:
    """The provider failed every attempt: its fault, not ours nor the client's."""
    return JSONResponse({"detail": "The model's provider failed."}, status_code=502)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
