"""The legacy split sizes, --valid-fraction, stratification by class and seeded shuffles."""

from __future__ import annotations

from collections import Counter

import random
import pytest

from tunery.data.split import split_indices, valid_size


@pytest.mark.parametrize(
    "n, expected",
    [(1, 0), (2, 1), (10, 2), (100, 20), (4999, 1000), (5000, 1000), (6000, 1000), (100_000, 1000)],
)
def test_legacy_rule(n, expected):
    # n_train = max(n - 1000, int(0.8 * n)); the rest is validation
    assert valid_size(n) == expected
    if n >= 2:
        assert n - valid_size(n) == max(n - 1000, int(0.8 * n))


def test_valid_fraction_and_bounds():
    assert valid_size(100, 0.1) == 10
    assert valid_size(10_000, 0.25) == 2500
    assert valid_size(3, 0.01) == 1  # at least one validation example
    assert valid_size(3, 0.99) == 2  # and at least one training example
    with pytest.raises(ValueError):
        valid_size(10, 1.5)


def test_split_covers_everything_once_and_is_seeded():
    train, valid = split_indices(100, 20, seed=42)
    assert len(train) == 80 and len(valid) == 20
    assert sorted(train + valid) == list(range(100))
    assert split_indices(100, 20, seed=42) == (train, valid)
    assert split_indices(100, 20, seed=7)[0] != train
    assert train != sorted(train)  # shuffled


def test_stratified_split_keeps_class_shares():
    labels = [0] * 600 + [1] * 300 + [2] * 100
    random.Random(0).shuffle(labels)
    train, valid = split_indices(1000, 200, labels, seed=42)
    assert len(valid) == 200 and len(train) == 800
    assert Counter(labels[i] for i in valid) == {0: 120, 1: 60, 2: 20}
    assert Counter(labels[i] for i in train) == {0: 480, 1: 240, 2: 80}
    assert sorted(train + valid) == list(range(1000))


def test_stratified_remainders_go_to_the_largest_fractions():
    labels = [0] * 5 + [1] * 3 + [2] * 2
    train, valid = split_indices(10, 3, labels, seed=1)
    # exact shares 1.5, 0.9, 0.6 -> floors 1, 0, 0; two more go to 1 (0.9) and 2 (0.6)
    assert Counter(labels[i] for i in valid) == {0: 1, 1: 1, 2: 1}
    assert len(train) == 7


def test_no_validation():
    train, valid = split_indices(5, 0, seed=42)
    assert valid == [] and sorted(train) == [0, 1, 2, 3, 4]
