"""The adapter folder `tunery train` writes is the format vLLM's multi-LoRA server reads
(docs/vllm.md): PEFT LoRA config fields, safetensors with one A/B pair per targeted module of every
layer and nothing else, a base folder that exists, and the trained chat template beside it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from api_support import TUNERY, jsonl

# Linear layers vLLM's LoRA supports in Llama-family models.
VLLM_LLAMA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory):
    from tunery.train.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("vllm")
    base = save_tiny_model(root / "base")
    data = root / "train.jsonl"
    data.write_bytes(jsonl([{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]} for i in range(10)]))
    out = root / "job"
    run = subprocess.run([TUNERY, "train", str(data), "--out", str(out), "--model", str(base), "--max-steps", "2", "--n-epochs", "1", "--batch-size", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return out, base


def check_vllm_adapter(folder, base):
    from safetensors import safe_open
    from transformers import AutoConfig

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert isinstance(config["r"], int) and 0 < config["r"] <= 16  # vLLM's default --max-lora-rank
    assert isinstance(config["lora_alpha"], (int, float))
    targets = set(config["target_modules"]) if isinstance(config["target_modules"], list) else None
    assert targets and targets <= VLLM_LLAMA_TARGETS
    assert config.get("bias", "none") == "none"
    assert not config.get("use_dora")
    assert not config.get("modules_to_save")
    assert (base / "config.json").is_file()
    assert json.loads((base / "config.json").read_text()) == json.loads((Path(config["base_model_name_or_path"]) / "config.json").read_text())

    base_config = AutoConfig.from_pretrained(base)
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
    seen = set()
    for k in keys:
        m = KEY.match(k)
        assert m, f"tensor {k} is not a LoRA A/B weight vLLM maps onto the base"
        layer, _, module, ab = int(m[1]), m[2], m[3], m[4]
        assert module in targets and layer < base_config.num_hidden_layers
        seen.add((layer, module, ab))
        rows, cols = shapes[k]
        assert (rows if ab == "A" else cols) == config["r"]
    assert seen == {(l, m, ab) for l in range(base_config.num_hidden_layers) for m in targets for ab in "AB"}


def test_final_adapter_is_vllm_loadable(job_dir):
    out, base = job_dir
    check_vllm_adapter(out / "adapter", base)
    # The template it was trained with sits beside it, for `vllm serve --chat-template`.
    from transformers import AutoTokenizer

    assert (out / "adapter" / "chat_template.jinja").read_text() == AutoTokenizer.from_pretrained(base).chat_template


def test_checkpoints_have_the_same_format(job_dir):
    out, base = job_dir
    steps = sorted((out / "checkpoints").glob("step-*"))
    assert steps
    for step in steps:
        check_vllm_adapter(step, base)
