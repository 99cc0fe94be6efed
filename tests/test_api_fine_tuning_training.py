"""Real training through the real server: the packaged SmolLM2 model, the real training engine
in its subprocess, driven by the current `openai` SDK. Tiny runs (`max_steps`, a Tunery
hyperparameter) so each takes seconds of training on CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from api_support import TUNERY, ServerProcess, chat_examples, create_key, jsonl, server_env
from peft_reference import peft_greedy

import openai

pytestmark = pytest.mark.slow

FAST = {"TUNERY_WORKER_POLL_S": "0.2", "TUNERY_WORKER_HEARTBEAT_S": "1"}


def hyper(**hp):
    return {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2, **hp}}}


def wait_for(client, job_id, statuses, timeout=240.0, check=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses and (check is None or check(job)):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} is {job.status}, expected {statuses}")


def wait_metrics(client, job_id, n=1, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = [e for e in client.fine_tuning.jobs.list_events(job_id, limit=1000).data if e.type == "metrics"]
        if len(metrics) >= n:
            return metrics
        time.sleep(0.3)
    raise AssertionError(f"job {job_id}: no metrics events within {timeout}s")


def assert_no_server_path(client, job_id, home):
    """Events and the error are shown to the client: nothing of the server's data folder in them."""
    job = client.fine_tuning.jobs.retrieve(job_id)
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    shown = job.model_dump_json() + "".join(e.model_dump_json() for e in events)
    for root in {str(home), str(Path(home).resolve())}:
        assert root not in shown, [e.message for e in events if root in e.model_dump_json()]
    return events


@pytest.fixture
def server(tmp_path):
    key = create_key(tmp_path)
    process = ServerProcess(tmp_path, env=FAST).start()
    client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0)
    yield process, client, key
    process.stop()


def test_a_short_job_succeeds_with_a_usable_model_results_and_checkpoints(server, spec):
    process, client, key = server
    train = client.files.create(file=("train.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    valid = client.files.create(file=("valid.jsonl", jsonl(chat_examples(4))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id, validation_file=valid.id,
                                         suffix="smoke", seed=3, method=hyper(max_steps=3, learning_rate_multiplier=25))
    follow = subprocess.Popen([TUNERY, "jobs", "follow", job.id, "--interval", "0.3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=server_env(process.home, TUNERY_BASE_URL=process.base_url, TUNERY_API_KEY=key))
    job = wait_for(client, job.id, {"succeeded", "failed", "cancelled"})
    followed, progress = follow.communicate(timeout=60)
    assert follow.returncode == 0 and followed.strip() == job.fine_tuned_model  # the CLI followed it live to the end
    assert "Fine-tuning job started" in progress and "loss" in progress
    assert job.status == "succeeded", job.error
    spec.validate("FineTuningJob", job.model_dump(mode="json", exclude_unset=True))
    assert job.fine_tuned_model == f"ft:gpt-4o-mini:default:smoke:{job.id.removeprefix('ftjob-')}"
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at
    assert job.hyperparameters.n_epochs == 1 and job.hyperparameters.batch_size == 2
    assert job.estimated_finish is None

    events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"
    assert f"New fine-tuned model created: {job.fine_tuned_model}" in messages
    metrics = [e for e in events if e.type == "metrics"]
    assert [m.data["step"] for m in metrics][-1] == 1 and metrics[0].data["total_steps"] == 3
    assert {"step", "total_steps", "train_loss", "train_mean_token_accuracy"} <= set(metrics[0].data)
    for e in events:
        spec.validate("FineTuningJobEvent", e.model_dump(mode="json", exclude_unset=True))

    (result_id,) = job.result_files
    result = client.files.retrieve(result_id)
    assert result.purpose == "fine-tune-results" and result.filename == "step_metrics.csv"
    csv = client.files.content(result_id).text.splitlines()
    assert csv[0].startswith("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy")
    assert len(csv) == 4  # header + 3 steps

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoints.data, "the final checkpoint is listed"
    spec.validate("ListFineTuningJobCheckpointsResponse", checkpoints.model_dump(mode="json", exclude_unset=True))
    for c in checkpoints.data:
        spec.validate("FineTuningJobCheckpoint", c.model_dump(mode="json", exclude_unset=True))
        assert c.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{c.step_number}"
        assert c.fine_tuning_job_id == job.id and c.id.startswith("ftckpt_")

    names = [m.id for m in client.models.list()]
    assert job.fine_tuned_model in names
    assert all(c.fine_tuned_model_checkpoint in names for c in checkpoints.data)
    # usable: served through the API, it answers with its trained adapter (peft's own greedy answer), not as the base does
    weights = Path(process.home) / "data" / "jobs" / job.id / "out" / "adapter"
    assert (weights / "adapter_config.json").is_file()
    question = chat_examples(1)[0]["messages"][:2]
    answers = {model: client.chat.completions.create(model=model, messages=question, max_tokens=8, temperature=0).choices[0].message.content
               for model in (job.fine_tuned_model, "gpt-4o-mini")}
    assert answers[job.fine_tuned_model] != answers["gpt-4o-mini"], answers
    assert answers[job.fine_tuned_model] == peft_greedy(weights, None, question, 8)
    # and deleting the model removes the weights
    assert client.models.delete(job.fine_tuned_model).deleted
    assert not weights.exists() and job.fine_tuned_model not in [m.id for m in client.models.list()]


def test_pause_checkpoints_and_resume_finishes(server):
    process, client, _ = server
    train = client.files.create(file=("train.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id, method=hyper(max_steps=5))
    wait_metrics(client, job.id)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    wait_for(client, job.id, {"paused"}, check=lambda j: "Fine-tuning job paused; resume it to continue from its checkpoint." in
             [e.message for e in client.fine_tuning.jobs.list_events(j.id, limit=100).data])
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    job = wait_for(client, job.id, {"succeeded", "failed"})
    assert job.status == "succeeded", job.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert "Fine-tuning job resumed from its last checkpoint" in messages
    # checkpoint, pause, resume and success events name what they wrote, never where on the server
    events = assert_no_server_path(client, job.id, process.home)
    assert "Training succeeded: adapter written" in [e.message for e in events]
    resumed = next(e for e in events if e.message.startswith("Resumed from checkpoint step-"))
    assert resumed.data["path"] == f"checkpoints/step-{resumed.data['step']}"


def test_cancel_a_running_job_stops_its_trainer(server):
    process, client, _ = server
    train = client.files.create(file=("train.jsonl", jsonl(chat_examples(20))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id, method=hyper(max_steps=50))
    wait_metrics(client, job.id)
    pid = int((Path(process.home) / "data" / "jobs" / job.id / "train.pid").read_text())
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"


def test_killing_the_trainer_fails_the_job_and_the_server_stays_up(server):
    process, client, _ = server
    train = client.files.create(file=("train.jsonl", jsonl(chat_examples(20))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id, method=hyper(max_steps=50))
    wait_metrics(client, job.id)
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.estimated_finish >= int(time.time()) - 5  # from the trainer's ETA
    pid = int((Path(process.home) / "data" / "jobs" / job.id / "train.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    job = wait_for(client, job.id, {"failed"}, timeout=30)
    assert job.error.code == "training_process_died"
    assert job.error.message.startswith("The training process was killed by SIGKILL (out of memory, or killed by an operator)")
    assert_no_server_path(client, job.id, process.home)  # nor a line of the trainer's log
    assert "Last output" not in job.error.message
    assert process.alive()
    assert client.fine_tuning.jobs.list().data[0].id == job.id  # still answering


def test_restart_mid_training_loses_nothing_and_resumes(tmp_path):
    key = create_key(tmp_path)
    process = ServerProcess(tmp_path, env=FAST).start()
    client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0)
    try:
        train = client.files.create(file=("train.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id, method=hyper(max_steps=5))
        wait_metrics(client, job.id)
        before = [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
        process.stop(timeout=120)  # SIGTERM: the worker pauses the trainer (checkpoint) and re-queues the job
        process = ServerProcess(tmp_path, env=FAST).start()
        client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0)
        job = wait_for(client, job.id, {"succeeded", "failed"})
        assert job.status == "succeeded", job.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        after = [e.id for e in events]
        assert set(before) <= set(after)  # no event lost
        messages = [e.message for e in events]
        assert "The server is stopping: the job was checkpointed and will resume when a worker starts." in messages
        assert "Fine-tuning job resumed from its last checkpoint" in messages
        assert client.files.retrieve(train.id).status == "processed"  # no file lost
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        assert max(steps) == 5 and min(steps) == 1
    finally:
        process.stop()


def test_a_crashed_server_leaves_no_trainer_behind_and_the_job_resumes(tmp_path):
    key = create_key(tmp_path)
    process = ServerProcess(tmp_path, env=FAST).start()
    client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0)
    try:
        train = client.files.create(file=("train.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id, method=hyper(max_steps=4))
        wait_metrics(client, job.id)
        before = {e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data}
        pid = int((Path(tmp_path) / "data" / "jobs" / job.id / "train.pid").read_text())
        process.proc.kill()  # no shutdown at all: the worker cannot checkpoint or re-queue anything
        process.proc.wait()
        process.stop()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # died with its parent

        process = ServerProcess(tmp_path, env=FAST).start()
        client = openai.OpenAI(base_url=process.base_url, api_key=key, max_retries=0)
        job = wait_for(client, job.id, {"succeeded", "failed"})
        assert job.status == "succeeded", job.error
        events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
        assert before <= {e.id for e in events}
        assert "The worker running this job stopped; the job is queued to resume from its last checkpoint." in [e.message for e in events]
    finally:
        process.stop()
