"""Packing keeps examples independent; micro-batching does not change the step's loss."""

import pytest
import torch

from tunery.train.modeling import micro_batch_loss
from tunery.train.packing import MIN_SHARED_PREFIX, epoch_order, micro_batches, shared_prefix, step_indices
from tunery.train.records import Record
from tunery.train.tiny import tiny_llama, tiny_tokenizer
from tunery.train.tokenize import Example, Tokenizer


@pytest.fixture(scope="module")
def examples():
    tok = Tokenizer(tiny_tokenizer(), 512, 0.01)
    recs = [Record(i, "chat", {"messages": [{"role": "user", "content": "q" * (3 * i)}, {"role": "assistant", "content": "ab" * (i + 1)}]}) for i in range(1, 7)]
    return [tok.encode(r) for r in recs]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=1).eval()


def reference_loss(model, examples):
    """Each example alone through the plain HF forward pass: sum of weighted token losses."""
    total = torch.zeros(())
    for ex in examples:
        ids = torch.tensor([ex.input_ids])
        logits = model(input_ids=ids).logits[0, :-1].float()
        losses = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        total = total + (losses * torch.tensor(ex.weights[1:])).sum()
    return total


def batch_loss(model, examples, budget, packed, min_prefix=MIN_SHARED_PREFIX):
    mbs = micro_batches(examples, budget, packed, pad_id=0, min_prefix=min_prefix)
    return sum(micro_batch_loss(model, mb)[0] for mb in mbs), mbs


def test_packed_rows_hold_several_examples_with_restarting_positions(examples):
    (mb,) = micro_batches(examples, 10_000, packed=True, pad_id=0, min_prefix=0)  # no prefix sharing
    assert mb.input_ids.shape == (1, sum(len(e) for e in examples)) and mb.attention_mask is None
    starts = (mb.position_ids[0] == 0).nonzero().flatten().tolist()
    assert len(starts) == len(examples) and mb.n_tokens == mb.input_ids.numel()
    assert mb.weight == sum(e.trained_tokens for e in examples)


def test_packed_loss_equals_the_examples_run_one_by_one(model, examples):
    with torch.no_grad():
        expected = reference_loss(model, examples)
        packed, mbs = batch_loss(model, examples, 10_000, packed=True, min_prefix=0)
        shared, _ = batch_loss(model, examples, 10_000, packed=True)  # SmolLM2's default system prompt is shared
        padded, _ = batch_loss(model, examples, 10_000, packed=False)
    assert len(mbs) == 1
    assert packed.item() == pytest.approx(expected.item(), rel=1e-5)
    assert shared.item() == pytest.approx(expected.item(), rel=1e-5)
    assert padded.item() == pytest.approx(expected.item(), rel=1e-5)


def test_packed_gradients_equal_unpacked_gradients(model, examples):
    def grads(fn):
        model.zero_grad()
        fn().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_ref = grads(lambda: reference_loss(model, examples))
    g_packed = grads(lambda: batch_loss(model, examples, 10_000, packed=True, min_prefix=0)[0])
    assert torch.allclose(g_packed, g_ref, rtol=1e-4, atol=1e-6)


def test_micro_batch_split_does_not_change_the_loss(model, examples):
    with torch.no_grad():
        whole, one = batch_loss(model, examples, 10_000, packed=True)
        split, many = batch_loss(model, examples, 80, packed=True)
        padded_split, rows = batch_loss(model, examples, 200, packed=False)
    assert len(one) == 1 and len(many) > 2 and len(rows) > 1
    assert all(mb.n_tokens <= 80 or mb.input_ids.shape[1] > 80 for mb in many)  # only a lone long example exceeds it
    assert split.item() == pytest.approx(whole.item(), rel=1e-5)
    assert padded_split.item() == pytest.approx(whole.item(), rel=1e-5)


def test_data_order_is_a_pure_function_of_seed_and_epoch():
    assert epoch_order(10, 42, 0) == epoch_order(10, 42, 0)
    assert sorted(epoch_order(10, 42, 1)) == list(range(10))
    assert epoch_order(10, 42, 0) != epoch_order(10, 42, 1) != epoch_order(10, 7, 1)
    seen = [i for s in range(4) for i in step_indices(10, 3, 42, s, 4)[1]]
    assert sorted(seen) == list(range(10))  # 3+3+3+1: every example once per epoch
    assert step_indices(10, 3, 42, 4, 4) == (1, epoch_order(10, 42, 1)[:3])


def test_without_shuffle_every_epoch_follows_the_file():
    assert epoch_order(10, 42, 0, shuffle=False) == epoch_order(10, 7, 3, shuffle=False) == list(range(10))
    assert [step_indices(10, 3, 42, s, 4, shuffle=False) for s in (0, 3, 4)] == [(0, [0, 1, 2]), (0, [9]), (1, [0, 1, 2])]


@pytest.fixture(scope="module")
def system_examples():
    """Chats that all start with the same system prompt: the case shared-prefix rows are for."""
    tok = Tokenizer(tiny_tokenizer(), 512, 0.01)
    system = "Rate the review from 0 to 4. Answer with the digit only."
    recs = [Record(i, "chat", {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "good " * i},
                                           {"role": "assistant", "content": str(i % 5)}, {"role": "user", "content": "why?"},
                                           {"role": "assistant", "content": "x" * i}]}) for i in range(1, 6)]
    return [tok.encode(r) for r in recs]


def test_shared_prefix_stops_before_the_first_trained_token(system_examples):
    prefix = shared_prefix(system_examples)
    assert prefix >= MIN_SHARED_PREFIX
    for ex in system_examples:
        first_trained = next(j for j, w in enumerate(ex.weights) if j >= 1 and w > 0)
        assert ex.input_ids[:prefix] == system_examples[0].input_ids[:prefix] and prefix <= first_trained - 1
    assert shared_prefix(system_examples[:1]) == 0  # nothing to share with
    trained_first = [Example([5, 6, 7, 8], [0.0, 1.0, 1.0, 1.0]), Example([5, 6, 7, 9], [0.0, 1.0, 1.0, 1.0])]
    assert shared_prefix(trained_first) == 0  # the label of token 1 sits at position 0: nothing can be shared


def test_shared_prefix_row_holds_the_prefix_once(system_examples):
    prefix = shared_prefix(system_examples)
    (mb,) = micro_batches(system_examples, 10_000, packed=True, pad_id=0)
    total = sum(len(e) for e in system_examples)
    assert mb.n_tokens == total and mb.n_computed == total - prefix * (len(system_examples) - 1) == mb.input_ids.shape[1]
    assert mb.attention_mask.shape == (1, 1, mb.n_computed, mb.n_computed) and mb.attention_mask.dtype == torch.bool
    assert mb.weight == sum(e.trained_tokens for e in system_examples)
    # the last example's tokens see the prefix and themselves, nothing of the other examples
    last = mb.attention_mask[0, 0, -1]
    assert last[:prefix].all() and not last[prefix : mb.n_computed - (len(system_examples[-1]) - prefix)].any()
    (plain,) = micro_batches(system_examples, 10_000, packed=True, pad_id=0, min_prefix=0)
    assert plain.attention_mask is None and plain.n_computed == total


def test_shared_prefix_loss_and_gradients_equal_each_example_alone(model, system_examples):
    with torch.no_grad():
        expected = reference_loss(model, system_examples)
        shared, mbs = batch_loss(model, system_examples, 10_000, packed=True)
    assert mbs[0].attention_mask is not None
    assert shared.item() == pytest.approx(expected.item(), rel=1e-5)

    def grads(fn):
        model.zero_grad()
        fn().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    g_ref = grads(lambda: reference_loss(model, system_examples))
    g_shared = grads(lambda: batch_loss(model, system_examples, 10_000, packed=True)[0])
    assert torch.allclose(g_shared, g_ref, rtol=1e-4, atol=1e-6)


def test_shared_prefix_loss_under_a_small_token_budget(model, system_examples):
    with torch.no_grad():
        whole, _ = batch_loss(model, system_examples, 10_000, packed=True)
        split, many = batch_loss(model, system_examples, 150, packed=True)
    assert len(many) > 1
    assert split.item() == pytest.approx(whole.item(), rel=1e-5)
