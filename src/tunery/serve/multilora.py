"""Batched multi-LoRA for a mixed batch (the punica/S-LoRA "BGMV" idea in plain torch).

peft's mixed-batch path (`adapter_names=`) loops over every adapter in every LoRA layer: gather
the adapter's rows, two small matmuls, scatter back. At decode time (one token per row) that
per-call overhead dominates on CPU and grows with the number of adapters mixed. Here each LoRA
linear keeps its loaded adapters side by side — `A: [in, slots*r]`, `B: [slots*r, out]`, ranks
zero-padded to the largest (exact) — and a step is `base(x) + ((x @ A) * mask) @ B`, where row i's
`mask` holds its adapter's scale on that adapter's r columns and zeros elsewhere (base rows: all
zeros). Two plain matmuls and one multiply per layer, whatever the mix, with no per-row gather of
adapter weights: each adapter's weights are read once per step, not once per row.

That is the decoding step (a few rows, memory-bound: every adapter's weights read once). A prompt
forward of several adapters is compute-bound instead, and the masked product would spend most of
its flops on other adapters' columns: there each adapter's rows are gathered and take only their
own columns (punica's SGMV to the decoding step's BGMV).

A step reads only the adapters its rows use: when they are at most half of the loaded ones (one
fine-tune in use, others idle in the cache), the step runs on a copy of the stacks with just their
columns, kept until the set changes. Without it every step would read every loaded adapter.

Sibling linears that a layer calls with the same input (q/k/v, gate/up) share one cast, one
down-projection matmul and one mask: at decode time a step is hundreds of tiny ops, and each op
saved is dispatch time saved (measured in-process: 15-20% less LoRA time per mixed step, bit-identical).

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
        self.rank = rank
        self.A = A.reshape(n * rank, -1).t().contiguous()  # [in, slots*r]
        self.B = B.permute(0, 2, 1).reshape(n * rank, -1).contiguous()  # [slots*r, out]
        self.col_slot = torch.arange(1, n + 1, device=w.device).repeat_interleave(rank)  # [slots*r]
        self.col_scale = scale.repeat_interleave(rank)
        # Layers with the same column layout share one mask per step.
        self.key = (rank, dtype, tuple(scale.tolist()))
        self.cols = {i + 1: (i * rank, (i + 1) * rank, float(scale[i])) for i in range(n)}  # slot -> its columns, scale
        self.group: _Group | None = None
        self.member = 0

    def select(self, slots: tuple[int, ...]) -> "_Stack":
        """A copy with only `slots`' columns (their slot numbers kept, so row masks still match)."""
        cols = torch.cat([torch.arange((s - 1) * self.rank, s * self.rank) for s in slots]).to(self.A.device)
        new = object.__new__(_Stack)
        new.rank, new.group, new.member = self.rank, None, 0
        new.A, new.B = self.A.index_select(1, cols), self.B.index_select(0, cols)
        new.col_slot, new.col_scale = self.col_slot[cols], self.col_scale[cols]
        new.cols = {s: (i * self.rank, (i + 1) * self.rank, self.cols[s][2]) for i, s in enumerate(slots)}
        new.key = (self.key, slots)
        return new


# Sibling linears that Llama-family layers call with the same input tensor. The input is checked
# by identity at run time, so another architecture that reuses these names stays correct (it
# only loses the sharing).
_SHARED_INPUT = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class _Group:
    """Stacks of sibling linears that take the same input: `A` side by side (each member's `A`
    becomes a view of its columns). The first member called in a forward computes every
    member's delta; the others take theirs."""

    def __init__(self, stacks: list[_Stack]):
        self.stacks = stacks
        self.A = torch.cat([st.A for st in stacks], dim=1).contiguous()
        self.spans, start = [], 0
        for i, st in enumerate(stacks):
            end = start + st.A.shape[1]
            st.A, st.group, st.member = self.A[:, start:end], self, i
            self.spans.append((start, end))
            start = end
        self.key = tuple(st.key for st in stacks)
        self.clear()

    def clear(self) -> None:
        # The input the deltas were computed from. Held, so its identity cannot be reused; inference
        # tensors have no version counter, and no decoder layer writes its input between siblings.
        self.x: torch.Tensor | None = None
        self.deltas: list[torch.Tensor] = []


class _Layout:
    """The stacks a step runs on, by layer (`id`), and their sibling groups."""

    def __init__(self, stacks: dict[int, _Stack], siblings: list[list[int]]):
        self.stacks = stacks
        self.groups = [_Group([stacks[i] for i in ids]) for ids in siblings]

    def clear(self) -> None:
        for group in self.groups:  # drop the last forward's inputs and deltas
            group.clear()


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
        self._token_masks: dict[tuple, torch.Tensor] = {}  # ... side by side and per token, by layouts and tokens
        self._siblings: list[list[int]] = []  # ids of LoRA layers that take the same input
        self._all: _Layout | None = None  # every loaded adapter
        self._some: tuple[tuple[int, ...], _Layout] | None = None  # the last subset a step used
        self._layout: _Layout | None = None  # this step's

    def sync(self, model) -> bool:
        """(Re)build the stacks if adapters were loaded or deleted since the last call. True when the
        batched step can serve `model`'s adapters; False (use peft's `adapter_names`) otherwise."""
        key = (id(model), tuple(getattr(model, "peft_config", {})))
        if key != self._key:
            self._key, self._slots, self._all, self._some = key, {}, None, None
            if key[1] and supported(model):
                self._slots = {name: i + 1 for i, name in enumerate(key[1])}
                layers = _lora_layers(model)
                for _, layer in layers:
                    if "forward" not in layer.__dict__:  # override once per module instance
                        layer.forward = types.MethodType(_make_forward(self, type(layer).forward), layer)
                by_name = dict(layers)
                self._siblings = []
                for name, _ in layers:
                    parent, _, leaf = name.rpartition(".")
                    for siblings in _SHARED_INPUT:
                        if leaf == siblings[0]:
                            members = [id(by_name[f"{parent}.{s}"]) for s in siblings if f"{parent}.{s}" in by_name]
                            if len(members) > 1:
                                self._siblings.append(members)
                self._all = _Layout({id(layer): _Stack(layer, self._slots) for _, layer in layers}, self._siblings)
        return bool(self._slots)

    @contextlib.contextmanager
    def rows(self, adapters: list[str | None], device):
        """Within this block, the model's LoRA layers apply `adapters[i]` (None = base) to batch row i."""
        slots = [self._slots[a] if a else 0 for a in adapters]
        self._idx = None if not any(slots) else torch.tensor(slots, device=device)
        used = tuple(sorted(set(slots) - {0}))
        self._used, self._segments = used, {}
        if 2 * len(used) > len(self._slots):  # most of them: reading a few idle columns beats a copy
            self._layout = self._all
        elif used:
            if self._some is None or self._some[0] != used:
                self._some = None  # free the previous subset before copying the next
                self._some = (used, _Layout({i: st.select(used) for i, st in self._all.stacks.items()}, self._siblings))
            self._layout = self._some[1]
        self._active = True
        try:
            yield
        finally:
            if self._layout is not None:
                self._layout.clear()
            self._active, self._idx, self._layout, self._masks, self._token_masks = False, None, None, {}, {}

    def _row_mask(self, st: _Stack) -> torch.Tensor:
        """`[batch, slots*r]`: each row's adapter scale on its own adapter's columns, zeros elsewhere."""
        m = self._masks.get(st.key)
        if m is None:
            m = self._masks[st.key] = (st.col_slot == self._idx[:, None]).to(st.col_scale.dtype) * st.col_scale
        return m

    def _mask(self, key: tuple, stacks: list[_Stack], tokens: int) -> torch.Tensor:
        """The row masks of `stacks` side by side, one row per token of the flattened input."""
        m = self._token_masks.get((key, tokens))
        if m is None:
            m = torch.cat([self._row_mask(st) for st in stacks], dim=1) if len(stacks) > 1 else self._row_mask(stacks[0])
            self._token_masks[(key, tokens)] = m = m.repeat_interleave(tokens, dim=0) if tokens > 1 else m
        return m

    def delta(self, st: _Stack, x: torch.Tensor) -> torch.Tensor:
        """`[batch*tokens, out]`: the low-rank term of `st`'s linear for input `x`, row i's adapter
        on row i, in the adapters' dtype."""
        group = st.group
        if group is not None and group.x is x:
            return group.deltas[st.member]  # a sibling already computed it from this very input
        x2 = x.reshape(-1, x.shape[-1])
        tokens = x2.shape[0] // self._idx.shape[0]
        if tokens > 1 and len(self._used) > 1:
            # A prompt of several adapters: the masked product would spend most of its (now
            # compute-bound) flops on other adapters' columns; each adapter's rows take their own.
            deltas = self._by_adapter([st] if group is None else group.stacks, x2, tokens)
        elif group is None:
            h = torch.mm(x2.to(st.A.dtype), st.A).mul_(self._mask(st.key, [st], tokens))
            deltas = [torch.mm(h, st.B)]
        else:
            h = torch.mm(x2.to(group.A.dtype), group.A).mul_(self._mask(group.key, group.stacks, tokens))
            deltas = [torch.mm(h[:, a:b], s.B) for (a, b), s in zip(group.spans, group.stacks)]
        if group is not None:
            group.deltas, group.x = deltas, x
        return deltas[st.member]

    def _by_adapter(self, stacks: list[_Stack], x2: torch.Tensor, tokens: int) -> list[torch.Tensor]:
        """Every stack's delta, computed per adapter over that adapter's rows only (base rows: 0)."""
        segments = self._segments.get(tokens)
        if segments is None:  # per adapter: the flattened rows of its batch rows' tokens
            steps = torch.arange(tokens, device=x2.device)
            segments = self._segments[tokens] = [
                (slot, ((self._idx == slot).nonzero()[:, :1] * tokens + steps).flatten()) for slot in self._used
            ]
        dtype = stacks[0].A.dtype
        out = [x2.new_zeros(x2.shape[0], st.B.shape[1], dtype=dtype) for st in stacks]
        for slot, index in segments:
            xs = x2.index_select(0, index).to(dtype)
            for st, delta in zip(stacks, out):
                start, end, scale = st.cols[slot]
                if scale:  # 0: this adapter has no LoRA on this linear
                    h = torch.mm(xs, st.A[:, start:end]).mul_(scale)
                    delta.index_copy_(0, index, torch.mm(h, st.B[start:end]))
        return out

    _active = False


def _make_forward(owner: MultiLoRA, peft_forward):
    def forward(layer, x, *args, **kwargs):
        if not owner._active:
            return peft_forward(layer, x, *args, **kwargs)
        result = layer.base_layer(x, *args, **kwargs)
        if owner._idx is None:  # every row is a base row
            return result
        # In place, summed in the wider dtype and rounded once: what peft's `(result + delta).to(dtype)` does.
        return result.add_(owner.delta(owner._layout.stacks[id(layer)], x).view(result.shape))

    return forward
