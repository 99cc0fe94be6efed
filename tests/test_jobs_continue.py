"""A job whose `model` is a fine-tuned model of the project continues training it (OpenAI allows
fine-tuning a fine-tune), through the real server and its worker on the tiny model; the job's
model must be the project's: the worker resolves the name again when it runs the job."""

from __future__ import annotations

import json

import openai
import pytest
from api_support import ServerProcess, chat_examples, create_key, jsonl, wait_for_job

from tunery.train.tiny import save_tiny_model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("continue")
    base = save_tiny_model(root / "tiny")
    env = {"TUNERY_MODEL_ALIASES": json.dumps({"tiny": str(base)}), "TUNERY_WORKER_POLL_S": "0.2"}
    key = create_key(root / "home", **env)
    process = ServerProcess(root / "home", env=env).start()
    yield process, key, root
    process.stop()


def test_a_fine_tune_of_a_fine_tune(server):
    process, key, root = server
    client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0)
    f = client.files.create(file=("t.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    steps = {"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 2, "batch_size": 2}}}
    first = wait_for_job(client, client.fine_tuning.jobs.create(model="tiny", training_file=f.id, suffix="one", method=steps).id)
    assert first.status == "succeeded", first.error
    second = client.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=f.id, suffix="two", method=steps)
    assert second.model == first.fine_tuned_model
    second = wait_for_job(client, second.id)
    assert second.status == "succeeded", second.error
    # The new name keeps the original base, as OpenAI names a fine-tune of a fine-tune.
    assert second.fine_tuned_model == f"ft:tiny:default:two:{second.id.removeprefix('ftjob-')}"
    # It was trained from the first fine-tune merged into its base, and it answers.
    start = root / "home" / "data" / "jobs" / second.id / "start-model"
    assert (start / "config.json").is_file()
    adapter_config = next((root / "home" / "data" / "jobs" / second.id / "out").glob("adapter/adapter_config.json"))
    assert json.loads(adapter_config.read_text())["base_model_name_or_path"] == str(start)
    reply = client.chat.completions.create(model=second.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.usage.completion_tokens == 3 and reply.model == second.fine_tuned_model


def test_a_model_unregistered_before_the_job_runs_fails_the_job_cleanly(server):
    from tunery.models.registered import save_registered

    process, key, root = server
    client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0)
    f = client.files.create(file=("t.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    models_file = root / "home" / "models.json"
    save_registered(models_file, {"team": str(root / "tiny")})
    job = client.fine_tuning.jobs.create(model="team", training_file=f.id)
    save_registered(models_file, {})  # the operator removes it while the job waits
    job = wait_for_job(client, job.id, timeout=120)
    assert job.status == "failed"
    assert (job.error.code, job.error.param) == ("model_not_found", "model")
    assert job.error.message == "The model `team` does not exist or you do not have access to it."
