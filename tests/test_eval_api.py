"""`/v1/evaluations` on a real `tunery serve` with the tiny Llama ("tiny") and a LoRA fine-tune:
the results equal what the evaluation library computes for the same weights, errors use the
envelope, and other projects see nothing."""

import json
import time

import httpx
import pytest
from api_support import create_key
from serve_server import FT, start_tiny_server

from tunery.eval.dataset import load_examples
from tunery.eval.evaluate import make_plan, run_plan
from tunery.eval.sources import EvalModel
from tunery.serve.registry import ModelRegistry, ModelSource

ROWS = [("the quick brown fox", "positive"), ("hello world", "negative"), ("lazy dog", "neutral"), ("how are you", "positive"),
        ("fine, thank you", "positive"), ("the lazy fox", "negative"), ("jumps over", "neutral"), ("hot-loaded adapters", "positive")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_tiny_server(tmp_path_factory.mktemp("evalapi"))
    yield s
    s.process.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("evaldata") / "dev.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "system", "content": "Label it."}, {"role": "user", "content": t}, {"role": "assistant", "content": a}]}) + "\n" for t, a in ROWS))
    return path


def http(server, key=None):
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key or server.key}"}, timeout=60)


def upload(server, path) -> str:
    with http(server) as c:
        r = c.post("/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": "fine-tune"})
        assert r.status_code == 200, r.text
        return r.json()["id"]


def wait(c, eval_id, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = c.get(f"/evaluations/{eval_id}").json()
        if obj["status"] in ("succeeded", "failed"):
            return obj
        time.sleep(0.5)
    raise AssertionError(f"evaluation {eval_id} did not finish: {obj}")


def test_evaluation_matches_the_library_and_renders_a_report(server, data):
    fid = upload(server, data)
    with http(server) as c:
        r = c.post("/evaluations", json={"models": ["tiny", FT], "file": fid, "few_shot": [0, 2], "few_shot_file": fid, "max_tokens": 4})
        assert r.status_code == 200, r.text
        created = r.json()
        assert created["object"] == "evaluation" and created["id"].startswith("eval-") and created["status"] in ("queued", "running")
        assert created["task"] == "classification" and created["labels"] == ["negative", "neutral", "positive"] and created["n"] == 8
        assert created["progress"]["total"] == 3 * 2 * 8  # (tiny 0-shot, tiny 2-shot, FT) x (answers + loss) x examples
        done = wait(c, created["id"])
        assert done["status"] == "succeeded", done
        assert done["progress"]["completed"] == done["progress"]["total"] and done["finished_at"] >= done["created_at"]
        assert [(x["model"], x["few_shot"]) for x in done["results"]] == [("tiny", 0), ("tiny", 2), (FT, 0)]
        listed = c.get("/evaluations").json()
        assert listed["object"] == "list" and listed["data"][0]["id"] == created["id"]
        page = c.get(f"/evaluations/{created['id']}/report")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text.count("true ↓") == 3 and FT in page.text

    # The same plan run here, with the same weights loaded by a fresh registry, gives the same numbers.
    examples = load_examples(data)
    models = [EvalModel("tiny", ModelSource("tiny", "base", server.base)),
              EvalModel(FT, ModelSource(FT, "adapter", server.adapters[FT], base_path=server.base))]
    reg = ModelRegistry()
    try:
        mine, _ = run_plan(make_plan(models, examples, few_shot=[0, 2], shots_pool=examples, max_tokens=4), reg)
    finally:
        reg.close()
    for theirs, ours in zip(done["results"], mine):
        for key in ("accuracy", "macro_f1", "invalid", "exact_match", "confusion_matrix"):
            assert theirs[key] == ours[key], key
        assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-5)


def test_errors_use_the_envelope(server, data, tmp_path):
    fid = upload(server, data)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n" + json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    with http(server) as c:
        bad_id = c.post("/files", files={"file": ("bad.jsonl", bad.read_bytes())}, data={"purpose": "batch"}).json()["id"]
        cases = [
            ({"models": ["tiny", "ft:nope:x"], "file": fid}, 404, "models[1]", "model_not_found"),
            ({"models": ["tiny"], "file": "file-nope"}, 404, "file", None),
            ({"models": ["tiny"], "file": fid, "few_shot": [2]}, 400, "few_shot", None),
            ({"models": ["tiny"], "file": bad_id}, 400, "file", "invalid_file"),
            ({"models": [], "file": fid}, 400, "models", None),
            ({"models": ["tiny"], "file": fid, "labels": ["a"]}, 400, None, None),
        ]
        for body, status, param, code in cases:
            r = c.post("/evaluations", json=body)
            assert r.status_code == status, (body, r.text)
            err = r.json()["error"]
            assert err["param"] == param and err["code"] == code and err["type"] == "invalid_request_error", (body, err)
        r = c.post("/evaluations", json={"models": ["tiny"], "file": bad_id})
        assert r.json()["error"]["message"] == f"{bad_id}, line 2: messages[0]: the last message must be the assistant's reference answer (role 'assistant', got 'user')"
        assert "references not in --labels" in c.post("/evaluations", json={"models": ["tiny"], "file": fid, "labels": ["a"]}).json()["error"]["message"]
        r = c.get("/evaluations/eval-nope")
        assert r.status_code == 404 and r.json()["error"]["message"] == "No such evaluation: eval-nope"


def test_other_projects_see_nothing(server, data):
    fid = upload(server, data)
    with http(server) as c:
        eval_id = c.post("/evaluations", json={"models": ["tiny"], "file": fid, "limit": 2, "max_tokens": 2, "compute_loss": False}).json()["id"]
        wait(c, eval_id)
    other = create_key(server.process.home, project="other")
    with http(server, other) as c:
        assert c.get(f"/evaluations/{eval_id}").status_code == 404
        assert c.get("/evaluations").json()["data"] == []
        r = c.post("/evaluations", json={"models": ["tiny"], "file": fid})
        assert r.status_code == 404 and r.json()["error"]["param"] == "file"


def test_a_failed_evaluation_reports_why_and_has_no_report(server, tmp_path):
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "positive"}]}) + "\n")
    fid = upload(server, long)
    with http(server) as c:
        eval_id = c.post("/evaluations", json={"models": ["tiny"], "file": fid, "max_tokens": 2}).json()["id"]
        done = wait(c, eval_id)
        assert done["status"] == "failed" and done["results"] == []
        assert done["error"]["code"] == "evaluation_failed" and "exceeds the model's context of 256 tokens" in done["error"]["message"]
        assert done["error"]["message"].startswith("line 1: the prompt is ")
        r = c.get(f"/evaluations/{eval_id}/report")
        assert r.status_code == 409 and r.json()["error"]["code"] == "evaluation_not_finished"
