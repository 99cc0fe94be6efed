"""OpenAI's published fine-tuning training prices, for comparison with local training.

USD per 1,000 training tokens (billed tokens = tokens per epoch x epochs), as published by
OpenAI: the legacy base models (ada, babbage, curie, davinci) from the 2023 pricing page the
openai 0.28.1 tooling was written against, and the current models from openai.com/api/pricing.
As published; prices change: check current prices before relying on them.
"""

from __future__ import annotations

TRAINING_PRICE_PER_1K: dict[str, float] = {
    # legacy fine-tunes (/v1/fine-tunes)
    "ada": 0.0004,
    "babbage": 0.0006,
    "curie": 0.003,
    "davinci": 0.03,
    # /v1/fine_tuning/jobs
    "babbage-002": 0.0004,
    "davinci-002": 0.006,
    "gpt-3.5-turbo": 0.008,
    "gpt-4o-mini-2024-07-18": 0.003,
    "gpt-4o-2024-08-06": 0.025,
    "gpt-4.1": 0.025,
    "gpt-4.1-mini": 0.005,
    "gpt-4.1-nano": 0.0015,
}

# Short names people type for the dated snapshots.
ALIASES = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}

# What `tunery prepare` compares against by default: one legacy, one current, one cheap.
DEFAULT_COMPARE = ("davinci-002", "gpt-3.5-turbo", "gpt-4o-mini-2024-07-18", "gpt-4.1")


class UnknownPriceError(LookupError):
    """No published training price for that model name."""


def price_per_1k(model: str) -> float:
    """USD per 1K training tokens for an OpenAI model name (dated snapshots of gpt-3.5-turbo too)."""
    name = ALIASES.get(model, model)
    if name in TRAINING_PRICE_PER_1K:
        return TRAINING_PRICE_PER_1K[name]
    if name.startswith("gpt-3.5-turbo-"):  # gpt-3.5-turbo-0125, -1106, -0613: one price
        return TRAINING_PRICE_PER_1K["gpt-3.5-turbo"]
    known = ", ".join(sorted(TRAINING_PRICE_PER_1K))
    raise UnknownPriceError(f"no published training price for {model!r} (known: {known})")
