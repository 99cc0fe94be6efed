"""Pre-packed oneDNN linears (`tunery.serve.prepack`): bf16 on the CPU, bit-identical answers."""

from __future__ import annotations

import pytest
import torch

import tunery.serve.prepack as prepack_module
from serve_fixtures import random_lora, save_base, tiny_llama, tiny_tokenizer
from tunery.serve.prepack import keeps_packing, packable, packed_bytes, prepack, unpack
from tunery.serve.registry import _param_bytes

pytestmark = pytest.mark.skipif(not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")),
                                reason="this torch build has no oneDNN linear")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def bf16_llama(tok, tied=False):
    model = tiny_llama(tok).to(torch.bfloat16)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def batch(tok):
    ids = torch.randint(3, len(tok), (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # a left-padded row, as the engine's batches have
    return ids, mask


def logits(model, ids, mask):
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask).logits


def test_packed_model_gives_bit_identical_logits_and_frees_the_dense_weights(tok):
    plain, packed = bf16_llama(tok), bf16_llama(tok)
    before = _param_bytes(packed)
    n = prepack(packed)
    linears = [m for m in packed.modules() if type(m) is torch.nn.Linear]
    assert n == len(linears) == 2 * 7 + 1  # q k v o gate up down per layer, and the LM head
    assert all(m.weight.numel() == 0 for m in linears)  # no second copy in memory
    assert _param_bytes(packed) == before  # the cache budget still sees the weights
    assert packed_bytes(packed) == sum(m.in_features * m.out_features * 2 for m in linears)
    ids, mask = batch(tok)
    assert torch.equal(logits(packed, ids, mask), logits(plain, ids, mask))


def test_a_tied_lm_head_keeps_the_embedding_weight(tok):
    plain, packed = bf16_llama(tok, tied=True), bf16_llama(tok, tied=True)
    prepack(packed)
    assert packed.model.embed_tokens.weight.shape == plain.model.embed_tokens.weight.shape
    assert hasattr(packed.lm_head, "_tunery_packed")
    ids, mask = batch(tok)
    assert torch.equal(logits(packed, ids, mask), logits(plain, ids, mask))


def test_fp32_models_are_left_alone(tok):
    model = tiny_llama(tok)
    assert not packable(model)
    assert prepack(model) == 0
    assert model.lm_head.weight.numel() > 0 and "forward" not in model.lm_head.__dict__


def test_another_dtype_or_autograd_falls_back_to_the_dense_weight(tok):
    plain, packed = bf16_llama(tok), bf16_llama(tok)
    prepack(packed)
    x = torch.randn(2, 64)
    dense = plain.model.layers[0].mlp.up_proj.weight.float()
    assert torch.equal(packed.model.layers[0].mlp.up_proj(x), torch.nn.functional.linear(x, dense))
    y = packed.model.layers[0].mlp.up_proj(x.to(torch.bfloat16).requires_grad_())
    assert y.requires_grad  # the packed op has no backward: autograd gets the dense path


def test_a_module_whose_packed_product_differs_stays_plain(tok, monkeypatch):
    """The load-time probe: on a CPU where F.linear runs another kernel, nothing is packed."""
    monkeypatch.setattr(prepack_module, "_onednn_linear", lambda x, pack, bias: torch.zeros(x.shape[0], pack.shape[0], dtype=x.dtype))
    model = bf16_llama(tok)
    assert prepack(model) == 0
    assert model.lm_head.weight.numel() > 0


def test_unpack_restores_the_dense_weights(tok):
    plain, model = bf16_llama(tok), bf16_llama(tok)
    prepack(model)
    assert unpack(model) == 15
    for a, b in zip(plain.modules(), model.modules()):
        if type(a) is torch.nn.Linear:
            assert torch.equal(a.weight, b.weight) and "forward" not in b.__dict__
    ids, mask = batch(tok)
    assert torch.equal(logits(model, ids, mask), logits(plain, ids, mask))


def test_adapters_load_on_a_packed_base_and_answer_as_on_the_plain_one(tok, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = save_base(tmp_path / "base")
    adapter = random_lora(base, tmp_path / "lora", seed=3)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), str(adapter)).eval()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).eval()
    prepack(model)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    ids, mask = batch(tok)
    assert torch.equal(logits(model, ids, mask), logits(plain, ids, mask))


@pytest.mark.parametrize("config, keeps", [
    ({"peft_type": "LORA", "r": 8, "use_dora": False, "modules_to_save": None, "init_lora_weights": True}, True),
    ({"peft_type": "LORA", "init_lora_weights": "gaussian", "use_rslora": True}, True),
    ({"peft_type": "LORA", "use_dora": True}, False),
    ({"peft_type": "LORA", "modules_to_save": ["lm_head"]}, False),
    ({"peft_type": "LORA", "init_lora_weights": "pissa"}, False),
    ({"peft_type": "LORA", "layer_replication": [[0, 2]]}, False),
    ({"peft_type": "IA3"}, False),
])
def test_only_plain_lora_adapters_keep_the_base_packed(config, keeps):
    assert keeps_packing(config) is keeps


def test_an_adapter_that_copies_base_modules_unpacks_the_served_base_and_answers_as_peft(tok, tmp_path, monkeypatch):
    """`modules_to_save` copies base modules when it loads (DoRA reads their weights): the registry
    gives the dense weights back first, so the copies are plain modules holding the saved weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunery.serve.registry import ModelRegistry, ModelSource
    from tunery.serve.sampling import SamplingParams

    monkeypatch.setenv("TUNERY_SERVE_DTYPE", "bfloat16")
    base = save_base(tmp_path / "base")
    plain_lora = random_lora(base, tmp_path / "lora", seed=1)
    saved = random_lora(base, tmp_path / "saved", seed=2, modules_to_save=["lm_head"])
    prompt = tok("1 2 3 4 5 stars ->")["input_ids"]
    reg = ModelRegistry(budget_bytes=10**9)
    try:
        served = reg.get(ModelSource("base", "base", base))
        q_proj = served.engine.model.model.layers[0].self_attn.q_proj
        assert hasattr(q_proj, "_tunery_packed")
        def check(entry, folder):
            ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), str(folder)).eval()
            want = ref.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
            got = entry.engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.0), tok, entry.adapter)
            assert [t.token_id for t in got.tokens] == want

        check(reg.get(ModelSource("ft:a", "adapter", plain_lora, base_path=base)), plain_lora)
        assert hasattr(q_proj, "_tunery_packed")  # plain LoRA: still packed
        d = reg.get(ModelSource("ft:d", "adapter", saved, base_path=base))
        assert not hasattr(q_proj, "_tunery_packed") and q_proj.weight.numel() > 0
        check(d, saved)
    finally:
        reg.close()
