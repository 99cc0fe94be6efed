"""DPO: preference records -> scored tokens, the sigmoid loss, the cached reference, on the tiny
byte-level model (1 byte = 1 token), checked against the tokenizer's own chat template and against
a plain full-forward computation of the same formula."""

from __future__ import annotations

import math

import pytest
import torch

from tunery.train.dpo import (
    PreferenceTokenizer,
    dpo_loss,
    n_pairs,
    pair,
    pair_batches,
    prompt_length,
    reference_logps,
    sequence_logps,
)
from tunery.train.errors import TrainError
from tunery.train.records import CHAT, PREFERENCE, Record
from tunery.train.tiny import tiny_llama, tiny_tokenizer

torch.set_num_threads(1)  # tiny tensors; the machine is shared

USER = {"role": "user", "content": "Capital of France?"}
RECORD = {"input": {"messages": [USER]}, "preferred_output": [{"role": "assistant", "content": "Paris."}],
          "non_preferred_output": [{"role": "assistant", "content": "It is Lyon, I think."}]}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def scored(ex):
    return [ex.input_ids[j] for j, w in enumerate(ex.weights) if j > 0 and w > 0]


def encode(tok, record, max_length=4096, line=1):
    return PreferenceTokenizer(tok, max_length, 0.0).encode_pair(Record(line, PREFERENCE, record))


# -- tokens -----------------------------------------------------------------------------------


def test_the_pair_shares_the_templates_prompt_and_scores_only_each_output_and_its_end_of_turn(tok):
    chosen, rejected = encode(tok, RECORD)
    prompt = tok(tok.apply_chat_template([USER], tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    n = prompt_length(chosen, rejected)
    assert n == len(prompt)
    assert chosen.input_ids[:n] == rejected.input_ids[:n] == prompt
    assert tok.decode(scored(chosen)) == "Paris.<|im_end|>"
    assert tok.decode(scored(rejected)) == "It is Lyon, I think.<|im_end|>"
    # The scored tokens are exactly those after the prompt up to the end-of-turn token, no more.
    assert [j for j, w in enumerate(chosen.weights) if w > 0] == list(range(n, n + len("Paris.") + 1))
    # What follows is the template's own full rendering of the chosen conversation.
    full = tok.apply_chat_template([USER, RECORD["preferred_output"][0]], tokenize=False)
    assert chosen.input_ids == tok(full, add_special_tokens=False)["input_ids"]


def test_the_older_key_names_give_the_same_tokens(tok):
    old = {"input": RECORD["input"], "preferred_completion": RECORD["preferred_output"], "non_preferred_completion": RECORD["non_preferred_output"]}
    assert encode(tok, old) == encode(tok, RECORD)


def test_assistant_turns_of_a_multi_turn_input_are_context_only(tok):
    record = {**RECORD, "input": {"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "weight": 1}, USER]}}
    chosen, rejected = encode(tok, record)
    assert tok.decode(scored(chosen)) == "Paris.<|im_end|>"
    assert tok.decode(scored(rejected)) == "It is Lyon, I think.<|im_end|>"
    assert "Hello!" in tok.decode(chosen.input_ids[: prompt_length(chosen, rejected)])


def test_truncation_cuts_from_the_end_and_is_counted_and_a_pair_with_an_output_gone_is_dropped(tok, tmp_path):
    chosen, rejected = encode(tok, RECORD)
    n = prompt_length(chosen, rejected)
    # Room for the prompt and 3 output tokens: both outputs cut to their first 3 tokens.
    cut_c, cut_r = encode(tok, RECORD, max_length=n + 3)
    assert cut_c.truncated and cut_r.truncated
    assert cut_c.input_ids == chosen.input_ids[: n + 3] and tok.decode(scored(cut_c)) == "Par"
    assert tok.decode(scored(cut_r)) == "It "
    # Through a file: one pair fits, one is cut, one has no output token left (dropped).
    short = {**RECORD, "preferred_output": [{"role": "assistant", "content": "P"}], "non_preferred_output": [{"role": "assistant", "content": "L"}]}
    long_prompt = {**RECORD, "input": {"messages": [{"role": "user", "content": "x" * 200}]}}
    records = [Record(1, PREFERENCE, short), Record(2, PREFERENCE, RECORD), Record(3, PREFERENCE, long_prompt)]
    result = PreferenceTokenizer(tok, n + 3, 0.0).encode_all(records, folder=tmp_path)
    try:
        assert n_pairs(result.examples) == 2 and len(result.examples) == 4
        assert result.truncated == 2 and result.dropped == [3]
        assert [tok.decode(scored(ex)) for ex in pair(result.examples, 1)] == ["Par", "It "]
        assert result.trained_tokens == 2 + 2 + 3 + 3  # "P"/"L" + end-of-turn, then 3 + 3
    finally:
        result.examples.close()


def test_a_file_whose_pairs_all_lose_an_output_fails_clearly(tok, tmp_path):
    with pytest.raises(TrainError) as err:
        PreferenceTokenizer(tok, 10, 0.0).encode_all([Record(1, PREFERENCE, RECORD)], folder=tmp_path)
    assert err.value.code == "all_examples_too_long"


def test_a_chat_record_in_a_dpo_run_names_its_line(tok):
    with pytest.raises(TrainError) as err:
        PreferenceTokenizer(tok, 4096, 0.0).encode_pair(Record(7, CHAT, {"messages": [USER]}))
    assert err.value.code == "invalid_training_file" and "line 7" in err.value.message and "chat" in err.value.message


# -- loss -------------------------------------------------------------------------------------


def test_the_loss_and_rewards_by_hand():
    out = dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]), torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0]), beta=0.1)
    # pair 0: chosen 0.1*(0.5)=0.05, rejected 0.1*(-0.5)=-0.05 -> margin 0.1
    # pair 1: chosen 0.1*(-1)=-0.1, rejected 0.1*(1)=0.1 -> margin -0.2
    assert out.chosen_rewards.tolist() == pytest.approx([0.05, -0.1])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.05, 0.1])
    assert out.losses.tolist() == pytest.approx([math.log1p(math.exp(-0.1)), math.log1p(math.exp(0.2))])
    sums = {k: float(v) for k, v in out.metric_sums().items()}
    assert sums == pytest.approx({"loss": math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.2)), "rewards/chosen": -0.05,
                                  "rewards/rejected": 0.05, "rewards/accuracies": 1.0, "rewards/margins": -0.1})
    # Equal policy and reference: log 2 whatever beta.
    same = dpo_loss(torch.tensor([-4.0]), torch.tensor([-9.0]), torch.tensor([-4.0]), torch.tensor([-9.0]), beta=1.7)
    assert float(same.losses) == pytest.approx(math.log(2)) and float(same.chosen_rewards) == 0.0


PAIRS = [
    RECORD,
    {"input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]},
     "preferred_output": [{"role": "assistant", "content": "4"}], "non_preferred_output": [{"role": "assistant", "content": "Four, of course!"}]},
    {"input": {"messages": [{"role": "user", "content": "Say hi"}]},
     "preferred_output": [{"role": "assistant", "content": "hi"}], "non_preferred_output": [{"role": "assistant", "content": "no"}]},
]


@pytest.fixture(scope="module")
def store(tok, tmp_path_factory):
    records = [Record(i + 1, PREFERENCE, r) for i, r in enumerate(PAIRS)]
    result = PreferenceTokenizer(tok, 4096, 0.0).encode_all(records, folder=tmp_path_factory.mktemp("tokens"))
    yield result.examples
    result.examples.close()


def plain_logps(model, ex):
    """Summed log-probability of the scored tokens, one sequence alone, a full forward."""
    ids = torch.tensor([ex.input_ids])
    logps = torch.log_softmax(model(input_ids=ids).logits.float()[0], -1)
    return sum(logps[j - 1, ex.input_ids[j]] for j, w in enumerate(ex.weights) if j > 0 and w > 0)


def all_logps(model, store, packed=True, min_prefix=16, budget=10_000):
    out = torch.zeros(n_pairs(store), 2)
    for batch in pair_batches(store, list(range(n_pairs(store))), budget, packed, 0, min_prefix):
        out[batch.pairs] = sequence_logps(model, batch)
    return out


@pytest.mark.parametrize("packed, min_prefix, budget", [(True, 16, 10_000), (True, 60, 10_000), (True, 0, 10_000), (False, 0, 10_000), (True, 16, 1)])
def test_sequence_logps_equal_a_plain_forward_packed_shared_prefix_padded_or_one_pair_a_batch(store, packed, min_prefix, budget):
    model = tiny_llama(seed=1).eval()
    with torch.no_grad():
        expected = torch.tensor([[plain_logps(model, ex) for ex in pair(store, i)] for i in range(n_pairs(store))])
        got = all_logps(model, store, packed, min_prefix, budget)
    if packed and min_prefix:  # each pair's prompt is run once for both outputs, several pairs a row or not
        batches = list(pair_batches(store, list(range(n_pairs(store))), budget, packed, 0, min_prefix))
        # (all of the prompt but its last token, which must sit in each output's own remainder:
        # it predicts the output's first token)
        # A prompt under min_prefix is not shared (min_prefix 60: the "Be brief." pair's).
        shared = [prompt_length(*pair(store, i)) - 1 for i in range(n_pairs(store))]
        saved = sum(n for n in shared if n >= min_prefix)
        assert (min_prefix == 60) == (min(shared) < min_prefix)
        assert sum(b.mb.n_tokens - b.mb.n_computed for b in batches) == saved
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)


def test_loss_and_gradient_of_a_batch_equal_the_formula_on_a_plain_forward(store):
    policy = tiny_llama(seed=1)
    ref = tiny_llama(seed=2).eval()
    with torch.no_grad():
        ref_logps = torch.tensor([[plain_logps(ref, ex) for ex in pair(store, i)] for i in range(n_pairs(store))])
    beta = 0.5
    # Plain: one sequence at a time, mean over pairs of -logsigmoid(beta * (dc - dr)).
    plain = torch.stack([
        -torch.nn.functional.logsigmoid(beta * ((plain_logps(policy, c) - ref_logps[i, 0]) - (plain_logps(policy, r) - ref_logps[i, 1])))
        for i, (c, r) in ((i, pair(store, i)) for i in range(n_pairs(store)))
    ]).mean()
    plain.backward()
    expected_grads = {n: p.grad.clone() for n, p in policy.named_parameters()}
    policy.zero_grad()
    # Ours: packed micro-batches of whole pairs (budget forces two micro-batches), loss summed / pairs.
    total = torch.zeros(())
    for batch in pair_batches(store, list(range(n_pairs(store))), 120, True, 0):
        logps = sequence_logps(policy, batch)
        ref_b = ref_logps[batch.pairs]
        out = dpo_loss(logps[:, 0], logps[:, 1], ref_b[:, 0], ref_b[:, 1], beta)
        (out.losses.sum() / n_pairs(store)).backward()
        total += out.losses.detach().sum()
    assert float(total) / n_pairs(store) == pytest.approx(float(plain.detach()), abs=1e-5)
    for n, p in policy.named_parameters():
        assert torch.allclose(p.grad, expected_grads[n], atol=1e-5), n


def test_pair_batches_keep_pairs_whole_and_in_budget(store):
    sizes = [store.lengths[2 * i] + store.lengths[2 * i + 1] for i in range(n_pairs(store))]
    batches = list(pair_batches(store, [2, 0, 1], sizes[2] + sizes[0], True, 0))
    assert [b.pairs for b in batches] == [[2, 0], [1]]
    assert [b.counts for b in batches][1] == [ex.trained_tokens for ex in pair(store, 1)]


# -- the reference ----------------------------------------------------------------------------


def lora(model, seed=None):
    """A LoRA over `model`; with `seed`, B set non-zero so that the adapter changes the outputs."""
    from tunery.train.modeling import add_lora

    peft = add_lora(model, 4, 8, 0.0, ["q_proj", "v_proj", "down_proj"])
    if seed is not None:
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    return peft


def test_with_lora_the_reference_is_the_base_with_the_adapter_off_and_the_cache_equals_a_fresh_pass(store):
    base = tiny_llama(seed=3).eval()
    with torch.no_grad():
        bare = all_logps(base, store)
    model = lora(base, seed=4)
    cached = reference_logps(model, store, 10_000, True, 0)
    assert model.training  # left as it was found (trainers call it in train mode)
    assert torch.allclose(cached, bare, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(all_logps(model.eval(), store), bare, atol=1e-2)  # the adapter is on again
        # Recomputed later, split differently: the same numbers.
        assert torch.allclose(reference_logps(model, store, 1, True, 0), cached, atol=1e-5)


def test_at_step_zero_a_new_adapter_gives_loss_log_2_and_zero_rewards(store):
    model = lora(tiny_llama(seed=5))
    ref = reference_logps(model, store, 10_000, True, 0)
    with torch.no_grad():
        logps = all_logps(model, store)
    out = dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], 0.1)
    assert out.losses.tolist() == pytest.approx([math.log(2)] * n_pairs(store), abs=1e-6)
    assert out.chosen_rewards.abs().max() < 1e-6 and out.rejected_rewards.abs().max() < 1e-6


def test_from_a_fine_tuned_model_the_reference_is_that_model_exactly(store, tmp_path):
    """An `ft:` LoRA model starts a job as its adapter merged into its base (the job runner's
    start-model): the new adapter sits on it, and the reference is it, not the original base."""
    from tunery.train.modeling import load_model

    base = tiny_llama(seed=6)
    merged = lora(base, seed=7).merge_and_unload().eval()
    merged.save_pretrained(tmp_path / "start-model")
    with torch.no_grad():
        expected = all_logps(merged, store)
        original = all_logps(tiny_llama(seed=6).eval(), store)
    assert not torch.allclose(expected, original, atol=1e-2)  # the fine-tune did change the model
    model = lora(load_model(tmp_path / "start-model", torch.device("cpu"), "fp32", "lora"))
    model.train()
    ref = reference_logps(model, store, 10_000, True, 0)
    assert torch.allclose(ref, expected, atol=1e-5)
    with torch.no_grad():
        logps = all_logps(model, store)
    out = dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], 0.1)
    assert out.losses.tolist() == pytest.approx([math.log(2)] * n_pairs(store), abs=1e-6)
