"""`method: dpo` through the real server, its worker and the current SDK, on the tiny model: the job
echoes its method, trains, reports the preference metrics in events and checkpoints, and its model
answers; a file of the other method's format fails in validating_files naming the line."""

from __future__ import annotations

import json
import math

import openai
import pytest
from api_support import ServerProcess, chat_examples, create_key, jsonl, wait_for_job

from tunery.train.tiny import save_tiny_model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    base = save_tiny_model(root / "tiny")
    env = {"TUNERY_MODEL_ALIASES": json.dumps({"tiny": str(base)}), "TUNERY_WORKER_POLL_S": "0.2", "TUNERY_NUM_THREADS": "1"}
    key = create_key(root / "home", **env)
    process = ServerProcess(root / "home", env=env).start()
    yield openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0), root
    process.stop()


def pairs(n):
    return [{"input": {"messages": [{"role": "user", "content": f"Request {i}: help?"}]},
             "preferred_completion" if i % 2 else "preferred_output": [{"role": "assistant", "content": "Yes, gladly."}],
             "non_preferred_completion" if i % 2 else "non_preferred_output": [{"role": "assistant", "content": "No."}]} for i in range(n)]


def test_a_dpo_job_trains_reports_preference_metrics_and_its_model_answers(server):
    client, root = server
    f = client.files.create(file=("p.jsonl", jsonl(pairs(10))), purpose="fine-tune")  # both key spellings
    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": 5, "n_epochs": 1}}}
    job = client.fine_tuning.jobs.create(model="tiny", training_file=f.id, suffix="pref", method=method)
    assert job.method.type == "dpo"
    assert job.method.dpo.hyperparameters.model_dump() == {"beta": 0.2, "batch_size": 5, "learning_rate_multiplier": "auto", "n_epochs": 1}
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded", job.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = sorted((e.data for e in events if e.type == "metrics"), key=lambda d: d["step"])
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-4)  # the policy starts as its reference
    assert {"rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"} <= set(metrics[-1])
    checkpoint = list(client.fine_tuning.jobs.checkpoints.list(job.id))[0]
    assert checkpoint.metrics.train_loss == pytest.approx(metrics[-1]["train_loss"])
    assert (checkpoint.metrics.model_extra or {}).get("rewards/margins") == pytest.approx(metrics[-1]["rewards/margins"])
    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.usage.completion_tokens == 3


def test_files_of_the_other_methods_format_fail_in_validating_files_naming_the_line(server):
    client, root = server
    prefs = client.files.create(file=("p.jsonl", jsonl(pairs(10))), purpose="fine-tune")
    chats = client.files.create(file=("c.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    supervised = wait_for_job(client, client.fine_tuning.jobs.create(model="tiny", training_file=prefs.id).id, timeout=60)
    assert supervised.status == "failed" and supervised.error.code == "invalid_file_format"
    assert "Line 1: a preference (DPO) example, but method 'supervised'" in supervised.error.message
    dpo = wait_for_job(client, client.fine_tuning.jobs.create(model="tiny", training_file=chats.id, method={"type": "dpo"}).id, timeout=60)
    assert dpo.status == "failed" and dpo.error.code == "invalid_file_format" and dpo.error.param == "training_file"
    assert "Line 1: a chat example, but method 'dpo'" in dpo.error.message


def test_sft_then_dpo_the_reference_is_the_fine_tuned_starting_model(server, tmp_path_factory):
    """OpenAI's recommended workflow: DPO from an `ft:` model. The new adapter sits on that fine-tune
    merged into its base, and the reference is it: step 1's loss is log 2 and its rewards are 0
    (were the reference the original base, the SFT's changes would show up as a log-ratio)."""
    client, root = server
    chats = client.files.create(file=("c.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    sft = {"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 2, "batch_size": 5, "learning_rate_multiplier": 50}}}
    first = wait_for_job(client, client.fine_tuning.jobs.create(model="tiny", training_file=chats.id, suffix="sft", method=sft).id)
    assert first.status == "succeeded", first.error
    prefs = client.files.create(file=("p.jsonl", jsonl(pairs(10))), purpose="fine-tune")
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 10, "n_epochs": 1}}}
    second = wait_for_job(client, client.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=prefs.id, suffix="dpo", method=dpo).id)
    assert second.status == "succeeded", second.error
    assert second.hyperparameters.model_dump()["beta"] == 0.1  # "auto", resolved as the job finished
    step1 = next(e.data for e in client.fine_tuning.jobs.list_events(second.id, limit=100) if e.type == "metrics" and e.data["step"] == 1)
    # To bf16 rounding on CPUs that train in bf16: the reference pass and step 1 lay the pairs out in
    # different rows (file order vs shuffled), so sums run in another order (measured: 2e-4 in a
    # summed log-prob, 2e-5 in a reward; in fp32 it is exact, see test_train_dpo_run).
    assert step1["train_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert step1["rewards/chosen"] == pytest.approx(0, abs=1e-4) and step1["rewards/rejected"] == pytest.approx(0, abs=1e-4)
    # The new adapter sits on the SFT model merged into its base: switched off, that is the reference.
    job_dir = root / "home" / "data" / "jobs" / second.id
    adapter_config = json.loads((job_dir / "out" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(job_dir / "start-model")
    reply = client.chat.completions.create(model=second.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.usage.completion_tokens == 2
