"""The Evals API through the current openai SDK against a real `tunery serve` with the packaged model."""

from __future__ import annotations

import time

import openai
import pytest

SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}, "required": ["question", "answer"]}
CHECK = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}", "operation": "eq"}
LIKE = {"type": "string_check", "name": "mentions", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "ilike"}


def _spec_view(obj):
    """The spec types `error` (run and sample) as a required EvalApiError object, while every
    example of it, and this server, send null for no error: validate the rest of the shape."""
    obj = dict(obj)
    if obj.get("error") is None and "error" in obj:
        obj["error"] = {"code": "", "message": ""}
    if isinstance(obj.get("sample"), dict):
        obj["sample"] = _spec_view(obj["sample"])
    if isinstance(obj.get("data"), list):
        obj["data"] = [_spec_view(d) for d in obj["data"]]
    return obj


def _eval(client, criteria=(CHECK,)):
    return client.evals.create(name="qa", data_source_config={"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
                               testing_criteria=list(criteria))


def _wait(client, eval_id, run_id, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run still {run.status}")


def test_create_stores_schema_wrapper_and_criterion_ids(openai_client, spec):
    ev = _eval(openai_client)
    raw = ev.to_dict()
    spec.validate("Eval", raw)
    assert raw["data_source_config"]["schema"] == {"type": "object", "properties": {"item": SCHEMA, "sample": raw["data_source_config"]["schema"]["properties"]["sample"]}, "required": ["item", "sample"]}
    crit = raw["testing_criteria"][0]
    assert crit["id"].startswith("exact-") and len(crit["id"]) == len("exact-") + 36
    assert crit["input"] == "{{sample.output_text}}"
    got = openai_client.evals.retrieve(ev.id)
    assert got.id == ev.id
    upd = openai_client.evals.update(ev.id, name="renamed", metadata={"k": "v"})
    assert upd.name == "renamed" and upd.metadata == {"k": "v"}
    assert openai_client.evals.retrieve(ev.id).name == "renamed"


def test_list_pages_in_order(openai_client, spec):
    ids = [_eval(openai_client).id for _ in range(3)]
    page = openai_client.evals.list(limit=2, order="desc")
    spec.validate("EvalList", page.to_dict())
    assert [e.id for e in page.data] == ids[::-1][:2] and page.has_more
    nxt = openai_client.evals.list(limit=1, order="desc", after=page.data[-1].id)
    assert nxt.data[0].id == ids[0]


def test_jsonl_run_grades_given_samples(openai_client, spec):
    ev = _eval(openai_client, (CHECK, LIKE))
    content = [{"item": {"question": "q1", "answer": "Paris"}, "sample": {"output_text": "Paris"}},
               {"item": {"question": "q2", "answer": "Rome"}, "sample": {"output_text": "It is rome."}},
               {"item": {"question": "q3", "answer": "Oslo"}, "sample": {"output_text": "Bergen"}}]
    run = openai_client.evals.runs.create(ev.id, name="given", data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    run = _wait(openai_client, ev.id, run.id)
    raw = run.to_dict()
    spec.validate("EvalRun", _spec_view(raw))
    assert run.status == "completed"
    assert raw["result_counts"] == {"total": 3, "errored": 0, "failed": 2, "passed": 1}
    ids = [c.id for c in ev.testing_criteria]
    assert raw["per_testing_criteria_results"] == [{"testing_criteria": ids[0], "passed": 1, "failed": 2},
                                                   {"testing_criteria": ids[1], "passed": 2, "failed": 1}]
    items = openai_client.evals.runs.output_items.list(run.id, eval_id=ev.id)
    spec.validate("EvalRunOutputItemList", _spec_view(items.to_dict()))
    assert [i.datasource_item_id for i in items.data] == [0, 1, 2]
    assert [i.status for i in items.data] == ["pass", "fail", "fail"]
    failed = openai_client.evals.runs.output_items.list(run.id, eval_id=ev.id, status="fail")
    assert [i.datasource_item_id for i in failed.data] == [1, 2]
    one = openai_client.evals.runs.output_items.retrieve(items.data[1].id, eval_id=ev.id, run_id=run.id)
    assert one.results[1].passed is True and one.results[0].score == 0.0


def test_a_row_with_a_null_sample_is_echoed_without_one(openai_client, spec):
    """A null `sample` is no sample: the echoed data source matches the spec (sample is an object)."""
    same = {"type": "string_check", "name": "same", "input": "{{ item.question }}", "reference": "{{ item.answer }}", "operation": "eq"}
    ev = openai_client.evals.create(name="items", data_source_config={"type": "custom", "item_schema": SCHEMA}, testing_criteria=[same])
    content = [{"item": {"question": "a", "answer": "a"}, "sample": None}, {"item": {"question": "a", "answer": "b"}}]
    run = openai_client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    assert run.to_dict()["data_source"]["source"]["content"] == [{"item": c["item"]} for c in content]
    run = _wait(openai_client, ev.id, run.id)
    spec.validate("EvalRun", _spec_view(run.to_dict()))
    assert run.result_counts.passed == 1 and run.result_counts.failed == 1


def test_completions_run_generates_with_the_packaged_model(openai_client, spec, api_server):
    import httpx

    ev = _eval(openai_client, (LIKE,))
    content = [{"item": {"question": f"Say the word {w}.", "answer": w}} for w in ("hello", "<b>yes</b>", "cat")]
    run = openai_client.evals.runs.create(ev.id, data_source={
        "type": "completions", "model": "gpt-4o-mini", "source": {"type": "file_content", "content": content},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{ item.question }}"}]},
        "sampling_params": {"max_completion_tokens": 4, "temperature": 0}})
    assert run.status in ("queued", "in_progress")
    run = _wait(openai_client, ev.id, run.id)
    raw = run.to_dict()
    spec.validate("EvalRun", _spec_view(raw))
    assert run.status == "completed" and raw["result_counts"]["total"] == 3
    usage = raw["per_model_usage"][0]
    assert usage["model_name"] == "gpt-4o-mini" and usage["invocation_count"] == 3 and 0 < usage["completion_tokens"] <= 12
    items = openai_client.evals.runs.output_items.list(run.id, eval_id=ev.id).data
    for it in items:
        spec.validate("EvalRunOutputItem", _spec_view(it.to_dict()))
        text = it.sample.output[0].content
        assert it.sample.input[0].content == it.datasource_item["question"]
        assert it.results[0].passed == (it.datasource_item["answer"].lower() in text.lower())
    html = httpx.get(raw["report_url"], headers={"Authorization": f"Bearer {api_server.key}"}).text
    assert "&lt;b&gt;yes&lt;/b&gt;" in html and "<b>yes</b>" not in html
    runs = openai_client.evals.runs.list(ev.id)
    assert [r.id for r in runs.data] == [run.id]
    assert openai_client.evals.runs.delete(run.id, eval_id=ev.id).deleted
    with pytest.raises(openai.NotFoundError):
        openai_client.evals.runs.retrieve(run.id, eval_id=ev.id)


def test_cancel_a_running_run(openai_client):
    ev = _eval(openai_client, (LIKE,))
    content = [{"item": {"question": f"Count to {i}.", "answer": "1"}} for i in range(40)]
    run = openai_client.evals.runs.create(ev.id, data_source={
        "type": "completions", "model": "gpt-4o-mini", "source": {"type": "file_content", "content": content},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]},
        "sampling_params": {"max_completion_tokens": 64}})
    canceled = openai_client.evals.runs.cancel(run.id, eval_id=ev.id)
    assert canceled.status == "canceled"
    time.sleep(2)
    after = openai_client.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert after.status == "canceled" and after.result_counts.total < 40


@pytest.mark.parametrize("body,param", [
    ({"data_source_config": {"type": "logs"}, "testing_criteria": [CHECK]}, "data_source_config.type"),
    ({"data_source_config": {"type": "stored_completions"}, "testing_criteria": [CHECK]}, "data_source_config.type"),
    ({"data_source_config": {"type": "custom"}, "testing_criteria": [CHECK]}, "data_source_config.item_schema"),
    ({"data_source_config": {"type": "custom", "item_schema": SCHEMA}, "testing_criteria": [{**CHECK, "reference": "{{item.nope}}"}]}, "testing_criteria[0].reference"),
    ({"data_source_config": {"type": "custom", "item_schema": SCHEMA}, "testing_criteria": [{**CHECK, "type": "nonsense"}]}, "testing_criteria[0].type"),
    ({"data_source_config": {"type": "custom", "item_schema": SCHEMA}, "testing_criteria": [{**CHECK, "operation": "gt"}]}, "testing_criteria[1].operation".replace("1", "0")),
    ({"data_source_config": {"type": "custom", "item_schema": SCHEMA}, "testing_criteria": [{"type": "multi", "name": "m"}]}, "testing_criteria[0].type"),
    ({"data_source_config": {"type": "custom", "item_schema": SCHEMA}, "testing_criteria": []}, "testing_criteria"),
])
def test_bad_eval_bodies(openai_client, body, param):
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.evals.create(**body)
    assert err.value.body["param"] == param


@pytest.mark.parametrize("ds,param", [
    ({"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"question": 1, "answer": "a"}}]}}, "data_source.source"),
    ({"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"question": "q", "answer": "a"}}]}}, "data_source.source"),
    ({"type": "jsonl", "source": {"type": "file_id", "id": "file-nope"}}, "data_source.source.id"),
    ({"type": "jsonl", "source": {"type": "stored_completions"}}, "data_source.source.type"),
    ({"type": "responses", "source": {"type": "file_content", "content": []}}, "data_source.type"),
    ({"type": "completions", "model": "no-such-model", "source": {"type": "file_content", "content": [{"item": {"question": "q", "answer": "a"}}]},
      "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}}, "data_source.model"),
    ({"type": "completions", "model": "gpt-4o-mini", "source": {"type": "file_content", "content": [{"item": {"question": "q", "answer": "a"}}]},
      "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.missing}}"}]}}, "data_source.input_messages.template[0].content.text"),
    ({"type": "completions", "model": "gpt-4o-mini", "source": {"type": "file_content", "content": [{"item": {"question": "q", "answer": "a"}}]},
      "input_messages": {"type": "template", "template": [{"role": "user", "content": "x"}]}, "sampling_params": {"temperature": 5}}, "data_source.sampling_params.temperature"),
])
def test_bad_run_bodies(openai_client, ds, param):
    ev = _eval(openai_client)
    with pytest.raises((openai.BadRequestError, openai.NotFoundError)) as err:
        openai_client.evals.runs.create(ev.id, data_source=ds)
    assert err.value.body["param"] == param


def test_unknown_ids_are_404(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.evals.retrieve("eval_nope")
    ev = _eval(openai_client)
    with pytest.raises(openai.NotFoundError):
        openai_client.evals.runs.retrieve("evalrun_nope", eval_id=ev.id)
    assert openai_client.evals.delete(ev.id).deleted
    with pytest.raises(openai.NotFoundError):
        openai_client.evals.retrieve(ev.id)


def test_a_python_criterion_runs_in_the_sandbox_and_its_source_is_kept_as_sent(openai_client, spec):
    """A python grader's source is code, not a template: `{{` in an f-string is kept, never checked
    as a variable; the run grades each row in the sandbox."""
    source = ('def grade(sample, item):\n'
              '    braces = f"{{ sample.x }}"  # a literal "{ sample.x }", not a template\n'
              '    return 1.0 if sample["output_text"].strip() == item["answer"] and braces == "{ sample.x }" else 0.0\n')
    python = {"type": "python", "name": "exact", "source": source, "pass_threshold": 1}
    ev = _eval(openai_client, (python,))
    assert ev.to_dict()["testing_criteria"][0]["source"] == source
    content = [{"item": {"question": "q1", "answer": "Paris"}, "sample": {"output_text": "Paris "}},
               {"item": {"question": "q2", "answer": "Rome"}, "sample": {"output_text": "Oslo"}}]
    run = openai_client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    run = _wait(openai_client, ev.id, run.id)
    spec.validate("EvalRun", _spec_view(run.to_dict()))
    assert run.result_counts.to_dict() == {"total": 2, "errored": 0, "failed": 1, "passed": 1}
    items = openai_client.evals.runs.output_items.list(run.id, eval_id=ev.id, order="asc")
    assert [(i.datasource_item_id, i.results[0].score) for i in items.data] == [(0, 1.0), (1, 0.0)]


def test_run_metrics_in_json_and_report(openai_client, api_server):
    """The task metrics of a jsonl run, worked out by hand: truth pos,pos,neg,neg,pos; answers
    pos,neg,neg,(invalid),pos; labels in order neg, pos."""
    import httpx

    ev = _eval(openai_client, (LIKE, CHECK))  # the first criterion reading sample.output_text names the reference
    rows = [("pos", "pos"), ("pos", "neg"), ("neg", "neg"), ("neg", "banana <script>"), ("pos", "pos")]
    content = [{"item": {"question": f"q{i}", "answer": ref}, "sample": {"output_text": ans}} for i, (ref, ans) in enumerate(rows)]
    run = openai_client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    run = _wait(openai_client, ev.id, run.id)
    headers = {"Authorization": f"Bearer {api_server.key}"}
    got = httpx.get(f"{api_server.base_url}/evals/{ev.id}/runs/{run.id}/metrics", headers=headers).json()
    m = got["metrics"]
    assert got["object"] == "eval.run.metrics" and got["status"] == "completed"
    assert m["criterion"] == ev.testing_criteria[0].id and m["task"] == "classification" and m["labels"] == ["neg", "pos"]
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(0.6) and m["invalid"] == 1
    assert m["per_class"]["neg"]["f1"] == pytest.approx(0.5) and m["per_class"]["pos"]["f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx(0.65) and m["weighted_f1"] == pytest.approx(0.68)
    assert m["confusion_matrix"] == [[1, 0, 1], [1, 2, 0]] and "predictions" not in m
    html = httpx.get(run.report_url, headers=headers).text
    assert "<h2>Metrics</h2>" in html and "60.0%" in html and "0.650" in html
    assert "<tr><th>neg</th><td>1</td><td>0</td><td>1</td></tr><tr><th>pos</th><td>1</td><td>2</td><td>0</td></tr>" in html
    assert "banana &lt;script&gt;" in html and "<script>" not in html
    # ?labels= fixes the classes (a class no reference shows still gets its row); bad ones are a 400.
    url = f"{api_server.base_url}/evals/{ev.id}/runs/{run.id}/metrics"
    fixed = httpx.get(url, params={"labels": "neg,pos,neutral"}, headers=headers).json()["metrics"]
    assert fixed["labels"] == ["neg", "pos", "neutral"] and fixed["confusion_matrix"][2] == [0, 0, 0, 0]
    assert fixed["accuracy"] == pytest.approx(0.6)
    for labels in ("pos", ",", ",".join(str(i) for i in range(51))):
        r = httpx.get(url, params={"labels": labels}, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == "labels", (labels, r.text)


def test_run_metrics_are_null_without_a_reference_criterion(openai_client, api_server):
    import httpx

    same = {"type": "string_check", "name": "same", "input": "{{ item.question }}", "reference": "{{ item.answer }}", "operation": "eq"}
    ev = openai_client.evals.create(name="items", data_source_config={"type": "custom", "item_schema": SCHEMA}, testing_criteria=[same])
    run = openai_client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"question": "a", "answer": "a"}}]}})
    run = _wait(openai_client, ev.id, run.id)
    headers = {"Authorization": f"Bearer {api_server.key}"}
    assert httpx.get(f"{api_server.base_url}/evals/{ev.id}/runs/{run.id}/metrics", headers=headers).json()["metrics"] is None
    assert "<h2>Metrics</h2>" not in httpx.get(run.report_url, headers=headers).text
    missing = httpx.get(f"{api_server.base_url}/evals/{ev.id}/runs/evalrun_nope/metrics", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "run_id"


def test_item_reference_to_a_string_is_a_raw_prompt(openai_client, spec):
    """Tunery extension: `input_messages: item_reference` to a string is a completion prompt, no chat
    template: the same tokens and greedy text as /v1/completions; a list stays chat messages."""
    schema = {"type": "object", "properties": {"prompt": {"type": ["string", "array"]}, "answer": {"type": "string"}}, "required": ["prompt", "answer"]}
    ev = openai_client.evals.create(name="raw", data_source_config={"type": "custom", "item_schema": schema, "include_sample_schema": True},
                                    testing_criteria=[LIKE])
    prompt = "The capital of France is"
    content = [{"item": {"prompt": prompt, "answer": "Paris"}}, {"item": {"prompt": [{"role": "user", "content": prompt}], "answer": "Paris"}},
               {"item": {"prompt": 7, "answer": "x"}}]
    with pytest.raises(openai.BadRequestError):  # 7 is neither: refused by the item schema at create time
        openai_client.evals.runs.create(ev.id, data_source={"type": "completions", "model": "gpt-4o-mini", "source": {"type": "file_content", "content": content},
                                                            "input_messages": {"type": "item_reference", "item_reference": "item.prompt"}})
    run = openai_client.evals.runs.create(ev.id, data_source={
        "type": "completions", "model": "gpt-4o-mini", "source": {"type": "file_content", "content": content[:2]},
        "input_messages": {"type": "item_reference", "item_reference": "item.prompt"},
        "sampling_params": {"max_completion_tokens": 4, "temperature": 0}})
    run = _wait(openai_client, ev.id, run.id)
    assert run.status == "completed" and run.result_counts.errored == 0
    raw, chat = openai_client.evals.runs.output_items.list(run.id, eval_id=ev.id).data
    spec.validate("EvalRunOutputItem", _spec_view(raw.to_dict()))
    legacy = openai_client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=4, temperature=0)
    assert raw.sample.input[0].content == prompt and raw.sample.usage.prompt_tokens == legacy.usage.prompt_tokens
    assert raw.sample.output[0].content == legacy.choices[0].text
    assert chat.sample.usage.prompt_tokens > raw.sample.usage.prompt_tokens  # the chat template's tokens
