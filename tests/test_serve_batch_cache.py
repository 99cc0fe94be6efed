"""The in-place batch KV cache keeps every row's keys/values and mask through joins, leaves and steps."""

from __future__ import annotations

import random

import torch
from transformers.cache_utils import DynamicCache

from tunery.serve import batch_cache
from tunery.serve.batch_cache import BatchCache

LAYERS, HEADS, DIM = 2, 2, 3


def _prefill(lengths: list[int], rows: list[list[torch.Tensor]]):
    """A left-padded prefill cache for rows with these lengths; appends their tokens to `rows`."""
    longest = max(lengths)
    mask = torch.zeros(len(lengths), longest, dtype=torch.long)
    cache = DynamicCache()
    keys = torch.randn(LAYERS, len(lengths), HEADS, longest, DIM)
    for i, n in enumerate(lengths):
        mask[i, longest - n :] = 1
        keys[:, i, :, : longest - n] = 0  # so that leftovers of other rows would show in _check
        rows.append([keys[:, i, :, longest - n + t] for t in range(n)])  # per token: [layers, heads, dim]
    for layer in range(LAYERS):
        cache.update(keys[layer], -keys[layer], layer)
    return cache, mask


def _step(cache: BatchCache, rows: list[list[torch.Tensor]]) -> None:
    mask = cache.step_mask()
    assert mask.shape == (len(rows), cache.length)
    new = torch.randn(LAYERS, len(rows), HEADS, 1, DIM)
    hf = cache.hf_cache()
    for layer in range(LAYERS):
        hf.layers[layer].update(new[layer], -new[layer])
    for i, row in enumerate(rows):
        row.append(new[:, i, :, 0])


def _check(cache: BatchCache, rows: list[list[torch.Tensor]]) -> None:
    assert cache.size == len(rows)
    if not rows:
        return
    assert cache.length == max(len(r) for r in rows)  # columns that are padding for all are dropped
    for i, row in enumerate(rows):
        real = cache.mask[i].bool()
        assert int(real.sum()) == len(row) and bool(real[cache.length - len(row) :].all())  # right-aligned
        for layer in range(LAYERS):
            keys, values = cache.layers[layer].keys[i], cache.layers[layer].values[i]
            assert keys.shape[1] == cache.length
            expected = torch.stack([t[layer] for t in row], dim=1)
            assert torch.equal(keys[:, real], expected) and torch.equal(values[:, real], -expected)
            assert not keys[:, ~real].any()  # padding is zeros, never another row's leftovers


def test_joins_leaves_and_steps_keep_every_row_intact(monkeypatch):
    monkeypatch.setattr(batch_cache, "_HEADROOM", 3)  # small: re-allocations happen too
    monkeypatch.setattr(batch_cache, "_ROW_HEADROOM", 1)
    rng = random.Random(0)
    cache, rows = BatchCache(), []
    for _ in range(300):
        op = rng.random()
        if op < 0.25 or not rows:
            new_rows: list = []
            prefill, mask = _prefill([rng.randint(1, 12) for _ in range(rng.randint(1, 3))], new_rows)
            cache.add(prefill, mask)
            rows += new_rows
        elif op < 0.45:
            keep = sorted(rng.sample(range(len(rows)), rng.randint(0, len(rows))))
            order = cache.keep(keep)
            assert sorted(order) == keep
            rows = [rows[i] for i in order]
        else:
            _step(cache, rows)
        _check(cache, rows)


def test_leaving_rows_are_filled_from_the_end():
    cache, rows = BatchCache(), []
    prefill, mask = _prefill([4, 5, 6, 7], rows)
    cache.add(prefill, mask)
    assert cache.keep([0, 2, 3]) == [0, 3, 2]  # row 1 left: the last row moved into its place
    _check(cache, [rows[i] for i in (0, 3, 2)])
