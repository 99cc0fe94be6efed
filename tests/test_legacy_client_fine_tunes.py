"""The seeds' openai==0.28.1 calls, unchanged, against the real server (own venv: .venv-legacy)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from api_support import chat_examples, jsonl

SNIPPET = """
import json, sys
f = openai.File.create(file=open({path!r}, "rb"), purpose="fine-tune")
ft = openai.FineTune.create(training_file=f.id, model="curie", suffix="legacy-seed")
listed = openai.FineTune.list()
got = openai.FineTune.retrieve(id=ft.id)
cancelled = openai.FineTune.cancel(id=ft.id)
streamed = [dict(e) for e in openai.FineTune.stream_events(ft.id)]
job = openai.FineTuningJob.create(training_file=f.id, model="gpt-3.5-turbo")
openai.FineTuningJob.cancel(job.id)
jobs = openai.FineTuningJob.list(limit=1)
try:
    openai.FineTune.create(training_file="file-nope")
    err = None
except openai.error.InvalidRequestError as e:
    err = {{"status": e.http_status, "param": e.param, "message": str(e)}}
print(json.dumps({{"file": f, "ft": ft, "listed": listed, "got": got, "cancelled": cancelled, "streamed": streamed,
                  "job": job, "jobs": jobs, "err": err}}))
"""


def test_seed_legacy_calls_run_unchanged(legacy, spec, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_bytes(jsonl([{"prompt": f"Review {i} ->", "completion": " positive\n"} for i in range(12)]))
    out = json.loads(legacy.run(SNIPPET.format(path=str(data))))

    ft = out["ft"]
    spec.validate_legacy("FineTune", ft)
    assert ft["id"].startswith("ft-") and ft["object"] == "fine-tune" and ft["model"] == "curie"
    assert ft["hyperparams"] == {"batch_size": None, "learning_rate_multiplier": None, "n_epochs": 4, "prompt_loss_weight": 0.01}
    assert ft["training_files"][0]["id"] == out["file"]["id"]  # a whole File object (0.28.1 names uploads "file")
    assert ft["training_files"][0]["filename"] == "file" and ft["status"] == "pending"
    assert ft["events"][0]["object"] == "fine-tune-event"

    assert ft["id"] in [f["id"] for f in out["listed"]["data"]]
    for item in out["listed"]["data"]:
        spec.validate_legacy("FineTune", item)
    assert out["got"]["id"] == ft["id"]
    assert out["cancelled"]["status"] == "cancelled"
    spec.validate_legacy("FineTune", out["cancelled"])

    streamed = out["streamed"]
    assert streamed[0]["message"] == f"Created fine-tuning job: {ft['id']}"
    assert streamed[-1]["message"] in ("Fine-tuning job cancelled.", "The training process stopped after the cancellation.")
    for event in streamed:
        spec.validate_legacy("FineTuneEvent", event)

    assert out["job"]["object"] == "fine_tuning.job" and out["job"]["model"] == "gpt-3.5-turbo"
    assert out["jobs"]["data"][0]["id"] == out["job"]["id"]
    assert out["err"]["status"] == 400 and out["err"]["param"] == "training_file"


def test_event_stream_is_sse_ending_in_done(api_server, openai_client):
    f = openai_client.files.create(file=("t.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    r = httpx.post(f"{api_server.base_url}/fine-tunes", headers=api_server.headers(), json={"training_file": f.id, "n_epochs": 1})
    ft = r.json()
    httpx.post(f"{api_server.base_url}/fine-tunes/{ft['id']}/cancel", headers=api_server.headers())
    with httpx.stream("GET", f"{api_server.base_url}/fine-tunes/{ft['id']}/events", params={"stream": "true"},
                      headers=api_server.headers(), timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[0][6:])["message"] == f"Created fine-tuning job: {ft['id']}"
    plain = httpx.get(f"{api_server.base_url}/fine-tunes/{ft['id']}/events", headers=api_server.headers()).json()
    assert plain["object"] == "list" and len(plain["data"]) == len(lines) - 1


def test_legacy_bad_parameters_and_unknown_ids(api_server, openai_client):
    f = openai_client.files.create(file=("t.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    url, headers = f"{api_server.base_url}/fine-tunes", api_server.headers()
    for body, param in (({"n_epochs": 0}, "n_epochs"), ({"prompt_loss_weight": 2}, "prompt_loss_weight"),
                        ({"suffix": "x" * 41}, "suffix"), ({"model": ""}, "model"), ({"batch_size": "big"}, "batch_size")):
        r = httpx.post(url, headers=headers, json={"training_file": f.id, **body})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.json())
    r = httpx.post(url, headers=headers, json={"training_file": f.id, "model": "no-such-model"})
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["param"]) == (404, "model_not_found", "model")
    r = httpx.get(f"{url}/ft-nope", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["message"] == "No such fine-tune job: ft-nope"
    mine = httpx.post(url, headers=headers, json={"training_file": f.id}).json()["id"]
    httpx.post(f"{url}/{mine}/cancel", headers=headers)
    other = api_server.headers(api_server.new_key("legacy-other"))
    for method, path in (("GET", f"{url}/{mine}"), ("POST", f"{url}/{mine}/cancel"), ("GET", f"{url}/{mine}/events")):
        assert httpx.request(method, path, headers=other).status_code == 404
    assert mine not in [j["id"] for j in httpx.get(url, headers=other).json()["data"]]
    assert httpx.get(f"{api_server.base_url}/fine_tuning/jobs/{mine}", headers=headers).status_code == 404  # not a current-API job


TRAIN_SNIPPET = """
import json
import re
f = openai.File.create(file=open({path!r}, "rb"), purpose="fine-tune")
ft = openai.FineTune.create(training_file=f.id, model="curie", suffix="seed", n_epochs=1, batch_size=2, max_steps=2)
streamed = [e.message for e in openai.FineTune.stream_events(ft.id)]
done = openai.FineTune.retrieve(id=ft.id)
print(json.dumps({{"streamed": streamed, "done": done}}))
"""


@pytest.mark.slow
def test_a_legacy_fine_tune_trains_to_a_legacy_model_name(legacy, spec, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_bytes(jsonl([{"prompt": f"Review {i}: loved it ->", "completion": " positive\n"} for i in range(10)]))
    out = json.loads(legacy.run(TRAIN_SNIPPET.format(path=str(data)), timeout=900))
    done = out["done"]
    spec.validate_legacy("FineTune", done)
    assert done["status"] == "succeeded", done["events"][-3:]
    assert re.fullmatch(r"curie:ft-default:seed-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}", done["fine_tuned_model"])
    assert done["hyperparams"]["n_epochs"] == 1 and done["hyperparams"]["batch_size"] == 2
    (result,) = done["result_files"]  # a whole File object
    assert result["purpose"] == "fine-tune-results" and result["filename"] == "compiled_results.csv"
    assert out["streamed"][0].startswith("Created fine-tuning job: ft-")
    assert out["streamed"][-1] == "The job has successfully completed"
    assert any(m.startswith("Step 2/2: training loss=") for m in out["streamed"])
