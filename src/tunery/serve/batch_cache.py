"""A batched, left-padded KV cache that rows can join and leave between decoding steps, in place.

Every layer keeps preallocated storage `[row capacity, heads, column capacity, dim]`. The live
batch is rows `[:size]` and columns `[start, start + length)`: each row's keys/values are
right-aligned there, a row shorter than the longest is left-padded and masked out by the 2-D
attention mask. Nothing is re-concatenated in the steady state:

- a decoding step writes one column in place (what `DynamicLayer` would `cat` every step);
- a joining row is written into the next free row, right-aligned (its padding zeroed);
- a leaving row is replaced by the last live row (one row copied), and columns that became padding
  for every row are dropped by moving `start`.

Storage is re-allocated (everything copied once) only when rows, a longer prompt or the next step
don't fit; the engine follows the row order that `keep` returns.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

_HEADROOM = 64  # spare columns (for steps) and rows (for joins) whenever storage is allocated
_ROW_HEADROOM = 8


class _SlotLayer(DynamicLayer):
    """One layer's view of the batch storage; `keys`/`values` are the live window."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, size: int, start: int, length: int):
        super().__init__()
        self.dtype, self.device, self.is_initialized = k.dtype, k.device, True
        self._k, self._v = k, v
        self.size, self.start, self.length = size, start, length
        self._views()

    def _views(self) -> None:
        cols = slice(self.start, self.start + self.length)
        self.keys = self._k[: self.size, :, cols]
        self.values = self._v[: self.size, :, cols]

    def update(self, key_states, value_states, *args, **kwargs):
        n = key_states.shape[-2]
        end = self.start + self.length
        if end + n > self._k.shape[2]:  # only if BatchCache.reserve wasn't called: stay correct
            self._k, self._v, self.start = *_realloc(self.keys, self.values, self._k.shape[0], n), 0
            end = self.length
        self._k[: self.size, :, end : end + n] = key_states
        self._v[: self.size, :, end : end + n] = value_states
        self.length += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


def _realloc(keys: torch.Tensor, values: torch.Tensor, rows: int, extra_cols: int, left: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh zeroed storage with `rows` rows and room for `extra_cols` more columns (plus headroom),
    holding `keys`/`values` from column `left`."""
    b, h, n, d = keys.shape
    k = keys.new_zeros(rows, h, left + n + extra_cols + _HEADROOM, d)
    v = values.new_zeros(rows, h, left + n + extra_cols + _HEADROOM, values.shape[-1])
    k[:b, :, left : left + n] = keys
    v[:b, :, left : left + n] = values
    return k, v


class BatchCache:
    """The running batch's cache plus its attention mask (1 = real token, 0 = left padding)."""

    def __init__(self) -> None:
        self.layers: list[_SlotLayer] = []
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
        """An empty cache for a prefill; its rows join the batch afterwards (`add`)."""
        return DynamicCache()

    def add(self, cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append rows (a prefilled cache and its `[rows, length]` mask), left-padding the shorter side."""
        n, new_len = mask.shape
        mask = mask.to(self.mask.device)
        if self.size == 0:
            self.layers = [_SlotLayer(*_realloc(l.keys, l.values, n + _ROW_HEADROOM, 0), n, 0, new_len) for l in cache.layers]
            self.mask = mask.clone()
            return
        if new_len > self.length:  # the newcomers are longer: widen the window to the left
            self._widen(new_len - self.length)
        rows, total = slice(self.size, self.size + n), self.length
        if self.size + n > self.layers[0]._k.shape[0]:
            self._reallocate(self.size + n + _ROW_HEADROOM, 0)
        for layer, new in zip(self.layers, cache.layers):
            end = layer.start + total
            layer._k[rows, :, layer.start : end - new_len] = 0
            layer._v[rows, :, layer.start : end - new_len] = 0
            layer._k[rows, :, end - new_len : end] = new.keys
            layer._v[rows, :, end - new_len : end] = new.values
            layer.size += n
            layer._views()
        self.mask = torch.cat([self.mask, _lpad(mask, total - new_len)], dim=0)

    def keep(self, rows: list[int]) -> list[int]:
        """Keep only `rows` (indices into the current batch). Leaving rows are filled by the last
        live rows, so the order changes: returns the old index of each new row, in order."""
        order = list(range(self.size))
        kept = set(rows)
        if not rows:
            self.layers, self.mask = [], self.mask[:0, :0]
            return []
        moves = []  # (from, to) row copies in storage
        for hole in sorted(set(order) - kept):
            while order and order[-1] not in kept:
                order.pop()  # a leaving row at the end: nothing to move
            if hole >= len(order):
                break
            moves.append((len(order) - 1, hole))
            order[hole] = order.pop()
        size = len(order)
        index = torch.tensor(order, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        first = int((mask.sum(dim=0) > 0).nonzero()[0]) if mask.numel() else 0
        self.mask = mask[:, first:]
        for layer in self.layers:
            for src, dst in moves:
                layer._k[dst] = layer._k[src]
                layer._v[dst] = layer._v[src]
            layer.size, layer.start, layer.length = size, layer.start + first, layer.length - first
            layer._views()
        return order

    def reserve(self) -> None:
        """Make room for one more column (call before a decoding step)."""
        if self.layers and self.layers[0].start + self.layers[0].length >= self.layers[0]._k.shape[2]:
            self._reallocate(self.layers[0]._k.shape[0], 1)

    def step_mask(self) -> torch.Tensor:
        """Mask for a one-token decoding step: the cache so far plus one real column per row."""
        self.reserve()
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.size, 1)], dim=1)
        return self.mask

    def _widen(self, extra: int) -> None:
        """Add `extra` padding columns on the left of every live row."""
        if self.layers[0].start < extra:
            self._reallocate(self.layers[0]._k.shape[0], extra, left=extra)
        for layer in self.layers:
            layer.start -= extra
            layer.length += extra
            layer._k[: layer.size, :, layer.start : layer.start + extra] = 0
            layer._v[: layer.size, :, layer.start : layer.start + extra] = 0
            layer._views()
        self.mask = _lpad(self.mask, extra)

    def _reallocate(self, rows: int, extra_cols: int, left: int = 0) -> None:
        """Copy the live window into fresh storage with `rows` rows, starting at column `left`."""
        for layer in self.layers:
            layer._k, layer._v = _realloc(layer.keys, layer.values, rows, extra_cols, left)
            layer.start = left
            layer._views()


def _lpad(t: torch.Tensor, n: int) -> torch.Tensor:
    """Left-pad a `[rows, length]` mask with zeros."""
    if n == 0:
        return t
    return torch.cat([t.new_zeros(t.shape[0], n), t], dim=1)
