"""Data order, batches and micro-batches.

One optimizer step sees `batch_size` examples (OpenAI's meaning of batch size). Those examples are
split into micro-batches of at most `micro_batch_tokens` tokens, run one after another with their
gradients accumulated, so any batch size fits in bounded memory; the loss of a step is normalized by
the trained tokens of the whole step, so it does not depend on how the step was split.

Packed (default): each micro-batch is ONE row holding several examples back to back, position ids
restarting at 0 for each. transformers turns restarting position ids into a block-diagonal causal
mask (see `masking_utils.find_packed_sequence_indices`), so attention never crosses examples: no
padding at all. Unpacked: examples sorted by length, padded to the longest of their micro-batch.

Only positions whose next token is trained are gathered for the LM head (`label_pos`); labels never
cross an example boundary because they are computed per example before concatenation.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tokenize import Example


@dataclass
class MicroBatch:
    input_ids: "torch.Tensor"  # [rows, length]
    position_ids: "torch.Tensor"  # [rows, length]
    attention_mask: "torch.Tensor | None"  # [rows, length] when padded, None when packed
    label_pos: "torch.Tensor"  # flat indices into rows*length whose next token is trained
    targets: "torch.Tensor"  # the token predicted at each label_pos
    label_weights: "torch.Tensor"  # loss weight of each target
    n_tokens: int  # real (non-pad) tokens

    @property
    def weight(self) -> float:
        return float(self.label_weights.sum())

    def to(self, device) -> "MicroBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return MicroBatch(move(self.input_ids), move(self.position_ids), move(self.attention_mask), move(self.label_pos), move(self.targets), move(self.label_weights), self.n_tokens)


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch: a pure function of (seed, epoch), so a resumed run
    sees exactly the data order of an uninterrupted one."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_examples, generator=generator).tolist()


def step_indices(n_examples: int, batch_size: int, seed: int, step: int, steps_per_epoch: int) -> tuple[int, list[int]]:
    """(epoch, example indices) of global step `step` (0-based)."""
    epoch, within = divmod(step, steps_per_epoch)
    order = epoch_order(n_examples, seed, epoch)
    return epoch, order[within * batch_size : (within + 1) * batch_size]


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


def collate(group: list[Example], packed: bool, pad_id: int) -> MicroBatch:
    import torch

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
    )


def micro_batches(examples: list[Example], budget: int, packed: bool, pad_id: int) -> list[MicroBatch]:
    return [collate(g, packed, pad_id) for g in _groups(examples, budget, packed)]
