"""Train/validation split sizes and seeded, optionally stratified, shuffles of row indices.

Pure Python (no numpy): `tunery prepare` stays small in memory, and the split is reproducible
from the seed alone.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Sequence

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
    n: int, n_valid: int, labels: Sequence[int] | None = None, seed: int = DEFAULT_SEED
) -> tuple[list[int], list[int]]:
    """Shuffled (train, valid) lists of indices. With `labels`, each class keeps its share in both
    sides (largest-remainder allocation of `n_valid` over the classes)."""
    train, valid = split_order(n, n_valid, labels, seed)
    return train.tolist(), valid.tolist()


def split_order(
    n: int, n_valid: int, labels: Sequence[int] | None = None, seed: int = DEFAULT_SEED
) -> tuple[array, array]:
    """`split_indices` as two `array("i")`: 4 bytes an index instead of a list slot and an int
    object (~36 bytes), for large files. The same shuffles, so the same order."""
    rng = random.Random(seed)
    if labels is None or n_valid == 0:
        order = array("i", range(n))
        rng.shuffle(order)
        return order[n_valid:], order[:n_valid]
    groups: dict[int, array] = {}
    for i, label in enumerate(labels):
        members = groups.get(label)
        if members is None:
            members = groups[label] = array("i")
        members.append(i)
    classes = sorted(groups)
    exact = {c: len(groups[c]) * n_valid / n for c in classes}
    take = {c: int(exact[c]) for c in classes}
    remainder = n_valid - sum(take.values())
    # Classes with the largest fractional parts get one more (ties: larger classes, then label order).
    for c in sorted(classes, key=lambda c: (-(exact[c] - take[c]), -len(groups[c]), c))[:remainder]:
        take[c] += 1
    train = array("i")
    valid = array("i")
    for c in classes:
        members = groups[c]
        rng.shuffle(members)
        valid += members[: take[c]]
        train += members[take[c] :]
    rng.shuffle(train)
    rng.shuffle(valid)
    return train, valid
