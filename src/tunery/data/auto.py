"""OpenAI's "auto" rules that depend only on the size of the data.

Shared by `tunery prepare` (to estimate billed tokens) and the trainer (to pick the values a job
actually uses), so both always agree.
"""

from __future__ import annotations

# OpenAI cookbook: aim for 3 epochs, but see at least ~100 and at most ~25,000 examples in total.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_DEFAULT_EPOCHS = 25
MIN_DEFAULT_EPOCHS = 1


def auto_n_epochs(n_examples: int) -> int:
    """Default epochs for `n_examples` training examples (10 examples -> 10 epochs)."""
    if n_examples <= 0:
        raise ValueError("n_examples must be positive")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def auto_batch_size(n_examples: int) -> int:
    """Default batch size: about 0.2% of the examples, between 1 and 256 (the legacy rule)."""
    if n_examples <= 0:
        raise ValueError("n_examples must be positive")
    return max(1, min(256, round(n_examples * 0.002)))
