"""Epochs, billed tokens, OpenAI's price for the same job, and a local compute-time estimate.

billed tokens = tokens per epoch (each example capped at the context, `TokenStats.billable_tokens`)
x epochs, as OpenAI bills fine-tuning; validation tokens are free. The compute time is an
estimate: billed tokens / a tokens-per-second figure for the machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from tunery.data.auto import auto_n_epochs
from tunery.data.prices import DEFAULT_COMPARE, price_per_1k

# Training throughput of the default SmolLM2-135M with LoRA on 2 CPU cores, as measured: the full
# SST-5 job trained 642,752 tokens at 395 tokens/s (examples/sentiment/README.md) and the train
# benchmark ran at ~510 tokens/s (BENCHMARKS.md), both in bf16 on a CPU with native bf16. A CPU
# without it trains in fp32, about 3x slower; a GPU is far faster. Only an estimate.
DEFAULT_CPU_TOKENS_PER_SECOND = 400.0
MAX_EPOCHS = 50  # the API's limit for n_epochs


@dataclass
class Estimate:
    n_examples: int
    tokens_per_epoch: int
    n_epochs: int
    n_epochs_auto: bool  # chosen by OpenAI's auto rule
    billed_tokens: int
    price_per_1k: dict[str, float]  # USD per 1K training tokens, as published by OpenAI
    cost_usd: dict[str, float]  # what OpenAI would bill for this job, per model
    tokens_per_second: float
    tokens_per_second_is_default: bool  # True: the conservative built-in figure, not a measurement
    compute_seconds: float  # billed tokens / tokens_per_second: an estimate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(
    n_examples: int,
    tokens_per_epoch: int,
    n_epochs: int | str = "auto",
    compare_models: Iterable[str] = DEFAULT_COMPARE,
    tokens_per_second: float | None = None,
) -> Estimate:
    """Estimate a job over `n_examples` examples totalling `tokens_per_epoch` (context-capped) tokens."""
    if n_examples <= 0:
        raise ValueError("n_examples must be positive")
    if tokens_per_epoch < 0:
        raise ValueError("tokens_per_epoch must not be negative")
    if n_epochs == "auto":
        epochs = auto_n_epochs(n_examples)
    elif isinstance(n_epochs, int) and not isinstance(n_epochs, bool) and 1 <= n_epochs <= MAX_EPOCHS:
        epochs = n_epochs
    else:
        raise ValueError(f'n_epochs must be "auto" or an integer from 1 to {MAX_EPOCHS}, not {n_epochs!r}')
    if tokens_per_second is not None and tokens_per_second <= 0:
        raise ValueError("tokens_per_second must be positive")
    speed = tokens_per_second or DEFAULT_CPU_TOKENS_PER_SECOND
    billed = tokens_per_epoch * epochs
    prices = {model: price_per_1k(model) for model in compare_models}
    return Estimate(
        n_examples=n_examples,
        tokens_per_epoch=tokens_per_epoch,
        n_epochs=epochs,
        n_epochs_auto=n_epochs == "auto",
        billed_tokens=billed,
        price_per_1k=prices,
        cost_usd={model: round(billed / 1000 * price, 6) for model, price in prices.items()},
        tokens_per_second=speed,
        tokens_per_second_is_default=tokens_per_second is None,
        compute_seconds=billed / speed,
    )
