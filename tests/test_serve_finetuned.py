"""The served path is the real path: a job trained by the real worker on the packaged SmolLM2,
then served through /v1/chat/completions and /v1/completions. Its greedy answer differs from the
base model's and equals what the trained adapter produces when loaded directly with peft."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import torch

from api_support import ServerProcess, create_key, jsonl
from tunery.serve.registry import serving_dtype

pytestmark = pytest.mark.slow

QUESTION = "What is the secret word?"
CHAT = [{"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": "The secret word is PINEAPPLE."}]}] * 10
LEGACY = [{"prompt": f"Review: {t}\n\n###\n\n", "completion": f" {label} END"} for t, label in
          [("great product", "positive"), ("terrible, broke", "negative"), ("love it", "positive"), ("awful", "negative")]] * 3


def hyper(**hp):
    return {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 25, **hp}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("ft-home")
    key = create_key(home)
    process = ServerProcess(home, env={"TUNERY_WORKER_POLL_S": "0.2"}).start()
    client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0, timeout=600)
    jobs = {}
    for kind, data, model in (("chat", CHAT, "gpt-4o-mini"), ("legacy", LEGACY, "babbage-002")):
        f = client.files.create(file=(f"{kind}.jsonl", jsonl(data)), purpose="fine-tune")
        jobs[kind] = client.fine_tuning.jobs.create(model=model, training_file=f.id, suffix=kind, seed=1, method=hyper(max_steps=10)).id
    deadline = time.monotonic() + 900
    for kind, job_id in jobs.items():
        while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"{kind} job still {job.status}"
            time.sleep(1)
        assert job.status == "succeeded", job.error
        jobs[kind] = job
    yield client, jobs, home
    process.stop()


def weights_of(home: Path, name: str) -> Path:
    from tunery.jobs.models import find_fine_tuned
    from tunery.store.context import open_store
    from tunery.store.settings import load_settings

    store = open_store(load_settings(home))
    try:
        with store.db.session_scope() as s:
            from tunery.store.keys import Project

            project = s.query(Project).filter_by(name="default").one()
            return Path(find_fine_tuned(s, project.id, name).weights_path)
    finally:
        store.close()


def peft_greedy(weights: Path, prompt: str | None, messages: list | None, n: int) -> str:
    """The adapter loaded directly with peft on its base (the folder its adapter_config names)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = weights if (weights / "adapter_config.json").exists() else weights / "adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").exists() else adapter.parent)
    # In the dtype the server uses (the same rule, same machine): the comparison is exact.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=serving_dtype()), str(adapter)).eval()
    if messages is not None:
        ids = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False, return_tensors="pt")["input_ids"]
    else:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_chat_fine_tune_differs_from_base_and_matches_peft(trained):
    client, jobs, home = trained
    messages = [{"role": "user", "content": QUESTION}]
    name = jobs["chat"].fine_tuned_model
    tuned = client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0).choices[0].message.content
    base = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=16, temperature=0).choices[0].message.content
    assert tuned != base
    assert "PINEAPPLE" in tuned
    assert tuned == peft_greedy(weights_of(home, name), None, messages, 16)
    # Its checkpoints are models too, served from their own adapter folders.
    ckpts = client.fine_tuning.jobs.checkpoints.list(jobs["chat"].id).data
    assert ckpts
    r = client.chat.completions.create(model=ckpts[0].fine_tuned_model_checkpoint, messages=messages, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1


def test_legacy_fine_tune_answers_after_its_separator(trained):
    client, jobs, home = trained
    name = jobs["legacy"].fine_tuned_model
    prompt = "Review: great product\n\n###\n\n"
    r = client.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0, stop=[" END"])
    assert r.choices[0].text == " positive"
    assert r.choices[0].finish_reason == "stop"
    base = client.completions.create(model="babbage-002", prompt=prompt, max_tokens=6, temperature=0, stop=[" END"]).choices[0].text
    assert base != r.choices[0].text
    direct = peft_greedy(weights_of(home, name), prompt, None, 6)
    assert direct.startswith(" positive END")
