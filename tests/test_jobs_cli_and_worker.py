"""`tunery jobs …` against the real server, and `tunery worker` as a separate process sharing the
server's database and data folder."""

from __future__ import annotations

import json
import subprocess
import time

import openai
import pytest
from api_support import TUNERY, ServerProcess, chat_examples, create_key, jsonl, server_env


def tunery(server, *args, check=True):
    env = server_env(server.home, TUNERY_BASE_URL=server.base_url, TUNERY_API_KEY=server.key)
    proc = subprocess.run([TUNERY, "jobs", *args], env=env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"tunery jobs {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def test_cli_create_get_list_events_cancel(api_server, openai_client):
    f = openai_client.files.create(file=("t.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    job = json.loads(tunery(api_server, "create", f.id, "--suffix", "cli", "--n-epochs", "2", "--max-steps", "3",
                            "--metadata", "owner=cli").stdout)
    assert job["id"].startswith("ftjob-") and job["metadata"] == {"owner": "cli"}
    assert job["hyperparameters"]["n_epochs"] == 2 and job["method"]["supervised"]["hyperparameters"]["max_steps"] == 3
    assert json.loads(tunery(api_server, "get", job["id"]).stdout)["id"] == job["id"]
    assert job["id"] in tunery(api_server, "list", "--limit", "100").stdout
    assert tunery(api_server, "cancel", job["id"]).stdout.strip() == f"{job['id']}: cancelled"
    events = tunery(api_server, "events", job["id"]).stdout
    assert f"Created fine-tuning job: {job['id']}" in events.splitlines()[0]
    # following a finished job prints its end and exits 1 with the reason
    follow = tunery(api_server, "follow", job["id"], check=False)
    assert follow.returncode == 1 and "error: job cancelled" in follow.stderr


def test_cli_creates_a_dpo_job(api_server, openai_client):
    pair = {"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}],
            "non_preferred_output": [{"role": "assistant", "content": "b"}]}
    f = openai_client.files.create(file=("p.jsonl", jsonl([pair] * 10)), purpose="fine-tune")
    job = json.loads(tunery(api_server, "create", f.id, "--method", "dpo", "--beta", "0.3", "--max-steps", "1").stdout)
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.3
    assert tunery(api_server, "cancel", job["id"]).stdout.strip() == f"{job['id']}: cancelled"
    plain = json.loads(tunery(api_server, "create", f.id, "--method", "dpo").stdout)  # no hyperparameters: still a dpo job
    assert plain["method"]["type"] == "dpo" and plain["method"]["dpo"]["hyperparameters"]["beta"] == "auto"
    tunery(api_server, "cancel", plain["id"])
    proc = tunery(api_server, "create", f.id, "--beta", "0.3", check=False)
    assert proc.returncode == 1 and "--beta is a dpo hyperparameter" in proc.stderr
    proc = tunery(api_server, "create", f.id, "--method", "rlhf", check=False)
    assert proc.returncode == 1 and "--method must be supervised or dpo" in proc.stderr


def test_cli_errors_are_one_line_with_the_param(api_server):
    proc = tunery(api_server, "create", "file-nope", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: invalid training_file: file-nope (param: training_file) [HTTP 400]"
    proc = tunery(api_server, "create", "file-x", "--n-epochs", "lots", check=False)
    assert proc.returncode == 1 and "--n-epochs must be 'auto' or a number" in proc.stderr
    proc = tunery(api_server, "pause", "ftjob-nope", check=False)
    assert proc.stderr.strip() == "error: No such fine-tuning job: ftjob-nope (param: fine_tuning_job_id) [HTTP 404]"


@pytest.mark.slow
def test_a_separate_worker_process_runs_the_servers_jobs(tmp_path):
    key = create_key(tmp_path)
    server = ServerProcess(tmp_path, args=("--no-worker",)).start()
    worker = None
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        f = client.files.create(file=("t.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f.id,
                                             method={"type": "supervised", "supervised": {"hyperparameters": {"max_steps": 2}}})
        time.sleep(2)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "validating_files"  # nobody works here
        log = open(tmp_path / "worker.log", "wb")
        worker = subprocess.Popen([TUNERY, "worker"], env=server_env(tmp_path, TUNERY_WORKER_POLL_S="0.2"), stdout=log,
                                  stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and client.fine_tuning.jobs.retrieve(job.id).status in ("validating_files", "queued"):
            time.sleep(0.3)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
        assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        deadline = time.monotonic() + 60
        messages: list[str] = []
        while time.monotonic() < deadline:
            messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
            if "The training process stopped after the cancellation." in messages:
                break
            time.sleep(0.3)
        assert "The training process stopped after the cancellation." in messages
        assert "Files validated, moving job to queued state" in messages
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        server.stop()
