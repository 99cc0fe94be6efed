"""Batched multi-LoRA for a mixed batch (the punica/S-LoRA "BGMV" idea in plain torch).

peft's mixed-batch path (`adapter_names=`) loops over every adapter in every LoRA layer: gather
the adapter's rows, two small matmuls, scatter back. At decode time (one token per row) that
per-call overhead dominates on CPU and grows with the number of adapters mixed. Here each LoRA
linear keeps its loaded adapters side by side — `A: [in, slots*r]`, `B: [slots*r, out]`, ranks
zero-padded to the largest (exact) — and a step is `base(x) + ((x @ A) * mask) @ B`, where row i's
`mask` holds its adapter's scale on that adapter's r columns and zeros elsewhere (base rows: all
zeros). Two plain matmuls and one multiply per layer, whatever the mix, with no per-row gather of
adapter weights: each adapter's weights are read once per step, not once per row.

The peft modules stay as they are (export, merging and loading are untouched); only their forward
is overridden, and only inside `MultiLoRA.rows(...)`. Models with anything but vanilla LoRA on
`nn.Linear` (DoRA, LoRA bias, embeddings, modules_to_save, ...) are not `supported` and keep
peft's own path.
"""

from __future__ import annotations

import contextlib
import types

import torch


class _Stack:
    """One LoRA linear's adapters side by side: slot s (1-based) owns columns (s-1)*r .. s*r-1."""

    def __init__(self, layer, slots: dict[str, int]):
        names = [n for n in slots if n in layer.lora_A]
        base = layer.get_base_layer()
        rank = max((layer.lora_A[n].weight.shape[0] for n in names), default=1)
        n = len(slots)
        w = base.weight
        # The adapters' own dtype (peft keeps them in fp32 on a bf16 base): the low-rank path then
        # rounds as peft's does, at the cost of two tiny fp32 matmuls per layer.
        dtype = w.dtype
        for name in names:
            dtype = torch.promote_types(dtype, layer.lora_A[name].weight.dtype)
        A = torch.zeros(n, rank, base.in_features, dtype=dtype, device=w.device)
        B = torch.zeros(n, base.out_features, rank, dtype=dtype, device=w.device)
        scale = torch.zeros(n, dtype=dtype, device=w.device)
        for name in names:
            s, a, b = slots[name] - 1, layer.lora_A[name].weight, layer.lora_B[name].weight
            A[s, : a.shape[0]] = a.to(dtype)
            B[s, :, : b.shape[1]] = b.to(dtype)
            scale[s] = layer.scaling[name]
        self.A = A.reshape(n * rank, -1).t().contiguous()  # [in, slots*r]
        self.B = B.permute(0, 2, 1).reshape(n * rank, -1).contiguous()  # [slots*r, out]
        self.col_slot = torch.arange(1, n + 1, device=w.device).repeat_interleave(rank)  # [slots*r]
        self.col_scale = scale.repeat_interleave(rank)
        # Layers with the same column layout share one mask per step.
        self.key = (rank, dtype, tuple(scale.tolist()))


def _lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def supported(model) -> bool:
    """Whether every adapter in `model` is plain LoRA on `nn.Linear` (what the batched step computes)."""
    from peft.tuners.lora import Linear
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        from peft.utils.other import AuxiliaryTrainingWrapper
    except ImportError:  # older peft: only ModulesToSaveWrapper exists
        from peft.utils.other import ModulesToSaveWrapper as AuxiliaryTrainingWrapper

    for m in model.modules():
        if isinstance(m, AuxiliaryTrainingWrapper):
            return False
        if isinstance(m, BaseTunerLayer):
            if type(m) is not Linear or m.merged or m.fan_in_fan_out or m.lora_variant or any(m.lora_bias.values()):
                return False
            if not isinstance(m.get_base_layer(), torch.nn.Linear):
                return False
    return True


class MultiLoRA:
    """The batched LoRA step for one peft model. `rows(adapters)` applies row i's adapter to row i."""

    def __init__(self):
        self._key: tuple | None = None  # which adapters the stacks were built from
        self._slots: dict[str, int] = {}
        self._idx: torch.Tensor | None = None  # the current step's slot per row, None = off
        self._masks: dict[tuple, torch.Tensor] = {}  # this step's row masks, by column layout

    def sync(self, model) -> bool:
        """(Re)build the stacks if adapters were loaded or deleted since the last call. True when the
        batched step can serve `model`'s adapters; False (use peft's `adapter_names`) otherwise."""
        key = (id(model), tuple(getattr(model, "peft_config", {})))
        if key != self._key:
            self._key, self._slots = key, {}
            if key[1] and supported(model):
                self._slots = {name: i + 1 for i, name in enumerate(key[1])}
                for _, layer in _lora_layers(model):
                    layer._tunery_stack = _Stack(layer, self._slots)
                    if "forward" not in layer.__dict__:  # override once per module instance
                        layer.forward = types.MethodType(_make_forward(self, type(layer).forward), layer)
        return bool(self._slots)

    @contextlib.contextmanager
    def rows(self, adapters: list[str | None], device):
        """Within this block, the model's LoRA layers apply `adapters[i]` (None = base) to batch row i."""
        slots = [self._slots[a] if a else 0 for a in adapters]
        self._idx = None if not any(slots) else torch.tensor(slots, device=device)
        self._active = True
        try:
            yield
        finally:
            self._active, self._idx, self._masks = False, None, {}

    def mask(self, st: _Stack) -> torch.Tensor:
        """`[batch, slots*r]`: each row's adapter scale on its own adapter's columns, zeros elsewhere."""
        m = self._masks.get(st.key)
        if m is None:
            m = self._masks[st.key] = (st.col_slot == self._idx[:, None]).to(st.col_scale.dtype) * st.col_scale
        return m

    _active = False


def _make_forward(owner: MultiLoRA, peft_forward):
    def forward(layer, x, *args, **kwargs):
        if not owner._active:
            return peft_forward(layer, x, *args, **kwargs)
        result = layer.base_layer(x, *args, **kwargs)
        if owner._idx is None:  # every row is a base row
            return result
        st = layer._tunery_stack
        xs = x.to(st.A.dtype).reshape(x.shape[0], -1, x.shape[-1])  # [batch, tokens, in]
        h = torch.matmul(xs, st.A) * owner.mask(st)[:, None, :]  # [batch, tokens, slots*r]
        delta = torch.matmul(h, st.B)
        return (result + delta.reshape(result.shape)).to(result.dtype)  # sum in the wider dtype, as peft does

    return forward
