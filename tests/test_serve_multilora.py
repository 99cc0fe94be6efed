"""The batched multi-LoRA step equals peft's own per-adapter output, row by row."""

from __future__ import annotations

import pytest
import torch

from tunery.serve.multilora import MultiLoRA


def _tiny_peft(configs: dict):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=101)
    model = None
    for name, kw in configs.items():
        lora = LoraConfig(lora_dropout=0.0, **kw)
        model = get_peft_model(LlamaForCausalLM(cfg), lora, adapter_name=name) if model is None else (model.add_adapter(name, lora) or model)
    with torch.no_grad():  # peft initialises B to zero: make every adapter change the output
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return model.eval()


CONFIGS = {
    "ada": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    "bea": dict(r=8, lora_alpha=4, target_modules=["q_proj", "o_proj", "down_proj"]),
    "cy": dict(r=2, lora_alpha=2, target_modules=["k_proj", "up_proj"]),
}


def _alone(model, ids, adapter):
    """peft's output for one row with only its adapter active (or none)."""
    if adapter is None:
        with model.disable_adapter():
            return model(input_ids=ids).logits
    model.set_adapter(adapter)
    return model(input_ids=ids).logits


@pytest.mark.parametrize("tokens", [7, 1])  # a prompt (each adapter over its own rows) and a decoding step (masked)
def test_mixed_batch_equals_each_adapter_alone(tokens):
    model = _tiny_peft(CONFIGS)
    ids = torch.randint(0, 101, (5, tokens))
    rows = ["bea", None, "ada", "cy", "ada"]
    lora = MultiLoRA()
    with torch.inference_mode():
        assert lora.sync(model)
        with lora.rows(rows, ids.device):
            batched = model(input_ids=ids).logits
        expected = torch.cat([_alone(model, ids[i : i + 1], a) for i, a in enumerate(rows)])
        peft_mixed = model(input_ids=ids, adapter_names=[a or "__base__" for a in rows]).logits
    torch.testing.assert_close(batched, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batched, peft_mixed, rtol=1e-4, atol=1e-4)
    # the adapters really differ from the base and from each other, so the check above has teeth
    assert (expected[0] - expected[1]).abs().max() > 1e-2 and (expected[2] - expected[3]).abs().max() > 1e-2


def test_all_base_rows_and_outside_the_block_is_peft():
    model = _tiny_peft(CONFIGS)
    ids = torch.randint(0, 101, (2, 5))
    lora = MultiLoRA()
    with torch.inference_mode():
        lora.sync(model)
        with lora.rows([None, None], ids.device):
            base_rows = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        model.set_adapter("ada")
        after = model(input_ids=ids).logits  # the override is off outside `rows`: peft's active adapter applies
        alone_a = torch.cat([_alone(model, ids[i : i + 1], "ada") for i in range(2)])
    torch.testing.assert_close(base_rows, base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, alone_a, rtol=1e-5, atol=1e-5)


def test_stacks_follow_loaded_and_deleted_adapters():
    model = _tiny_peft({"ada": CONFIGS["ada"], "bea": CONFIGS["bea"]})
    lora = MultiLoRA()
    assert lora.sync(model) and lora._slots == {"ada": 1, "bea": 2}
    model.delete_adapter("ada")
    assert lora.sync(model) and lora._slots == {"bea": 1}
    ids = torch.randint(0, 101, (2, 4))
    with torch.inference_mode():
        with lora.rows(["bea", None], ids.device):
            batched = model(input_ids=ids).logits
        expected = torch.cat([_alone(model, ids[:1], "bea"), _alone(model, ids[1:], None)])
    torch.testing.assert_close(batched, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(KeyError):
        with lora.rows(["ada"], ids.device):
            pass


def test_unsupported_adapters_fall_back_to_peft():
    model = _tiny_peft({"dora": dict(r=4, target_modules=["q_proj"], use_dora=True)})
    assert MultiLoRA().sync(model) is False
    model = _tiny_peft({"mts": dict(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"])})
    assert MultiLoRA().sync(model) is False


@pytest.mark.parametrize("configs", [CONFIGS, {"dora": dict(r=4, target_modules=["q_proj"], use_dora=True),
                                                "dorb": dict(r=2, target_modules=["v_proj"], use_dora=True)}])
def test_engine_scoring_applies_one_adapter_to_every_row(configs):
    """Teacher-forced scoring (eval losses) sees the same weights as generation: the batched step
    where it applies, peft's active adapter (restored afterwards) where it does not."""
    from tunery.serve.engine import Engine

    model = _tiny_peft(configs)
    ids = torch.randint(0, 101, (3, 7))
    adapters = [*configs, None]
    with torch.no_grad():
        expected = [_alone(model, ids, a) for a in adapters]
    model.set_adapter(adapters[0])
    engine = Engine(model, stop_token_ids=set())
    try:
        for adapter, want in zip(adapters, expected):
            got = engine.score(adapter, lambda m: m(input_ids=ids).logits)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            assert model.active_adapter == adapters[0]  # peft's active adapter is restored
    finally:
        engine.close()


def test_siblings_share_their_down_projection_only_for_the_same_input():
    """q/k/v take one matmul for their down-projections when called with the same tensor; a sibling
    called with another input (any architecture that reuses the names) still gets its own delta."""
    model = _tiny_peft(CONFIGS)
    lora = MultiLoRA()
    assert lora.sync(model)
    attn = model.base_model.model.model.layers[0].self_attn
    stacks = lora._all.stacks
    group = stacks[id(attn.q_proj)].group
    assert group is not None and stacks[id(attn.k_proj)].group is group and stacks[id(attn.v_proj)].group is group
    x, other = torch.randn(3, 2, 64), torch.randn(3, 2, 64)
    rows = ["ada", "cy", None]
    names = [a or "__base__" for a in rows]
    with torch.inference_mode():
        with lora.rows(rows, x.device):
            got = [attn.q_proj(x), attn.k_proj(x), attn.k_proj(other), attn.v_proj(other), attn.v_proj(x)]
        want = [attn.q_proj(x, adapter_names=names), attn.k_proj(x, adapter_names=names),
                attn.k_proj(other, adapter_names=names), attn.v_proj(other, adapter_names=names), attn.v_proj(x, adapter_names=names)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    assert (want[1] - want[2]).abs().max() > 1e-2  # the two inputs really give different answers
    assert group.x is None  # leaving the block drops the held input


def test_a_step_reads_only_the_adapters_its_rows_use():
    """With four adapters loaded, a batch of one or two of them runs on stacks with just their
    columns (kept while the set holds), one of three on all of them; answers are peft's either way."""
    model = _tiny_peft({**CONFIGS, "dee": dict(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj"])})
    lora = MultiLoRA()
    assert lora.sync(model)
    q = model.base_model.model.model.layers[0].self_attn.q_proj  # ada r=4, bea r=8, dee r=4: 8 columns per slot
    ids = torch.randint(0, 101, (3, 6))
    with torch.inference_mode():
        for rows, columns in ((["bea", None, "bea"], 8), (["ada", "cy", "ada"], 16), (["cy", None, "dee"], 16), (["ada", "bea", "cy"], 32)):
            with lora.rows(rows, ids.device):
                assert lora._layout.stacks[id(q)].A.shape[1] == columns
                batched = model(input_ids=ids).logits
            expected = model(input_ids=ids, adapter_names=[a or "__base__" for a in rows]).logits
            torch.testing.assert_close(batched, expected, rtol=1e-4, atol=1e-4)
        with lora.rows(["ada", None], ids.device):
            first = lora._layout
        with lora.rows([None, "ada"], ids.device):
            assert lora._layout is first  # the same subset: the copy is reused
        with lora.rows(["ada", "bea", "cy"], ids.device):
            assert lora._layout is lora._all  # most of the loaded adapters: no copy
