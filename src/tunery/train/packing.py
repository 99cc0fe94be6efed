"""Data order, batches and micro-batches.

One optimizer step sees `batch_size` examples (OpenAI's meaning of batch size). Those examples are
split into micro-batches of at most `micro_batch_tokens` tokens, run one after another with their
gradients accumulated, so any batch size fits in bounded memory; the loss of a step is normalized by
the trained tokens of the whole step, so it does not depend on how the step was split.

Packed (default): each micro-batch is ONE row holding several examples back to back, position ids
restarting at 0 for each. transformers turns restarting position ids into a block-diagonal causal
mask (see `masking_utils.find_packed_sequence_indices`), so attention never crosses examples: no
padding at all. Unpacked: examples sorted by length, padded to the longest of their micro-batch.

Shared prefix (packed only): fine-tuning data usually starts every example with the same system
prompt and template header. When the examples of a row share a prefix of at least
`MIN_SHARED_PREFIX` untrained tokens, the row holds that prefix ONCE followed by each example's
remainder, with an explicit mask letting every remainder attend to the prefix and causally to
itself, and positions continuing after the prefix. Each example sees exactly the keys and values it
would see alone, so losses and gradients are unchanged (the prefix's gradient is the sum of what
each example sends it), while the prefix is computed once per row instead of once per example.

Only positions whose next token is trained are gathered for the LM head (`label_pos`); labels never
cross an example boundary because they are computed per example before concatenation.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from .tokenize import Example

# Below this, an explicit [T, T] mask costs more than the shared tokens save.
MIN_SHARED_PREFIX = 16


@dataclass
class MicroBatch:
    input_ids: "torch.Tensor"  # [rows, length]
    position_ids: "torch.Tensor"  # [rows, length]
    attention_mask: "torch.Tensor | None"  # [rows, length] padded; [1, 1, T, T] bool shared prefix; None packed
    label_pos: "torch.Tensor"  # flat indices into rows*length whose next token is trained
    targets: "torch.Tensor"  # the token predicted at each label_pos
    label_weights: "torch.Tensor"  # loss weight of each target
    n_tokens: int  # real (non-pad) tokens of the examples, as if each ran alone
    n_computed: int = 0  # tokens actually run through the model (fewer than n_tokens with a shared prefix)

    @property
    def weight(self) -> float:
        return float(self.label_weights.sum())

    def to(self, device) -> "MicroBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return MicroBatch(move(self.input_ids), move(self.position_ids), move(self.attention_mask), move(self.label_pos), move(self.targets), move(self.label_weights), self.n_tokens, self.n_computed)


def epoch_order(n_examples: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The shuffled example order of one epoch: a pure function of (seed, epoch), so a resumed run
    sees exactly the data order of an uninterrupted one. Without `shuffle`: the file's order."""
    return list(_epoch_order(n_examples, seed, epoch, shuffle))


@functools.lru_cache(maxsize=2)
def _epoch_order(n_examples: int, seed: int, epoch: int, shuffle: bool) -> tuple[int, ...]:
    # Kept for the epoch's steps: with 200k examples a permutation costs more than a small step.
    import torch

    if not shuffle:
        return tuple(range(n_examples))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n_examples, generator=generator).tolist())


def step_indices(n_examples: int, batch_size: int, seed: int, step: int, steps_per_epoch: int, shuffle: bool = True) -> tuple[int, list[int]]:
    """(epoch, example indices) of global step `step` (0-based)."""
    epoch, within = divmod(step, steps_per_epoch)
    order = _epoch_order(n_examples, seed, epoch, shuffle)
    return epoch, list(order[within * batch_size : (within + 1) * batch_size])


def _groups(examples: list[Example], budget: int, packed: bool) -> list[list[Example]]:
    """Split into micro-batches under the token budget (first-fit decreasing by length)."""
    ordered = sorted(examples, key=len, reverse=True)
    groups: list[list[Example]] = []
    if packed:
        loads: list[int] = []
        for ex in ordered:
            for i, load in enumerate(loads):
                if load + len(ex) <= budget:
                    groups[i].append(ex)
                    loads[i] += len(ex)
                    break
            else:
                groups.append([ex])
                loads.append(len(ex))
        return groups
    current: list[Example] = []
    for ex in ordered:  # longest first: the first member sets the padded length
        if current and len(current[0]) * (len(current) + 1) > budget:
            groups.append(current)
            current = []
        current.append(ex)
    if current:
        groups.append(current)
    return groups


def _labels(ex: Example, offset: int):
    """(flat position, target, weight) for every trained next-token prediction of one example."""
    ids, w = ex.input_ids, ex.weights
    return [(offset + j - 1, ids[j], w[j]) for j in range(1, len(ids)) if w[j] > 0]


def shared_prefix(group: list[Example]) -> int:
    """Length of the prefix every example of `group` shares and trains nothing in: the common
    token prefix, cut so that the first trained token of each example comes at least one token
    after it (its label position then lies in the example's own remainder)."""
    if len(group) < 2:
        return 0
    common = len(os.path.commonprefix([ex.input_ids for ex in group]))
    for ex in group:
        first_trained = next((j for j, w in enumerate(ex.weights) if j >= 1 and w > 0), len(ex))
        common = min(common, first_trained - 1, len(ex) - 1)
    return max(common, 0)


def collate_segments(segments: list[tuple[int, list[Example]]]) -> MicroBatch:
    """One row of segments, each `(prefix, examples)`: the examples' common `prefix` tokens once
    (0: none), then each example's remainder, attending to its segment's prefix and causally to
    itself, never to another segment. Labels come example by example, in the order given.
    Supervised rows are one segment; DPO rows one segment per pair (its prompt held once)."""
    import torch

    ids: list[int] = []
    pos: list[int] = []
    labels, blocks = [], []
    for prefix, group in segments:
        head = len(ids)
        ids += group[0].input_ids[:prefix]
        pos += range(prefix)
        spans = []
        for ex in group:
            start = len(ids)
            # token j >= prefix sits at start + j - prefix; its label is at the row position of token j - 1
            labels += [(start + j - 1 - prefix, ex.input_ids[j], ex.weights[j]) for j in range(prefix + 1, len(ex)) if ex.weights[j] > 0]
            ids += ex.input_ids[prefix:]
            pos += range(prefix, len(ex))
            spans.append((start, len(ids)))
        blocks.append((head, prefix, spans))
    length = len(ids)
    mask = torch.zeros((length, length), dtype=torch.bool)
    causal = torch.ones((length, length), dtype=torch.bool).tril_()
    for head, prefix, spans in blocks:
        mask[head : head + prefix, head : head + prefix] = causal[:prefix, :prefix]
        for start, end in spans:
            mask[start:end, head : head + prefix] = True
            mask[start:end, start:end] = causal[: end - start, : end - start]
    pos_t, tgt_t, w_t = zip(*labels) if labels else ((), (), ())
    return MicroBatch(
        input_ids=torch.tensor([ids]),
        position_ids=torch.tensor([pos]),
        attention_mask=mask[None, None],
        label_pos=torch.tensor(pos_t, dtype=torch.long),
        targets=torch.tensor(tgt_t, dtype=torch.long),
        label_weights=torch.tensor(w_t, dtype=torch.float32),
        n_tokens=sum(len(ex) for _, group in segments for ex in group),
        n_computed=length,
    )


def collate(group: list[Example], packed: bool, pad_id: int, min_prefix: int = MIN_SHARED_PREFIX) -> MicroBatch:
    import torch

    if packed and min_prefix > 0:
        prefix = shared_prefix(group)
        if prefix >= min_prefix:
            return collate_segments([(prefix, group)])
    labels = []
    if packed:
        ids, pos = [], []
        for ex in group:
            labels += _labels(ex, len(ids))
            ids += ex.input_ids
            pos += range(len(ex))
        input_ids = torch.tensor([ids])
        position_ids = torch.tensor([pos])
        attention_mask = None
    else:
        length = max(len(ex) for ex in group)
        input_ids = torch.full((len(group), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(group), length), dtype=torch.long)
        for r, ex in enumerate(group):
            input_ids[r, : len(ex)] = torch.tensor(ex.input_ids)
            attention_mask[r, : len(ex)] = 1
            labels += _labels(ex, r * length)
        position_ids = torch.arange(length).expand(len(group), length).contiguous()
    pos_t, tgt_t, w_t = zip(*labels) if labels else ((), (), ())
    return MicroBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        label_pos=torch.tensor(pos_t, dtype=torch.long),
        targets=torch.tensor(tgt_t, dtype=torch.long),
        label_weights=torch.tensor(w_t, dtype=torch.float32),
        n_tokens=sum(len(ex) for ex in group),
        n_computed=int(input_ids.numel()),
    )


def micro_batches(examples: list[Example], budget: int, packed: bool, pad_id: int, min_prefix: int = MIN_SHARED_PREFIX) -> list[MicroBatch]:
    return [collate(g, packed, pad_id, min_prefix) for g in _groups(examples, budget, packed)]
