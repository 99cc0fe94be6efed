"""Evaluation data is never read whole: `tunery eval` reads line by line and stops at `limit`;
an Evals run's file is refused past `max_eval_bytes` (`TUNERY_MAX_EVAL_BYTES`) with a 400 in the envelope."""

import io
import json
import tracemalloc

import httpx
import pytest
from api_support import ServerProcess, create_key

from tunery.eval.dataset import EvalTooLarge, read_examples

RECORD = {"messages": [{"role": "user", "content": "Review: " + "fine " * 20}, {"role": "assistant", "content": "positive"}]}
LINE = (json.dumps(RECORD) + "\n").encode()


def test_reading_stops_at_the_limit():
    data = LINE * 20_000  # ~3 MB
    f = io.BytesIO(data)
    tracemalloc.start()
    try:
        examples = read_examples(f, "file-x", limit=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [e.line for e in examples] == [1, 2, 3]
    assert f.tell() <= 4 * len(LINE)  # the rest of the file was never read
    assert peak < 256 * 1024, peak


def test_past_the_bound_reading_stops_with_a_clear_error():
    f = io.BytesIO(LINE * 20_000)
    with pytest.raises(EvalTooLarge) as err:
        read_examples(f, "file-x", max_bytes=10 * len(LINE) + 5)
    assert f.tell() <= 12 * len(LINE)
    assert str(err.value) == (
        f"file-x: the examples to evaluate hold more than {10 * len(LINE) + 5:,} bytes (the most an evaluation may hold); "
        "evaluate the first ones with `limit` (line 11 is past the bound)"
    )
    assert len(read_examples(io.BytesIO(LINE * 10), "file-x", max_bytes=10 * len(LINE))) == 10  # exactly the bound is fine


def test_an_eval_run_over_the_bound_is_refused(tmp_path):
    """An Evals run from an uploaded file reads it a line at a time and refuses it past
    max_eval_bytes: a 400 `file_too_large` naming the source, no server path; a file that fits runs."""
    home = tmp_path / "home"
    item = (json.dumps({"item": {"text": "fine " * 20}}) + "\n").encode()
    env = {"TUNERY_MAX_EVAL_BYTES": str(8 * len(item))}
    key = create_key(home, **env)
    server = ServerProcess(home, env=env).start()
    try:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            big = c.post("/files", files={"file": ("big.jsonl", item * 200)}, data={"purpose": "evals"}).json()["id"]
            fits = c.post("/files", files={"file": ("fits.jsonl", item * 8)}, data={"purpose": "evals"}).json()["id"]
            ev = c.post("/evals", json={"data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
                                        "testing_criteria": [{"type": "string_check", "name": "s", "input": "{{item.text}}",
                                                              "reference": "x", "operation": "eq"}]}).json()["id"]
            r = c.post(f"/evals/{ev}/runs", json={"data_source": {"type": "jsonl", "source": {"type": "file_id", "id": big}}})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert (err["type"], err["code"]) == ("invalid_request_error", "file_too_large") and err["param"].startswith("data_source.source")
            assert big in err["message"] and f"{8 * len(item)}" in err["message"] and str(home) not in err["message"]
            r = c.post(f"/evals/{ev}/runs", json={"data_source": {"type": "jsonl", "source": {"type": "file_id", "id": fits}}})
            assert r.status_code == 201 and r.json()["status"] == "queued", r.text
            assert server.alive()
    finally:
        server.stop()
