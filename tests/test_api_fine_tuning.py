"""`/v1/fine_tuning/jobs` through the real server and the current `openai` SDK (no training here:
jobs are cancelled or fail validation; real training runs in test_api_fine_tuning_training.py).
Every object is validated against OpenAI's spec."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from api_support import chat_examples, jsonl


def upload(client, records, name="train.jsonl"):
    return client.files.create(file=(name, jsonl(records)), purpose="fine-tune")


@pytest.fixture
def train_file(openai_client):
    return upload(openai_client, chat_examples(12))


def wait_for(client, job_id, statuses, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stayed {job.status}, expected one of {statuses}")


def check_job(spec, job):
    body = job.model_dump(mode="json", exclude_unset=True)
    if body["status"] == "paused":  # the spec's enum omits `paused`, though its pause example returns it
        body["status"] = "running"
    spec.validate("FineTuningJob", body)


def bad_request(callable_, **kwargs) -> dict:
    with pytest.raises(openai.BadRequestError) as info:
        callable_(**kwargs)
    assert info.value.status_code == 400
    return info.value.body


def test_create_returns_a_validating_job_then_it_queues(openai_client, train_file, spec):
    job = openai_client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=train_file.id,
        suffix="reviews",
        seed=7,
        metadata={"team": "search"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
    )
    check_job(spec, job)
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert (job.model, job.training_file, job.seed, job.metadata) == ("gpt-4o-mini-2024-07-18", train_file.id, 7, {"team": "search"})
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == "auto"
    assert job.method.type == "supervised"
    assert job.fine_tuned_model is None and job.result_files == [] and job.error is None
    cancelled = openai_client.fine_tuning.jobs.cancel(job.id)
    check_job(spec, cancelled)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    events = openai_client.fine_tuning.jobs.list_events(job.id).data
    assert events[-1].message == f"Created fine-tuning job: {job.id}"  # newest first
    assert "Fine-tuning job cancelled." in [e.message for e in events]
    for event in events:
        spec.validate("FineTuningJobEvent", event.model_dump(mode="json", exclude_unset=True))


def test_deprecated_top_level_hyperparameters_are_accepted(openai_client, train_file):
    job = openai_client.fine_tuning.jobs.create(model="gpt-3.5-turbo", training_file=train_file.id,
                                                hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 0.5})
    assert job.method.supervised.hyperparameters.n_epochs == 3
    assert job.hyperparameters.learning_rate_multiplier == 0.5
    assert isinstance(job.seed, int) and 0 <= job.seed <= 2_147_483_647  # generated
    openai_client.fine_tuning.jobs.cancel(job.id)


def test_too_few_examples_fail_with_invalid_n_examples(openai_client, spec):
    small = upload(openai_client, chat_examples(3))
    job = openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=small.id)
    job = wait_for(openai_client, job.id, {"failed"})
    check_job(spec, job)
    assert job.error.code == "invalid_n_examples"
    assert job.error.param == "training_file"
    assert job.error.message == "Training file has 3 example(s), but must have at least 10 examples"
    assert openai_client.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


def test_a_malformed_file_fails_with_invalid_file_format_naming_the_line(openai_client):
    records = chat_examples(11)
    records[4] = {"messages": [{"role": "user", "content": "no answer"}]}
    bad = upload(openai_client, records)
    job = openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=bad.id)
    job = wait_for(openai_client, job.id, {"failed"})
    assert job.error.code == "invalid_file_format" and job.error.param == "training_file"
    assert "Line 5" in job.error.message and bad.id in job.error.message


@pytest.mark.parametrize(
    "kwargs,param,fragment",
    [
        ({"training_file": "file-doesnotexist"}, "training_file", "invalid training_file: file-doesnotexist"),
        ({"validation_file": "file-doesnotexist"}, "validation_file", "invalid validation_file: file-doesnotexist"),
        ({"seed": -1}, "seed", "expected an integer between 0 and 2147483647"),
        ({"seed": 2_147_483_648}, "seed", "expected an integer between 0 and 2147483647"),
        ({"suffix": "x" * 65}, "suffix", "at most 64 characters"),
        ({"suffix": "has:colon"}, "suffix", "only letters, digits"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16 pairs"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "at most 512 characters"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs", "between 1 and 50"),
        ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size", "between 1 and 256"),
        ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier", "greater than 0"),
        ({"hyperparameters": {"n_epochs": "many"}}, "hyperparameters.n_epochs", "expected 'auto' or an integer"),
        ({"hyperparameters": {"n_epochs": 2.5}}, "hyperparameters.n_epochs", "expected 'auto' or an integer"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"warmup": 3}}}},
         "method.supervised.hyperparameters.warmup", "Unknown hyperparameter 'warmup'"),
        ({"method": {"type": "magic"}}, "method.type", "expected one of supervised, dpo, reinforcement"),
        ({"method": {"type": "reinforcement"}}, "method.type", "not supported"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, "method.dpo.hyperparameters.beta", "between 0 and 2"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}}, "method.dpo.hyperparameters.beta", "between 0 and 2"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}},
         "method.supervised.hyperparameters.beta", "Unknown hyperparameter 'beta'"),
    ],
)
def test_bad_parameters_get_400_with_the_param(openai_client, train_file, spec, kwargs, param, fragment):
    args = {"model": "gpt-4o-mini", "training_file": train_file.id, **kwargs}
    body = bad_request(openai_client.fine_tuning.jobs.create, **args)
    spec.validate("ErrorResponse", {"error": body})
    assert body["param"] == param
    assert body["type"] == "invalid_request_error"
    assert fragment in body["message"]


@pytest.mark.parametrize("model", ["no-such-model", "/tmp", "org/name", "ft:gpt-4o-mini:other::nope"])
def test_unknown_model_is_404_model_not_found(openai_client, train_file, spec, model):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.fine_tuning.jobs.create(model=model, training_file=train_file.id)
    spec.validate("ErrorResponse", {"error": info.value.body})
    assert info.value.body == {"message": f"The model `{model}` does not exist or you do not have access to it.",
                               "type": "invalid_request_error", "param": "model", "code": "model_not_found"}


def test_wrong_file_purpose_and_missing_fields(openai_client, api_server):
    batch = openai_client.files.create(file=("b.jsonl", b'{"custom_id": "1"}\n'), purpose="batch")
    body = bad_request(openai_client.fine_tuning.jobs.create, model="gpt-4o-mini", training_file=batch.id)
    assert body["param"] == "training_file" and body["code"] == "invalid_file_purpose"
    r = httpx.post(f"{api_server.base_url}/fine_tuning/jobs", headers=api_server.headers(), json={"model": "gpt-4o-mini"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training_file"
    assert r.json()["error"]["message"] == "Missing required parameter: 'training_file'."


def test_list_pages_newest_first_with_after_limit_and_metadata(openai_client, api_server, train_file, spec):
    tag = f"run-{time.monotonic_ns()}"
    ids = [
        openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train_file.id, metadata={"tag": tag, "i": str(i)}).id
        for i in range(3)
    ]
    for job_id in ids:
        openai_client.fine_tuning.jobs.cancel(job_id)
    page = openai_client.fine_tuning.jobs.list(limit=2, metadata={"tag": tag})
    spec.validate("ListPaginatedFineTuningJobsResponse", page.model_dump(mode="json", exclude_unset=True) | {"object": "list"})
    assert [j.id for j in page.data] == [ids[2], ids[1]] and page.has_more
    rest = openai_client.fine_tuning.jobs.list(limit=2, after=ids[1], metadata={"tag": tag})
    assert [j.id for j in rest.data] == [ids[0]] and not rest.has_more
    assert [j.id for j in openai_client.fine_tuning.jobs.list(metadata={"tag": tag, "i": "1"}).data] == [ids[1]]
    legacy_cursor = httpx.get(f"{api_server.base_url}/fine_tuning/jobs", headers=api_server.headers(),
                              params={"starting_after": ids[1], "limit": 2, "metadata[tag]": tag}).json()  # openai 0.28.1's cursor
    assert [j["id"] for j in legacy_cursor["data"]] == [ids[0]]
    # auto-paging through the SDK walks every page with `after`
    assert [j.id for j in openai_client.fine_tuning.jobs.list(limit=1, metadata={"tag": tag})] == ids[::-1]


def test_events_are_paginated_newest_first(openai_client, train_file):
    job = openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train_file.id)
    openai_client.fine_tuning.jobs.cancel(job.id)
    everything = openai_client.fine_tuning.jobs.list_events(job.id, limit=100).data
    first = openai_client.fine_tuning.jobs.list_events(job.id, limit=1)
    assert first.has_more and first.data[0].id == everything[0].id
    second = openai_client.fine_tuning.jobs.list_events(job.id, limit=100, after=first.data[0].id)
    assert [e.id for e in second.data] == [e.id for e in everything[1:]] and not second.has_more


def test_cancel_pause_resume_refuse_impossible_moves(openai_client, train_file):
    job = openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train_file.id)
    body = bad_request(openai_client.fine_tuning.jobs.resume, fine_tuning_job_id=job.id)
    assert body["code"] == "invalid_job_status" and "cannot be resumed" in body["message"]
    openai_client.fine_tuning.jobs.cancel(job.id)
    body = bad_request(openai_client.fine_tuning.jobs.cancel, fine_tuning_job_id=job.id)
    assert body["message"] == f"Job {job.id} cannot be cancelled: its status is 'cancelled'."
    body = bad_request(openai_client.fine_tuning.jobs.pause, fine_tuning_job_id=job.id)
    assert "cannot be paused" in body["message"]


def test_unknown_and_foreign_jobs_are_404(openai_client, api_server, train_file):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.fine_tuning.jobs.retrieve("ftjob-nope")
    assert info.value.body["message"] == "No such fine-tuning job: ftjob-nope"
    job = openai_client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train_file.id)
    openai_client.fine_tuning.jobs.cancel(job.id)
    other = openai.OpenAI(base_url=api_server.base_url, api_key=api_server.new_key("other-team"), max_retries=0)
    for call in (other.fine_tuning.jobs.retrieve, other.fine_tuning.jobs.cancel, other.fine_tuning.jobs.list_events,
                 other.fine_tuning.jobs.checkpoints.list):
        with pytest.raises(openai.NotFoundError):
            call(job.id)
    assert job.id not in [j.id for j in other.fine_tuning.jobs.list()]
    # and another project's file cannot be trained on
    body = bad_request(other.fine_tuning.jobs.create, model="gpt-4o-mini", training_file=train_file.id)
    assert body["param"] == "training_file"


def test_missing_key_is_401_in_the_envelope(api_server):
    r = httpx.get(f"{api_server.base_url}/fine_tuning/jobs")
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
