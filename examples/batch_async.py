"""An asyncio batch job: many prompts, two models, a fallback, and a bound on what is in flight.

Run it with:  python examples/batch_async.py [--prompts 60] [--concurrency 8]

No API key needed: a local fake provider (`rate_limit_shield.testing.FakeProvider`) speaks both
OpenAI's and Anthropic's API, each model limited to 20 requests a second, and the real async
SDK clients talk to it. One shielded method answers every prompt with gpt-4o-mini, whose policy
falls back to claude-3-5-haiku. The batch starts in a gpt outage (scripted 503s): the retries
fail, gpt's breaker opens, and the prompts asked meanwhile are answered by claude; once the
breaker's open time is over a probe goes to gpt, closes the breaker, and gpt takes the rest.
Both models are paced under the provider's limit, so that it throttles nothing. At the
end the job prints which model answered how many prompts, and what the shield did on the way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass

import anthropic
import openai

import rate_limit_shield as rls
from rate_limit_shield.testing import FakeProvider

GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"
PROVIDER_RATE = 20  # requests a second per model that the provider grants, at most 20 at once
# The policies keep under it: requests reach the provider a few milliseconds after the shield
# lets them go, some later than others, so that those sent apart may arrive together.
LIMIT = rls.Limit(18, per_seconds=1, burst=10)  # 18 a second, at most 10 at once

POLICIES = {
    GPT: {
        "limits": [LIMIT],
        "retry": {"attempts": 3, "base_delay": 0.05, "max_delay": 0.2},
        # Three failures in a row open the breaker for 0.3 s: calls fall back meanwhile.
        "breaker": {"failure_threshold": 3, "recovery_timeout": 0.3},
        "fallbacks": [CLAUDE],
    },
    CLAUDE: {
        "limits": [LIMIT],
        "retry": {"attempts": 3, "base_delay": 0.05, "max_delay": 0.2},
    },
}


@dataclass
class Answer:
    prompt: str
    model: str  # the model that answered: a fallback's when gpt could not
    text: str


class Models:
    """One entry point for both providers: the model's name picks the SDK client."""

    def __init__(self, gpt: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic) -> None:
        self.gpt = gpt
        self.claude = claude

    @rls.shielded  # the model is the call's `model=` argument, and each fallback's
    async def ask(self, prompt: str, *, model: str) -> Answer:
        if model.startswith("claude"):
            message = await self.claude.messages.create(
                model=model, max_tokens=32, messages=[{"role": "user", "content": prompt}]
            )
            text = "".join(
                block.text
                for block in message.content
                if isinstance(block, anthropic.types.TextBlock)
            )
            return Answer(prompt, model, text)
        completion = await self.gpt.chat.completions.create(
            model=model, max_tokens=32, messages=[{"role": "user", "content": prompt}]
        )
        return Answer(prompt, model, completion.choices[0].message.content or "")


async def run_batch(models: Models, prompts: list[str], concurrency: int) -> list[Answer]:
    """Every prompt through the shield, at most `concurrency` at a time: the rest wait here,
    in the job, rather than queueing for a rate permit (a wait longer than the policy's
    `max_wait` would be a refusal)."""
    in_flight = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> Answer:
        async with in_flight:
            return await models.ask(prompt, model=GPT)

    return await asyncio.gather(*(one(prompt) for prompt in prompts))


async def main(count: int, concurrency: int) -> None:
    logging.basicConfig(format="%(levelname)-7s %(name)s: %(message)s")  # the shield's warnings
    rls.configure(POLICIES)
    decisions: Counter[str] = Counter()  # the shield's events by kind: retries, fallbacks...
    rls.add_listener(lambda event: decisions.update([event.kind]))

    with FakeProvider(requests=PROVIDER_RATE, per_seconds=1) as provider:
        # In production: AsyncOpenAI(max_retries=0) and AsyncAnthropic(max_retries=0), with your
        # API keys. The SDKs' own retries off: the shield retries (shield_client does it itself).
        gpt = openai.AsyncOpenAI(base_url=provider.url + "/v1", api_key="test", max_retries=0)
        claude = anthropic.AsyncAnthropic(base_url=provider.url, api_key="test", max_retries=0)
        provider.fail(503, times=5, model=GPT)  # gpt is down for its first five requests

        prompts = [f"Summarize item {n}" for n in range(count)]
        started = time.monotonic()
        async with gpt, claude:
            answers = await run_batch(Models(gpt, claude), prompts, concurrency)
        took = time.monotonic() - started

    print(f"{len(answers)} prompts, at most {concurrency} in flight, in {took:.1f} s")
    for model, answered in Counter(answer.model for answer in answers).most_common():
        print(f"  answered by {model}: {answered}")
    print(
        f"retries: {decisions['retry']}, fallbacks: {decisions['fell_back']}, "
        f"breaker changes: {decisions['breaker']}, waits for a rate permit: {decisions['waited']}"
    )
    statuses = ", ".join(f"{status} x {n}" for status, n in sorted(provider.statuses.items()))
    print(f"the provider answered: {statuses}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=60, help="how many prompts (60)")
    parser.add_argument("--concurrency", type=int, default=8, help="at most in flight (8)")
    args = parser.parse_args()
    asyncio.run(main(args.prompts, args.concurrency))
