"""A user's own code, for the test suite beside it (`test_app.py`): a summarizer that asks
gpt-4o, falls back to gpt-4o-mini when gpt-4o cannot answer, under the policies it configures
when imported."""

import openai

import rate_limit_shield as rls

PRIMARY = "gpt-4o"
FALLBACK = "gpt-4o-mini"

rls.configure(
    {
        PRIMARY: {
            "rpm": 60,
            "retry": {"attempts": 3, "base_delay": 1.0},
            "breaker": {"failure_threshold": 3, "recovery_timeout": 30},
            "fallbacks": [FALLBACK],
        },
        FALLBACK: {"rpm": 500},
    }
)


@rls.shielded(model=PRIMARY)  # a fallback calls it again with model=FALLBACK
def summarize(client: openai.OpenAI, text: str, *, model: str = PRIMARY) -> str:
    """A summary of `text`. `client` is made with max_retries=0: the shield retries."""
    completion = client.chat.completions.create(
        model=model,
        max_tokens=64,
        messages=[
            {"role": "system", "content": "Summarize the user's text in one sentence."},
            {"role": "user", "content": text},
        ],
    )
    return completion.choices[0].message.content or ""
