"""The served path is the real path: a job trained by the real worker on the packaged SmolLM2,
then served through /v1/chat/completions and /v1/completions. Its greedy answer differs from the
base model's and equals what the trained adapter produces when loaded directly with peft; an
earlier checkpoint answers with its own weights, not the base's nor the final model's."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import torch

from api_support import ServerProcess, create_key, jsonl
from peft_reference import first_logprobs, peft_greedy

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


def job_out(home: Path, job) -> Path:
    """The job's output folder, where the worker's trainer writes `adapter/` and `checkpoints/step-N/`."""
    return home / "data" / "jobs" / job.id / "out"


def test_chat_fine_tune_differs_from_base_and_matches_peft(trained):
    client, jobs, home = trained
    messages = [{"role": "user", "content": QUESTION}]
    name = jobs["chat"].fine_tuned_model
    tuned = client.chat.completions.create(model=name, messages=messages, max_tokens=16, temperature=0).choices[0].message.content
    base = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=16, temperature=0).choices[0].message.content
    assert tuned != base
    assert "PINEAPPLE" in tuned
    final = job_out(home, jobs["chat"]) / "adapter"
    assert tuned == peft_greedy(final, None, messages, 16)


def test_a_checkpoint_answers_with_its_own_weights(trained):
    """An earlier checkpoint is served from its own adapter: its greedy answer is peft's with that
    checkpoint, and its log-probabilities are the checkpoint's, not the base's nor the final model's."""
    client, jobs, home = trained
    messages = [{"role": "user", "content": QUESTION}]
    ckpts = sorted(client.fine_tuning.jobs.checkpoints.list(jobs["chat"].id).data, key=lambda c: c.step_number)
    assert len(ckpts) >= 2, [c.step_number for c in ckpts]
    early = ckpts[0]
    folder = job_out(home, jobs["chat"]) / "checkpoints" / f"step-{early.step_number}"
    r = client.chat.completions.create(model=early.fine_tuned_model_checkpoint, messages=messages, max_tokens=16, temperature=0,
                                       logprobs=True, top_logprobs=5)
    assert r.choices[0].message.content == peft_greedy(folder, None, messages, 16)
    # the first token's five best log-probabilities, against each candidate's weights
    served = torch.tensor([t.logprob for t in r.choices[0].logprobs.content[0].top_logprobs])
    gap = {name: float((served - first_logprobs(weights, messages, adapter).topk(5).values).abs().max())
           for name, weights, adapter in (("own", folder, True), ("base", folder, False), ("final", job_out(home, jobs["chat"]) / "adapter", True))}
    assert gap["own"] < 0.1 and gap["base"] > 0.5 and gap["final"] > 0.5, gap


def test_legacy_fine_tune_answers_after_its_separator(trained):
    client, jobs, home = trained
    name = jobs["legacy"].fine_tuned_model
    prompt = "Review: great product\n\n###\n\n"
    r = client.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0, stop=[" END"])
    assert r.choices[0].text == " positive"
    assert r.choices[0].finish_reason == "stop"
    base = client.completions.create(model="babbage-002", prompt=prompt, max_tokens=6, temperature=0, stop=[" END"]).choices[0].text
    assert base != r.choices[0].text
    direct = peft_greedy(job_out(home, jobs["legacy"]) / "adapter", prompt, None, 6)
    assert direct.startswith(" positive END")
