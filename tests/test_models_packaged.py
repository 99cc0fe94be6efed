"""The packaged SmolLM2 GGUF: converted once (over a crashed conversion's debris) into a plain,
lossless safetensors folder. Slow: one conversion and one direct GGUF load (~30 s each on CPU)."""

import json
import os
import subprocess
import sys

import pytest

from tunery.models.convert import MARKER
from tunery.models.loading import load_model, load_tokenizer
from tunery.models.packaged import PACKAGED_GGUF, packaged_gguf
from tunery.models.resolve import resolve_model

pytestmark = pytest.mark.slow
NAME = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh cache holding what a crash mid-conversion leaves, then one real conversion."""
    root = tmp_path_factory.mktemp("tunery-cache")
    models = root / "models"
    crashed = models / ".tmp" / NAME / "crashed"
    crashed.mkdir(parents=True)
    (crashed / "model.safetensors").write_bytes(b"half a file")
    (models / NAME).mkdir()
    (models / NAME / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 1}')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNERY_CACHE", str(root))
        patch.delenv("TUNERY_MODEL_ALIASES", raising=False)
        messages = []
        resolved = resolve_model(on_convert=messages.append)
    return root, resolved, messages


@pytest.fixture
def use_cache(cache, monkeypatch):
    monkeypatch.setenv("TUNERY_CACHE", str(cache[0]))
    monkeypatch.delenv("TUNERY_MODEL_ALIASES", raising=False)
    return cache


@pytest.fixture(scope="module")
def gguf_model():
    """The model and tokenizer loaded straight from the GGUF, as the reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval(), tokenizer


def test_default_converts_over_crash_debris(use_cache):
    root, resolved, messages = use_cache
    folder = root / "models" / NAME
    assert (resolved.name, resolved.path, resolved.source, resolved.context_length) == (NAME, folder, "packaged", 8192)
    assert len(messages) == 1 and messages[0].startswith(f"Converting {PACKAGED_GGUF} to safetensors")
    assert sorted(p.name for p in (root / "models").iterdir()) == [f".{NAME}.lock", ".tmp", NAME]
    assert list((root / "models" / ".tmp" / NAME).iterdir()) == []  # debris and the partial folder removed
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", MARKER} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and "_model_name_or_path" not in config
    assert (config["dtype"], config["max_position_embeddings"]) == ("float32", 8192)


@pytest.mark.parametrize("spec", [None, "", "default", NAME, f"HuggingFaceTB/{NAME}", "gpt-4o-mini-2024-07-18", "curie"])
def test_every_default_spec_reuses_the_conversion(use_cache, spec):
    root, converted, _ = use_cache
    stamp = (converted.path / MARKER).stat().st_mtime_ns
    resolved = resolve_model(spec, on_convert=pytest.fail)
    assert (resolved.name, resolved.path, resolved.source) == (NAME, converted.path, "packaged")
    assert (converted.path / MARKER).stat().st_mtime_ns == stamp


def test_gguf_path_of_packaged_file_reuses_the_cache(use_cache):
    converted = use_cache[1]
    resolved = resolve_model(str(packaged_gguf()), on_convert=pytest.fail)
    assert (resolved.name, resolved.path, resolved.source, resolved.context_length) == (NAME, converted.path, "gguf", 8192)


def test_plain_reload_keeps_chat_template_and_eos(use_cache, gguf_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = use_cache[1].path
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    reference_tokenizer = gguf_model[1]
    assert tokenizer.chat_template == reference_tokenizer.chat_template
    assert "<|im_start|>" in tokenizer.chat_template
    assert (tokenizer.eos_token, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) == ("<|im_end|>", 2, 2)
    assert len(tokenizer) == len(reference_tokenizer) == 49152
    assert GenerationConfig.from_pretrained(path).eos_token_id == 2
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer(text)["input_ids"] == reference_tokenizer(text)["input_ids"]


def test_conversion_is_lossless(use_cache, gguf_model):
    """Every tensor is bit-identical, and greedy decoding produces the same tokens."""
    import torch

    resolved = use_cache[1]
    reference, reference_tokenizer = gguf_model
    model = load_model(resolved, dtype="float32")
    tokenizer = load_tokenizer(resolved)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        a = model.generate(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        b = reference.generate(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=reference_tokenizer.pad_token_id)
    assert a.shape[1] > inputs["input_ids"].shape[1]
    assert a.tolist() == b.tolist()


def test_cli_default_prints_the_cached_folder(use_cache):
    env = {**os.environ, "TUNERY_CACHE": str(use_cache[0])}
    done = subprocess.run([sys.executable, "-m", "tunery.models"], capture_output=True, text=True, env=env, timeout=120)
    assert (done.returncode, done.stdout) == (0, f"{use_cache[1].path}\n")
    assert f"{NAME} (packaged, context 8192)" in done.stderr
