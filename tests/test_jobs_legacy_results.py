"""The legacy result file `compiled_results.csv` (legacy columns, elapsed counts, classification
metrics) — pure pieces in milliseconds, the compile step on real files, and real legacy jobs
trained through the server (slow)."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import httpx
import pytest
from api_support import jsonl

from tunery.jobs.legacy_results import LEGACY_COLUMNS, compile_results, elapsed_counts, legacy_csv, read_metrics
from tunery.train.events import EventLog

HEADER = ("step,elapsed_tokens,elapsed_examples,training_loss,training_sequence_accuracy,training_token_accuracy,"
          "validation_loss,validation_sequence_accuracy,validation_token_accuracy")
METRICS = ("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
           "1,2.500000,0.100000,,\n2,1.250000,0.400000,1.500000,0.300000\n")


def rows_of(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


# -- pure pieces --------------------------------------------------------------------------------


def test_legacy_csv_maps_the_trainer_columns_and_leaves_sequence_accuracy_empty(tmp_path):
    (tmp_path / "metrics.csv").write_text(METRICS)
    data = legacy_csv(read_metrics(tmp_path / "metrics.csv"), [(30, 4), (55, 8)])
    assert data.decode() == (f"{HEADER}\n"
                             "1,30,4,2.500000,,0.100000,,,\n"
                             "2,55,8,1.250000,,0.400000,1.500000,,0.300000\n")


def test_classification_columns_go_on_the_last_row_only():
    data = legacy_csv(read_metrics_text(METRICS), [(30, 4), (55, 8)],
                      {"classification/accuracy": 0.75, "classification/weighted_f1_score": 0.5})
    lines = data.decode().splitlines()
    assert lines[0] == HEADER + ",classification/accuracy,classification/weighted_f1_score"
    assert lines[1].endswith(",,") and lines[2].endswith(",0.750000,0.500000")


def test_without_elapsed_counts_or_metrics_the_columns_stay_empty(tmp_path):
    assert legacy_csv(read_metrics_text(METRICS)).decode().splitlines()[1] == "1,,,2.500000,,0.100000,,,"
    assert read_metrics(tmp_path / "missing.csv") == []
    assert legacy_csv([]).decode() == HEADER + "\n"


def read_metrics_text(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_elapsed_counts_follow_the_trainers_steps_across_epochs():
    from tunery.train.packing import step_indices

    lengths = [10, 20, 30, 40, 50]  # 5 examples, batch 2: steps of 2, 2, 1 examples per epoch
    counts = elapsed_counts(lengths, batch_size=2, seed=7, steps=4)
    assert [e for _, e in counts] == [2, 4, 5, 7]
    first_epoch = sum(lengths)
    assert counts[2][0] == first_epoch  # one epoch: every example once
    _, step4 = step_indices(5, 2, 7, 3, 3)
    assert counts[3][0] == first_epoch + sum(lengths[i] for i in step4)


# -- the compile step on real files (the packaged model's tokenizer; no weights loaded) ---------


def _finished_run(tmp_path, valid: bool = True):
    """A training output folder as the trainer leaves it, minus the weights."""
    out = tmp_path / "out"
    out.mkdir()
    train_file, valid_file = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train_file.write_bytes(jsonl([{"prompt": f"Review {i}: {'good ' * i}->", "completion": f" {i % 5}"} for i in range(6)]))
    valid_file.write_bytes(jsonl([{"prompt": f"Review {i} ->", "completion": f" {i % 5}"} for i in range(5)]))
    (out / "metrics.csv").write_text(METRICS)
    (out / "result.json").write_text(json.dumps({"output_path": str(out / "adapter"),  # no weights there
                                                 "hyperparameters": {"batch_size": 4, "seed": 3, "max_length": 2048}}))
    train = {"training_file": str(train_file), "out_dir": str(out), "model": "curie", "seed": 3,
             **({"validation_file": str(valid_file)} if valid else {})}
    (tmp_path / "config.json").write_text(json.dumps(train))
    return {"train_config": str(tmp_path / "config.json"), "out_dir": str(out), "results_dir": str(tmp_path / "results"),
            "classification": {"compute_classification_metrics": True, "classification_n_classes": 5}}


def _compile(config):
    from pathlib import Path

    results = Path(config["results_dir"])
    results.mkdir()
    events = EventLog(results / "events.jsonl")
    try:
        summary = compile_results(config, events)
    finally:
        events.close()
    recorded = [json.loads(line) for line in (results / "events.jsonl").read_text().splitlines()]
    return summary, rows_of((results / "compiled_results.csv").read_bytes()), recorded


def test_a_classification_failure_is_a_warning_and_the_file_has_the_training_columns(tmp_path):
    from tunery.train import modeling
    from tunery.train.tokenize import Tokenizer
    from tunery.train.records import read_records

    config = _finished_run(tmp_path)
    summary, rows, events = _compile(config)
    assert summary["classification"] is None
    (warning,) = events
    assert warning["level"] == "warn" and warning["message"].startswith("Classification metrics could not be computed: ")
    assert "no adapter or model weights there" in warning["message"]
    assert warning["message"].endswith("The fine-tuned model is unaffected; the result file has no classification columns.")
    assert list(rows[0]) == LEGACY_COLUMNS
    # elapsed counts: the trainer's own tokenization and order (batch 4 of 6 examples: 4, then 2)
    tok = Tokenizer(modeling.load_tokenizer(modeling.resolve("curie").path), 2048, 0.01)
    lengths = [len(e) for e in tok.encode_all(read_records(tmp_path / "train.jsonl")).examples]
    assert [r["elapsed_examples"] for r in rows] == ["4", "6"]
    assert int(rows[1]["elapsed_tokens"]) == sum(lengths) == summary["elapsed_tokens"]
    assert 0 < int(rows[0]["elapsed_tokens"]) < int(rows[1]["elapsed_tokens"])


def test_without_a_validation_file_classification_is_skipped_with_a_warning(tmp_path):
    _, rows, events = _compile(_finished_run(tmp_path, valid=False))
    assert [(e["level"], e["message"]) for e in events] == [
        ("warn", "compute_classification_metrics needs a validation_file; no classification metrics were computed.")]
    assert list(rows[0]) == LEGACY_COLUMNS and rows[1]["elapsed_examples"] == "6"


# -- create-time checks (real server) -----------------------------------------------------------


def test_bad_classification_options_are_400_naming_the_field(api_server, openai_client):
    f = openai_client.files.create(file=("t.jsonl", jsonl([{"prompt": "a ->", "completion": " 1"}] * 10)), purpose="fine-tune")
    for body, param, message in (
        ({"classification_n_classes": 1}, "classification_n_classes",
         "Invalid value for 'classification_n_classes': expected an integer of at least 2, got 1."),
        ({"classification_positive_class": " "}, "classification_positive_class",
         "Invalid value for 'classification_positive_class': expected a non-blank label."),
        ({"classification_betas": [1.0, 0]}, "classification_betas",
         "Invalid value for 'classification_betas': every beta must be greater than 0, got 0.0."),
    ):
        r = httpx.post(f"{api_server.base_url}/fine-tunes", headers=api_server.headers(),
                       json={"training_file": f.id, "compute_classification_metrics": True, **body})
        assert r.status_code == 400 and r.json()["error"]["param"] == param and r.json()["error"]["message"] == message


# -- real legacy jobs (the packaged SmolLM2, a few steps) ---------------------------------------

WORDS = ["awful", "bad", "okay", "good", "great"]


def _sst5(n: int, offset: int = 0) -> bytes:
    return jsonl([{"prompt": f"The movie was {WORDS[i % 5]} number {i + offset} ->", "completion": f" {i % 5}"} for i in range(n)])


def _binary(n: int) -> bytes:
    return jsonl([{"prompt": f"Review {i}: it was {'great' if i % 2 else 'awful'} ->", "completion": " positive" if i % 2 else " negative"}
                  for i in range(n)])


def _wait(api_server, ft_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ft = httpx.get(f"{api_server.base_url}/fine-tunes/{ft_id}", headers=api_server.headers()).json()
        if ft["status"] in ("succeeded", "failed", "cancelled"):
            return ft
        time.sleep(1)
    raise AssertionError(f"{ft_id} is still {ft['status']}")


def _legacy_job(api_server, openai_client, train: bytes, valid: bytes, **body) -> str:
    t = openai_client.files.create(file=("train.jsonl", train), purpose="fine-tune")
    v = openai_client.files.create(file=("valid.jsonl", valid), purpose="fine-tune")
    r = httpx.post(f"{api_server.base_url}/fine-tunes", headers=api_server.headers(),
                   json={"training_file": t.id, "validation_file": v.id, "model": "curie", "n_epochs": 1, "batch_size": 4,
                         "max_steps": 2, "compute_classification_metrics": True, **body})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _result_rows(openai_client, ft: dict) -> tuple[list[str], list[dict]]:
    (result,) = ft["result_files"]
    assert result["purpose"] == "fine-tune-results" and result["filename"] == "compiled_results.csv"
    text = openai_client.files.content(result["id"]).text
    return text.splitlines()[0].split(","), list(csv.DictReader(io.StringIO(text)))


def _check_training_rows(rows: list[dict]) -> None:
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert [int(r["elapsed_examples"]) for r in rows] == [4, 8]
    assert 0 < int(rows[0]["elapsed_tokens"]) < int(rows[1]["elapsed_tokens"])
    for r in rows:
        assert float(r["training_loss"]) > 0 and 0 <= float(r["training_token_accuracy"]) <= 1
        assert r["training_sequence_accuracy"] == "" and r["validation_sequence_accuracy"] == ""  # not measured, not invented
    assert float(rows[-1]["validation_loss"]) > 0 and 0 <= float(rows[-1]["validation_token_accuracy"]) <= 1


def _read_label(answer: str, labels: list[str]) -> str | None:
    """The label an answer names, read independently of tunery.eval.labels for the two label sets
    used here: numbers (the first number that is a label) and words (the first word that is one)."""
    if all(label.isdigit() for label in labels):
        values = [float(m.group()) for m in re.finditer(r"[-+]?\d+(?:\.\d+)?", answer)]
        return next((label for v in values for label in labels if float(label) == v), None)
    return next((w for w in re.findall(r"\w+", answer.lower()) if w in labels), None)


def _expected_columns(api_server, model: str, valid: bytes, positive: str | None = None, betas=()) -> dict[str, str]:
    """The classification columns worked out from the model's greedy answers through /v1/completions
    (the validation prompts, as many new tokens as the job's step allows) and the file's labels."""
    from transformers import AutoTokenizer

    from tunery.models.resolve import resolve_model

    records = [json.loads(line) for line in valid.decode().splitlines()]
    tok = AutoTokenizer.from_pretrained(resolve_model("curie").path)
    max_tokens = max(len(tok(r["completion"], add_special_tokens=False)["input_ids"]) for r in records) + 16
    truth = [r["completion"].strip() for r in records]
    labels = sorted(set(truth))
    predicted = []
    for r in records:
        answer = httpx.post(f"{api_server.base_url}/completions", headers=api_server.headers(), timeout=300,
                            json={"model": model, "prompt": r["prompt"], "max_tokens": max_tokens, "temperature": 0})
        assert answer.status_code == 200, answer.text
        predicted.append(_read_label(answer.json()["choices"][0]["text"], labels))
    n = len(truth)

    def counts(label):  # true positives, predicted, support
        return (sum(t == p == label for t, p in zip(truth, predicted)), predicted.count(label), truth.count(label))

    out = {"accuracy": sum(t == p for t, p in zip(truth, predicted)) / n}
    if positive is None:
        out["weighted_f1_score"] = sum(2 * tp / (pred + sup) * sup for tp, pred, sup in map(counts, labels) if pred + sup) / n
    else:
        tp, pred, sup = counts(positive.strip())
        precision, recall = tp / pred if pred else 0.0, tp / sup if sup else 0.0
        out.update(precision=precision, recall=recall)
        for beta in (1.0, *betas):
            b2 = beta * beta
            out[f"f{beta:g}" if beta != 1.0 else "f1.0"] = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0
    return {f"classification/{k}": f"{v:.6f}" for k, v in out.items()}


@pytest.mark.slow
def test_legacy_jobs_compile_legacy_results_with_classification_metrics(api_server, openai_client):
    multi_valid, binary_valid = _sst5(10, offset=100), _binary(8)
    multi = _legacy_job(api_server, openai_client, _sst5(20), multi_valid, classification_n_classes=5)
    binary = _legacy_job(api_server, openai_client, _binary(20), binary_valid, classification_positive_class=" positive",
                         classification_betas=[0.5, 2])
    current = openai_client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=openai_client.files.create(file=("c.jsonl", _sst5(20)), purpose="fine-tune").id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4, "max_steps": 1}}})

    ft = _wait(api_server, multi)
    assert ft["status"] == "succeeded", ft["events"][-3:]
    header, rows = _result_rows(openai_client, ft)
    assert header == [*LEGACY_COLUMNS, "classification/accuracy", "classification/weighted_f1_score"]
    _check_training_rows(rows)
    assert rows[0]["classification/accuracy"] == "" and rows[0]["classification/weighted_f1_score"] == ""
    expected = _expected_columns(api_server, ft["fine_tuned_model"], multi_valid)
    assert {k: rows[-1][k] for k in expected} == expected
    (event,) = [e for e in ft["events"] if e["message"].startswith("Classification metrics on the validation file: ")]
    assert event["message"].startswith("Classification metrics on the validation file: accuracy=")
    assert ft["events"][-1]["message"] == "The job has successfully completed"

    ft = _wait(api_server, binary)
    assert ft["status"] == "succeeded", ft["events"][-3:]
    header, rows = _result_rows(openai_client, ft)
    names = ["accuracy", "precision", "recall", "auroc", "auprc", "f1.0", "f0.5", "f2"]
    assert header == [*LEGACY_COLUMNS, *(f"classification/{n}" for n in names)]
    _check_training_rows(rows)
    expected = _expected_columns(api_server, ft["fine_tuned_model"], binary_valid, " positive", [0.5, 2])
    assert {k: rows[-1][k] for k in expected} == expected
    for n in ("auroc", "auprc"):  # from the model's label probabilities, which the API does not expose
        assert 0 <= float(rows[-1][f"classification/{n}"]) <= 1, n

    deadline = time.monotonic() + 600
    while (job := openai_client.fine_tuning.jobs.retrieve(current.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert job.status == "succeeded", job.error
    (result_id,) = job.result_files
    assert openai_client.files.retrieve(result_id).filename == "step_metrics.csv"
    lines = openai_client.files.content(result_id).text.splitlines()
    assert lines[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy" and len(lines) == 2


# -- the worker keeps the job when compiling fails (real worker, store and subprocesses) -------

# A stand-in trainer that succeeds but leaves a result.json the results step cannot read.
BROKEN_RESULT_TRAINER = """
import json, os, sys
cfg = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
open(os.path.join(cfg["out_dir"], "metrics.csv"), "w").write({metrics!r})
open(os.path.join(cfg["out_dir"], "result.json"), "w").write("[]")
"""


def test_a_failed_results_step_is_a_warning_and_the_job_succeeds_with_the_training_metrics(tmp_path):
    import sys

    from sqlalchemy import select

    from tunery.jobs import queue, states
    from tunery.jobs.worker import Worker
    from tunery.store import files as files_repo
    from tunery.store.context import open_store
    from tunery.store.db import now
    from tunery.store.jobs import Job
    from tunery.store.keys import get_or_create_project
    from tunery.store.settings import load_settings

    script = tmp_path / "trainer.py"
    script.write_text(BROKEN_RESULT_TRAINER.format(metrics=METRICS))
    store = open_store(load_settings(tmp_path / "home"))
    try:
        worker = Worker(store, command=[sys.executable, str(script)], heartbeat_s=1)
        with store.db.session_scope() as session:
            project = get_or_create_project(session, "acme").id
            job = Job(id=queue.new_job_id(True), project_id=project, legacy=True, model="curie", training_file="file-x", seed=1,
                      method={"type": "supervised"}, hyperparameters={}, status=states.RUNNING, worker_id=worker.id,
                      options={"classification": {"compute_classification_metrics": True, "classification_n_classes": 5}},
                      result_files=[], created_at=now(), updated_at=now())
            session.add(job)
            job_id = job.id
        worker._run_job(job_id, None)
        with store.db.session_scope() as session:
            job = session.scalar(select(Job).where(Job.id == job_id))
            assert job.status == states.SUCCEEDED and job.fine_tuned_model.startswith("curie:ft-acme-")
            record = files_repo.get_file(session, project, job.result_files[0])
            assert record.filename == "compiled_results.csv" and record.purpose == "fine-tune-results"
            data = store.blobs.path(files_repo.blob_key(record.id)).read_bytes()
            messages = [(e.level, e.message) for e in reversed(queue.list_events(session, job_id, limit=100)[0])]
    finally:
        store.close()
    assert data == legacy_csv(read_metrics_text(METRICS))  # the training columns; elapsed and classification empty
    (warning,) = [m for level, m in messages if level == "warn"]
    assert warning.startswith("The result file holds the training metrics only (no elapsed_tokens, elapsed_examples or "
                              "classification columns): compiling it failed: Compiling the results failed: ")
    assert messages[-1] == ("info", "The job has successfully completed")
