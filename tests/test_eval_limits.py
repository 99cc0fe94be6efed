"""An evaluation never holds a whole uploaded file: it reads line by line, stops at `limit`, and
refuses past `max_eval_bytes` (`TUNERY_MAX_EVAL_BYTES`) with a 400 in the envelope."""

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


def test_the_api_refuses_an_evaluation_over_the_bound(tmp_path):
    home = tmp_path / "home"
    env = {"TUNERY_MAX_EVAL_BYTES": str(8 * len(LINE))}
    key = create_key(home, **env)
    server = ServerProcess(home, env=env).start()
    try:
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            fid = c.post("/files", files={"file": ("dev.jsonl", LINE * 200)}, data={"purpose": "fine-tune"}).json()["id"]
            small = c.post("/files", files={"file": ("shots.jsonl", LINE * 4)}, data={"purpose": "fine-tune"}).json()["id"]
            r = c.post("/evaluations", json={"models": ["ft:nope:x"], "file": fid})
            assert r.status_code == 400
            err = r.json()["error"]
            assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "file_too_large", "file")
            assert err["message"].startswith(f"{fid}: the examples to evaluate hold more than {8 * len(LINE):,} bytes")
            assert str(home) not in err["message"]
            # The first examples fit: the file is accepted and the request goes on to the models.
            r = c.post("/evaluations", json={"models": ["ft:nope:x"], "file": fid, "limit": 5})
            assert (r.status_code, r.json()["error"]["code"]) == (404, "model_not_found")
            r = c.post("/evaluations", json={"models": ["ft:nope:x"], "file": small, "few_shot": [2], "few_shot_file": fid})
            assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["param"]) == (400, "file_too_large", "few_shot_file")
            assert server.alive()
    finally:
        server.stop()
