"""A batched, left-padded KV cache that rows can join and leave between decoding steps.

Every row's keys/values are right-aligned in one `[batch, heads, length, dim]` tensor per layer;
a row shorter than the longest is left-padded and masked out by the 2-D attention mask. Storage is
preallocated with headroom so a decoding step writes in place instead of re-concatenating the
whole cache (what `DynamicLayer` does every step). Joining or leaving re-packs the tensors once.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

_HEADROOM = 64  # tokens of room added whenever storage grows


class _GrowingLayer(DynamicLayer):
    """A DynamicLayer whose storage has spare capacity along the sequence axis."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        super().__init__()
        self._k = self._v = None
        self.length = 0
        if keys is not None:
            self.lazy_initialization(keys, values)
            self._store(keys, values)

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        b, h, n, d = keys.shape
        self._k = keys.new_zeros(b, h, n + _HEADROOM, d)
        self._v = values.new_zeros(b, h, n + _HEADROOM, values.shape[-1])
        self._k[:, :, :n] = keys
        self._v[:, :, :n] = values
        self.length = n
        self._views()

    def _views(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        if self._k is None:
            self.lazy_initialization(key_states, value_states)
            self._store(key_states, value_states)
            return self.keys, self.values
        n = key_states.shape[-2]
        if self.length + n > self._k.shape[-2]:
            self._store(self.keys, self.values)  # grow: copy once with fresh headroom
        self._k[:, :, self.length : self.length + n] = key_states
        self._v[:, :, self.length : self.length + n] = value_states
        self.length += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class BatchCache:
    """The running batch's cache plus its attention mask (1 = real token, 0 = left padding)."""

    def __init__(self) -> None:
        self.layers: list[_GrowingLayer] = []
        self.mask = torch.zeros(0, 0, dtype=torch.long)

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def hf_cache(self) -> DynamicCache:
        cache = DynamicCache()
        cache.layers = self.layers
        return cache

    @staticmethod
    def new_single() -> DynamicCache:
        """An empty cache for prefilling one request; its layers join the batch afterwards."""
        cache = DynamicCache()
        cache.layers = []
        cache.layer_class_to_replicate = _GrowingLayer
        return cache

    def add(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append rows (a prefilled cache and its `[rows, length]` mask), left-padding the shorter side."""
        new_len = mask.shape[1]
        if self.size == 0:
            self.layers = [_GrowingLayer(l.keys, l.values) for l in cache.layers]
            self.mask = mask.clone()
            return
        total = max(self.length, new_len)
        pad_old, pad_new = total - self.length, total - new_len
        layers = []
        for old, new in zip(self.layers, cache.layers):
            k = torch.cat([_lpad(old.keys, pad_old), _lpad(new.keys, pad_new)], dim=0)
            v = torch.cat([_lpad(old.values, pad_old), _lpad(new.values, pad_new)], dim=0)
            layers.append(_GrowingLayer(k, v))
        self.layers = layers
        self.mask = torch.cat([_lpad(self.mask, pad_old), _lpad(mask.to(self.mask.device), pad_new)], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order), then drop columns that are padding for every row."""
        if not rows:
            self.layers, self.mask = [], self.mask[:0, :0]
            return
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int((mask.sum(dim=0) > 0).nonzero()[0]) if mask.numel() else 0
        self.mask = mask[:, first:]
        self.layers = [
            _GrowingLayer(l.keys.index_select(0, index.to(l.keys.device))[:, :, first:], l.values.index_select(0, index.to(l.keys.device))[:, :, first:])
            for l in self.layers
        ]

    def step_mask(self) -> torch.Tensor:
        """Mask for a one-token decoding step: the cache so far plus one real column per row."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        return self.mask


def _lpad(t: torch.Tensor, n: int) -> torch.Tensor:
    """Left-pad along the sequence axis (dim 2 for KV tensors, dim 1 for masks) with zeros."""
    if n == 0:
        return t
    axis = 2 if t.dim() == 4 else 1
    shape = list(t.shape)
    shape[axis] = n
    return torch.cat([t.new_zeros(shape), t], dim=axis)
