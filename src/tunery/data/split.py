"""Train/validation split sizes and seeded, optionally stratified, shuffles of row indices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_VALID_EXAMPLES = 1000  # the legacy rule: n_train = max(n - 1000, int(0.8 * n))
DEFAULT_SEED = 42


def valid_size(n: int, valid_fraction: float | None = None) -> int:
    """How many of `n` examples go to validation: the legacy rule, or `round(n * valid_fraction)`.

    A split always leaves at least one example on each side when `n >= 2`.
    """
    if n < 2:
        return 0
    if valid_fraction is None:
        n_valid = n - max(n - MAX_VALID_EXAMPLES, int(0.8 * n))
    else:
        if not 0 < valid_fraction < 1:
            raise ValueError("valid_fraction must be between 0 and 1")
        n_valid = round(n * valid_fraction)
    return min(max(n_valid, 1), n - 1)


def split_indices(
    n: int, n_valid: int, labels: Sequence[int] | np.ndarray | None = None, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, valid) index arrays. With `labels`, each class keeps its share in both
    sides (largest-remainder allocation of `n_valid` over the classes)."""
    rng = np.random.default_rng(seed)
    if labels is None or n_valid == 0:
        order = rng.permutation(n)
        return order[n_valid:], order[:n_valid]
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n_valid / n)
    take = np.floor(exact).astype(np.int64)
    remainder = n_valid - int(take.sum())
    if remainder:
        # Classes with the largest fractional parts get one more (ties: larger classes first).
        by_fraction = np.lexsort((-counts, -(exact - take)))
        take[by_fraction[:remainder]] += 1
    train_parts, valid_parts = [], []
    for cls, k in zip(classes, take):
        members = rng.permutation(np.flatnonzero(labels == cls))
        valid_parts.append(members[:k])
        train_parts.append(members[k:])
    train = rng.permutation(np.concatenate(train_parts))
    valid = rng.permutation(np.concatenate(valid_parts))
    return train, valid
