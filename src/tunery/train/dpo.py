"""Direct preference optimization: what the DPO method adds to the supervised engine.

Tokens: a preference record becomes two ordinary chat `Example`s, the input followed by the
preferred output and the input followed by the non-preferred one, tokenized by the supervised
`Tokenizer` (same template, same truncation from the end, same counting). Only the final assistant
turn is weighted (its content and its end-of-turn token); assistant turns inside the input are
context (weight 0). Both examples therefore start with the same prompt tokens, which a packed row
holds once for both (`packing.collate_segments`, one segment per pair). The pair is stored as two
consecutive examples of one `TokenStore` (chosen at 2i, rejected at 2i+1), so the file stays on
disk as supervised files do.

Loss: TRL's default (sigmoid) DPO over SUMMED completion log-probabilities,
`-logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`, averaged over the pairs of a step.

Reference: the log-probabilities of the starting model, computed once in a no-grad pass before the
first step and cached (not recomputed every step). With LoRA the pass runs with the adapter
disabled, so the reference is exactly the weights the adapter sits on (for an `ft:` starting model,
that fine-tune merged into its base) and costs no second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tunery.data.dpo import preference_outputs
from tunery.data.formats import NAMES

from .errors import TrainError
from .loop import Trainer  # loop imports this module only when a run is DPO: no cycle
from .packing import MIN_SHARED_PREFIX, MicroBatch, collate, collate_segments, shared_prefix
from .records import CHAT, PREFERENCE, Record
from .tokenize import Example, TokenizedFile, TokenStore, Tokenizer

# TRL's names for the preference measures, used as they are in events, metrics.csv and results.
REWARD_KEYS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


# -- tokens -----------------------------------------------------------------------------------


def _as_chat(record: Record, output: dict) -> Record:
    """The input followed by one output, as a chat record training only that output."""
    given = record.data["input"]
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in given["messages"]]
    answer = {k: v for k, v in output.items() if k != "weight"}  # the compared turn is always scored
    return Record(record.line, CHAT, {"messages": context + [answer], "tools": given.get("tools")})


def prompt_length(chosen: Example, rejected: Example) -> int:
    """Tokens the two examples share before either's first scored token: the prompt."""
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen.input_ids[n] == rejected.input_ids[n] and chosen.weights[n] == 0 and rejected.weights[n] == 0:
        n += 1
    return n


class PreferenceTokenizer(Tokenizer):
    """Preference records -> (chosen, rejected) example pairs; `encode_all` stores them interleaved."""

    def encode_pair(self, record: Record) -> tuple[Example, Example]:
        if record.kind != PREFERENCE:
            raise TrainError(
                "invalid_training_file",
                f"line {record.line}: method 'dpo' trains on preference records (input, preferred_output, non_preferred_output), not {NAMES[record.kind]} records",
                "training_file",
            )
        preferred, non_preferred = preference_outputs(record.data)
        return self.encode(_as_chat(record, preferred)), self.encode(_as_chat(record, non_preferred))

    def _encode_into(self, result: TokenizedFile, records: Iterable[Record]) -> int:
        # `truncated` counts pairs (either side cut); a pair with either output cut away entirely
        # has nothing to compare and is dropped, its line reported like supervised drops.
        n_records = 0
        for record in records:
            n_records += 1
            chosen, rejected = self.encode_pair(record)
            result.truncated += chosen.truncated or rejected.truncated
            if not chosen.trained_tokens or not rejected.trained_tokens:
                result.dropped.append(record.line)
                continue
            result.trained_tokens += chosen.trained_tokens + rejected.trained_tokens
            result.examples.append(chosen)
            result.examples.append(rejected)
        return n_records


def n_pairs(store: TokenStore) -> int:
    return len(store) // 2


def pair(store: TokenStore, i: int) -> tuple[Example, Example]:
    return store[2 * i], store[2 * i + 1]


# -- loss -------------------------------------------------------------------------------------


@dataclass
class DPOOutput:
    """Per-pair loss and implicit rewards (`beta * (policy - reference)` log-prob ratios)."""

    losses: "torch.Tensor"
    chosen_rewards: "torch.Tensor"
    rejected_rewards: "torch.Tensor"

    def metric_sums(self) -> dict[str, "torch.Tensor"]:
        """Sums over the pairs, the loss's under "loss" (divide by the pair count for TRL's batch
        means); tensors, so that a step adds them up without waiting for the device."""
        chosen, rejected = self.chosen_rewards.detach(), self.rejected_rewards.detach()
        return {
            "loss": self.losses.detach().sum(),
            "rewards/accuracies": (chosen > rejected).float().sum(),
            "rewards/margins": (chosen - rejected).sum(),
            "rewards/chosen": chosen.sum(),
            "rewards/rejected": rejected.sum(),
        }


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float) -> DPOOutput:
    """Sigmoid DPO of summed completion log-probabilities (tensors of one value per pair)."""
    import torch.nn.functional as F

    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return DPOOutput(-F.logsigmoid(chosen - rejected), chosen, rejected)


# -- log-probabilities ------------------------------------------------------------------------


@dataclass
class PairBatch:
    """Some pairs of a step in one micro-batch: `pairs` are their indices in the file; in the
    micro-batch each pair is two examples (chosen, rejected), in that order."""

    pairs: list[int]
    mb: MicroBatch
    counts: list[int]  # scored tokens of each example, in micro-batch order

    def to(self, device) -> "PairBatch":
        return PairBatch(self.pairs, self.mb.to(device), self.counts)


def pair_batches(store: TokenStore, indices: list[int], budget: int, packed: bool, pad_id: int, min_prefix: int = MIN_SHARED_PREFIX) -> Iterator[PairBatch]:
    """Micro-batches of whole pairs under the token budget (a pair over the budget runs alone):
    a pair never straddles two micro-batches, so its loss is computed in one place."""
    group: list[int] = []
    load = 0
    for i in indices:
        size = store.lengths[2 * i] + store.lengths[2 * i + 1]
        if group and load + size > budget:
            yield _pair_batch(store, group, packed, pad_id, min_prefix)
            group, load = [], 0
        group.append(i)
        load += size
    if group:
        yield _pair_batch(store, group, packed, pad_id, min_prefix)


def _pair_batch(store: TokenStore, group: list[int], packed: bool, pad_id: int, min_prefix: int) -> PairBatch:
    pairs = [pair(store, i) for i in group]
    examples = [ex for p in pairs for ex in p]
    # Packed with shared prefixes: each pair's prompt once, both outputs attending to it (a row
    # of one segment per pair). A prompt shorter than `min_prefix` is not worth an explicit mask;
    # when no pair's is, the plain packed row does. Every collate emits each example's labels in
    # the order of `examples`, trained_tokens of them apiece: that maps labels back to sequences.
    prefixes = [shared_prefix(list(p)) if packed and min_prefix > 0 else 0 for p in pairs]
    if any(n >= min_prefix for n in prefixes) and packed and min_prefix > 0:
        mb = collate_segments([(n if n >= min_prefix else 0, list(p)) for n, p in zip(prefixes, pairs)])
    else:
        mb = collate(examples, packed, pad_id, min_prefix)
    return PairBatch(group, mb, [ex.trained_tokens for ex in examples])


def sequence_logps(model, batch: PairBatch):
    """Summed log-probability of each pair's chosen and rejected completion: a [pairs, 2] tensor."""
    import torch
    import torch.nn.functional as F

    from .modeling import label_logits

    logits = label_logits(model, batch.mb)
    token_logps = -F.cross_entropy(logits, batch.mb.targets, reduction="none")
    counts = torch.tensor(batch.counts, device=token_logps.device)
    owner = torch.repeat_interleave(torch.arange(len(batch.counts), device=token_logps.device), counts)
    sums = torch.zeros(len(batch.counts), device=token_logps.device, dtype=token_logps.dtype).index_add(0, owner, token_logps)
    return sums.view(-1, 2)


def reference_logps(model, store: TokenStore, budget: int, packed: bool, pad_id: int, min_prefix: int = MIN_SHARED_PREFIX, device=None, autocast=None, check=None):
    """[pairs, 2] summed log-probs of every pair under the reference: the model as it is now, with
    a LoRA adapter switched off. One no-grad pass over the file; the caller caches the result."""
    import contextlib

    import torch
    from peft import PeftModel

    out = torch.zeros(n_pairs(store), 2, dtype=torch.float32)
    was_training = model.training
    model.eval()
    adapter_off = model.disable_adapter() if isinstance(model, PeftModel) else contextlib.nullcontext()
    try:
        with torch.no_grad(), adapter_off, (autocast() if autocast else contextlib.nullcontext()):
            for batch in pair_batches(store, list(range(n_pairs(store))), budget, packed, pad_id, min_prefix):
                if check is not None:
                    check()
                if device is not None:
                    batch = batch.to(device)
                out[batch.pairs] = sequence_logps(model, batch).float().cpu()
    finally:
        model.train(was_training)
    return out


# -- the method in the training loop ----------------------------------------------------------


class DPOTrainer(Trainer):
    """The supervised loop with DPO's units (pairs), step, validation and metrics."""

    tokenizer_class = PreferenceTokenizer
    unit = "pair"
    csv_columns = {"step": "step", "train_loss": "train_loss", "valid_loss": "valid_loss", **{k: k for k in REWARD_KEYS}}
    valid_keys = ("valid_loss", *(f"valid_{k}" for k in REWARD_KEYS))

    def count(self, data: TokenizedFile) -> int:
        return n_pairs(data.examples)

    def unit_tokens(self, i: int) -> int:
        return self.train.examples.lengths[2 * i] + self.train.examples.lengths[2 * i + 1]

    def reference(self, data: TokenizedFile):
        return reference_logps(self.model, data.examples, self.budget, self.packed, self.pad_id, self.min_prefix,
                               self.device, self.autocast, self.control.check_cancel)

    def setup(self) -> None:
        super().setup()
        if self.config.method == "lora" and self.config.lora_dropout > 0:
            # The reference pass runs without dropout, the policy's steps with it: the log-ratios
            # carry dropout noise (TRL switches dropout off for DPO by default).
            self.events.emit("message", f"LoRA dropout {self.config.lora_dropout:g} makes DPO's log-ratios noisy (step 1 is not exactly log 2); 0 is usual for DPO", {"lora_dropout": self.config.lora_dropout}, level="warn")

    def resume_state(self) -> int:
        import time

        self.ref_train = self.ref_valid = None
        start = super().resume_state()
        if self.ref_train is None:
            # Before any step: the weights are the starting model's (a full run has no other copy).
            started = time.perf_counter()
            self.ref_train = self.reference(self.train)
            self.ref_valid = self.reference(self.valid) if self.valid is not None else None
            pairs = self.n_train + (self.count(self.valid) if self.valid is not None else 0)
            self.events.emit("message", f"Reference log-probabilities of {pairs} pairs computed once ({time.perf_counter() - started:.1f} s)", {"pairs": pairs})
        return start

    def extra_state(self) -> dict:
        # A full run's reference weights are gone once it has stepped: a resumed run reads the cache.
        return {"ref_train": self.ref_train, "ref_valid": self.ref_valid}

    def restore_state(self, state: dict) -> None:
        self.ref_train, self.ref_valid = state.get("ref_train"), state.get("ref_valid")

    def _losses(self, store: TokenStore, ref, indices: list[int]):
        """(DPOOutput, micro-batch) for each micro-batch of the pairs `indices`, as they are computed."""
        for batch in pair_batches(store, indices, self.budget, self.packed, self.pad_id, self.min_prefix):
            self.control.check_cancel()
            batch = batch.to(self.device)
            with self.autocast():
                logps = sequence_logps(self.model, batch)
            r = ref[batch.pairs].to(self.device)
            yield dpo_loss(logps[:, 0], logps[:, 1], r[:, 0], r[:, 1], self.hp.beta), batch.mb

    def _sums(self, store: TokenStore, ref, indices: list[int], train: bool) -> tuple[dict, int, int]:
        """Summed loss and rewards over the pairs `indices` (backpropagating the mean loss when
        `train`), tokens of the examples and tokens computed."""
        sums: dict = {}
        tokens = computed = 0
        for out, mb in self._losses(store, ref, indices):
            if train:  # the loss of a step is the mean over its pairs, however they are split
                (out.losses.sum() / len(indices)).backward()
            for k, v in out.metric_sums().items():
                sums[k] = sums[k] + v if k in sums else v
            tokens, computed = tokens + mb.n_tokens, computed + mb.n_computed
        return {k: float(v) / len(indices) for k, v in sums.items()}, tokens, computed

    def step(self, indices: list[int]) -> tuple[dict, int, int]:
        means, tokens, computed = self._sums(self.train.examples, self.ref_train, indices, train=True)
        self.optimizer_step()
        return {"train_loss": means.pop("loss"), **means}, tokens, computed

    def validate(self, indices: list[int] | None, prefix: str = "valid") -> dict:
        import torch

        indices = list(range(self.count(self.valid))) if indices is None else indices
        self.model.eval()
        with torch.no_grad():
            means, _, _ = self._sums(self.valid.examples, self.ref_valid, indices, train=False)
        self.model.train()
        return {f"{prefix}_{k}": v for k, v in means.items()}
