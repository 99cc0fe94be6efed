"""End to end on the packaged SmolLM2-135M-Instruct: the real `tunery train` CLI, a real adapter."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SST = ROOT.parent / "shared" / "data" / "sst5" / "train.csv"
SYSTEM = "Classify the sentiment of the review on a 0-4 scale. Answer with the digit only."


@pytest.fixture(scope="module")
def base():
    from tunery.models.resolve import resolve_model

    return resolve_model("SmolLM2-135M-Instruct")


@pytest.fixture(scope="module")
def sst_file(tmp_path_factory):
    if not SST.exists():
        pytest.skip("shared SST-5 data not present")
    rows = list(csv.DictReader(SST.open()))[:20]
    path = tmp_path_factory.mktemp("sst") / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["text"]}, {"role": "assistant", "content": r["label"]}]}) + "\n" for r in rows))
    return path


def test_smollm2_masks_train_exactly_the_answer_and_im_end(base, sst_file):
    from transformers import AutoTokenizer

    from tunery.train.records import read_records
    from tunery.train.tokenize import Tokenizer

    tok = AutoTokenizer.from_pretrained(str(base.path))
    ex = Tokenizer(tok, 8192, 0.01).encode(read_records(sst_file)[0])
    trained = [j for j, w in enumerate(ex.weights) if j and w > 0]
    assert tok.decode([ex.input_ids[j] for j in trained]) == "3<|im_end|>"
    assert trained == [len(ex) - 3, len(ex) - 2]  # then only the template's trailing "\n"
    assert tok.decode(ex.input_ids[: trained[0]]).endswith("<|im_start|>assistant\n")


def test_cli_trains_smollm2_and_the_adapter_changes_greedy_output(tmp_path, base, sst_file):
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).parent / "tunery"), "train", str(sst_file), "--out", str(out), "--n-epochs", "2",
           "--batch-size", "2", "--max-steps", "4", "--learning-rate-multiplier", "10",
           "--validation-file", str(sst_file), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded" and summary["steps"] == 4 and summary["tokens_per_second"] > 0
    losses = [float(r["train_loss"]) for r in csv.DictReader((out / "metrics.csv").open())]
    assert len(losses) == 4
    # The first step's loss is the untrained model's; after 4 steps the loss over all 20 is lower.
    assert summary["final"]["full_valid_loss"] < losses[0] - 0.3, (losses, summary["final"])

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert Path(adapter_config["base_model_name_or_path"]) == base.path  # resolves on this machine
    tok = AutoTokenizer.from_pretrained(str(out / "adapter"))
    prompt = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "A dull, lifeless and tedious film."}], tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")

    def greedy(model):
        with torch.no_grad():
            return tok.decode(model.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].shape[1]:])

    base_model = AutoModelForCausalLM.from_pretrained(adapter_config["base_model_name_or_path"])
    before = greedy(base_model)
    tuned = PeftModel.from_pretrained(base_model, str(out / "adapter"))
    after = greedy(tuned)
    assert after != before, (before, after)
