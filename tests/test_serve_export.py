"""`tunery export MODEL --merged DIR`: the merged folder loads with transformers alone and
answers as base + adapter does."""

from __future__ import annotations

import subprocess

import torch

from api_support import TUNERY, create_key, server_env
from serve_fixtures import random_lora, save_base
from serve_server import register_fine_tune


def greedy(model, tok, n=10):
    ids = tok("the quick brown fox", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)[0].tolist()


def test_export_merges_a_fine_tune_of_the_home(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_base(tmp_path / "base")
    adapter = random_lora(base, tmp_path / "job" / "adapter", seed=3)
    home = tmp_path / "home"
    key = create_key(home)
    name = "ft:tiny:default:exp:ftjob-exp"
    register_fine_tune(home, key, name, adapter)
    out = tmp_path / "merged"
    run = subprocess.run([TUNERY, "export", name, "--merged", str(out)], env=server_env(home), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors")) and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == AutoTokenizer.from_pretrained(adapter).chat_template
    direct = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    assert greedy(merged, tok) == greedy(direct, tok)
    assert greedy(merged, tok) != greedy(AutoModelForCausalLM.from_pretrained(base).eval(), tok)

    again = subprocess.run([TUNERY, "export", name, "--merged", str(out)], env=server_env(home), capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and again.stderr.strip() == f"error: {out} exists and is not empty; choose a new folder"
    missing = subprocess.run([TUNERY, "export", "ft:none:x:y:z", "--merged", str(tmp_path / "m2")], env=server_env(home), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "no fine-tuned model 'ft:none:x:y:z' in project 'default'" in missing.stderr
