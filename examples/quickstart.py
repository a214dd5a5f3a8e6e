"""Quickstart: a policy for one model, an OpenAI client through the shield, and a call that
comes through an outage and a 429.

Run it with:  python examples/quickstart.py

No API key needed: a local fake OpenAI server (`rate_limit_shield.testing.FakeProvider`) stands
in for the API, scripted to answer the first request with a 503 and the second with a 429 asking
for half a second. The shield retries the first, waits out the second and returns the third
answer; its log says each decision as it makes it. For the guided tour (a breaker opening, a
fallback, a burst paced at the limit), run `rate-limit-shield demo`.
"""

import logging

import openai

import rate_limit_shield as rls
from rate_limit_shield.testing import FakeProvider

MODEL = "gpt-4o-mini"


def main() -> None:
    # The shield logs its decisions on the `rate_limit_shield` loggers: retries and pauses at INFO.
    logging.basicConfig(format="%(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("rate_limit_shield").setLevel(logging.INFO)
    # Once, at start-up: the model's limits and how hard to try.
    rls.configure({MODEL: {"rpm": 60, "retry": {"attempts": 3, "base_delay": 0.2}}})

    with FakeProvider() as provider:  # in production: openai.OpenAI(), with your API key
        client = rls.shield_client(openai.OpenAI(base_url=provider.url + "/v1", api_key="test"))
        provider.fail(503)  # the first request finds the API down...
        provider.throttle(0.5)  # ...the second is throttled, with Retry-After: 0.5 s

        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi"}]
        )
        print("answer:", reply.choices[0].message.content)
        print("the provider answered:", dict(provider.statuses))


if __name__ == "__main__":
    main()
