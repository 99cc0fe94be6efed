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

# Training throughput assumed for the default SmolLM2-135M on 2 CPU cores when nothing better is
# known: ~6 x 135M = 0.8 GFLOP per trained token at a sustained ~40 GFLOP/s gives ~50 tokens/s.
# Deliberately conservative; the benchmark replaces it with a measured figure.
DEFAULT_CPU_TOKENS_PER_SECOND = 50.0
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
