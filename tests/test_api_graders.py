"""`/v1/fine_tuning/alpha/graders/{run,validate}` through the current openai SDK against a real
`tunery serve` with the packaged model, and an Evals run whose score_model criterion is judged by it."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tunery.graders.label_model import parse_label
from tunery.graders.model_grader import conversation
from tunery.graders.result import ERROR_KEYS
from tunery.graders.score_model import instruction, parse_score

CHECK = {"type": "string_check", "name": "exact", "input": "{{ sample.output_json.city }}", "reference": "{{ item.answer }}", "operation": "eq"}
JUDGE_INPUT = [{"role": "system", "content": "You grade answers about capitals."},
               {"role": "user", "content": "Is {{sample.output_text}} the capital of {{item.country}}? Give 1 for yes, 0 for no."}]
SCORE = {"type": "score_model", "name": "judge", "model": "gpt-4o-mini", "input": JUDGE_INPUT,
         "sampling_params": {"max_completions_tokens": 12, "temperature": 0}}


def test_run_string_check(openai_client, spec):
    got = openai_client.fine_tuning.alpha.graders.run(grader=CHECK, model_sample='{"city": "Paris"}', item={"answer": "Paris"})
    raw = got.to_dict()
    spec.validate("RunGraderResponse", raw)
    assert raw["reward"] == 1.0 and raw["sub_rewards"] == {} and raw["model_grader_token_usage_per_model"] == {}
    meta = raw["metadata"]
    assert meta["name"] == "exact" and meta["type"] == "string_check" and meta["token_usage"] is None
    assert sorted(meta["errors"]) == sorted(ERROR_KEYS) and not any(meta["errors"].values())
    assert meta["execution_time"] >= 0 and meta["sampled_model_name"] is None
    miss = openai_client.fine_tuning.alpha.graders.run(grader=CHECK, model_sample="Paris", item={"answer": "Paris"}).to_dict()
    assert miss["reward"] == 0.0 and miss["metadata"]["errors"]["invalid_variable_error"] is True  # no output_json
    no_item = openai_client.fine_tuning.alpha.graders.run(grader={**CHECK, "input": "{{sample.output_text}}", "reference": "x"}, model_sample="x")
    assert no_item.reward == 1.0


def test_run_score_model_judges_with_the_packaged_model(openai_client, spec):
    item = {"country": "France"}
    got = openai_client.fine_tuning.alpha.graders.run(grader=SCORE, model_sample="Paris", item=item).to_dict()
    spec.validate("RunGraderResponse", got)
    # The same conversation through chat completions, greedy: what the judge must have read.
    messages = conversation(JUDGE_INPUT, {"sample": {"output_text": "Paris"}, "item": item}, instruction(0, 1))
    chat = openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_completion_tokens=12, temperature=0)
    usage = got["model_grader_token_usage_per_model"]["gpt-4o-mini"]
    assert usage == {"prompt_tokens": chat.usage.prompt_tokens, "completion_tokens": chat.usage.completion_tokens,
                     "total_tokens": chat.usage.total_tokens, "cached_tokens": 0}
    assert got["metadata"]["token_usage"] == chat.usage.total_tokens
    value = parse_score(chat.choices[0].message.content)
    errors = got["metadata"]["errors"]
    assert errors["model_grader_parse_error"] == (value is None) and not errors["model_grader_server_error"]
    assert got["reward"] == (0.0 if value is None else min(max(value, 0.0), 1.0))


def test_run_score_model_with_an_unknown_judge_is_a_graded_error(openai_client, spec):
    got = openai_client.fine_tuning.alpha.graders.run(grader={**SCORE, "model": "no-such-judge"}, model_sample="Paris", item={"country": "France"}).to_dict()
    spec.validate("RunGraderResponse", got)
    errors = got["metadata"]["errors"]
    assert got["reward"] == 0.0 and errors["model_grader_server_error"] is True
    assert errors["model_grader_server_error_details"].startswith("model_not_found") and "no-such-judge" in errors["model_grader_server_error_details"]
    assert got["model_grader_token_usage_per_model"] == {} and got["metadata"]["token_usage"] is None


def test_validate_echoes_the_normalized_grader(openai_client, spec):
    got = openai_client.fine_tuning.alpha.graders.validate(grader=CHECK).to_dict()
    spec.validate("ValidateGraderResponse", got)
    assert got["grader"] == {**CHECK, "input": "{{sample.output_json.city}}", "reference": "{{item.answer}}"}
    got = openai_client.fine_tuning.alpha.graders.validate(grader={**SCORE, "range": [0, 10]}).to_dict()
    spec.validate("ValidateGraderResponse", got)
    assert got["grader"]["range"] == [0, 10] and got["grader"]["model"] == "gpt-4o-mini"
    assert got["grader"]["input"][1] == {"type": "message", "role": "user", "content": {
        "type": "input_text", "text": "Is {{sample.output_text}} the capital of {{item.country}}? Give 1 for yes, 0 for no."}}


LABEL = {"type": "label_model", "name": "l", "model": "gpt-4o-mini", "input": [{"role": "user", "content": "x"}],
         "labels": ["a", "b"], "passing_labels": ["a"]}


@pytest.mark.parametrize("grader, param", [
    ({**CHECK, "type": "nonsense"}, "grader.type"),
    ({k: v for k, v in CHECK.items() if k != "operation"}, "grader.operation"),
    ({**SCORE, "input": [{"role": "tool", "content": "x"}]}, "grader.input[0].role"),
    ({**SCORE, "range": [1, 0]}, "grader.range"),
    ({**SCORE, "sampling_params": {"temperature": 9}}, "grader.sampling_params.temperature"),
    (LABEL, "grader.type"),  # not allowed at the top level of graders/run and validate
    ("not an object", "grader"),
])
def test_bad_graders_are_400_naming_the_field(openai_client, grader, param):
    for call in (lambda: openai_client.fine_tuning.alpha.graders.validate(grader=grader),
                 lambda: openai_client.fine_tuning.alpha.graders.run(grader=grader, model_sample="x")):
        with pytest.raises(openai.BadRequestError) as err:
            call()
        assert err.value.status_code == 400 and err.value.body["param"] == param, err.value.body


def test_error_envelope_and_auth(api_server):
    url = f"{api_server.base_url}/fine_tuning/alpha/graders/validate"
    r = httpx.post(url, json={"grader": {**SCORE, "model": 3}}, headers=api_server.headers())
    assert r.status_code == 400
    assert r.json() == {"error": {"message": "Invalid type for 'grader.model': expected string.", "type": "invalid_request_error",
                                  "param": "grader.model", "code": None}}
    r = httpx.post(f"{api_server.base_url}/fine_tuning/alpha/graders/run", json={"grader": CHECK}, headers=api_server.headers())
    assert r.status_code == 400 and r.json()["error"]["param"] == "model_sample"
    r = httpx.post(url, json={"grader": CHECK})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"


def test_openapi_documents_both_operations(api_server):
    doc = httpx.get(f"{api_server.base_url.removesuffix('/v1')}/openapi.json").json()
    run = doc["paths"]["/v1/fine_tuning/alpha/graders/run"]["post"]
    assert run["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RunGraderResponse"}
    assert "/v1/fine_tuning/alpha/graders/validate" in doc["paths"]
    errors = doc["components"]["schemas"]["GraderErrors"]
    assert sorted(errors["required"]) == sorted(ERROR_KEYS)


def test_eval_run_with_a_score_model_criterion_is_judged(openai_client, spec):
    schema = {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}
    ev = openai_client.evals.create(name="judged", data_source_config={"type": "custom", "item_schema": schema, "include_sample_schema": True},
                                    testing_criteria=[{**SCORE, "pass_threshold": 0.5}, {
                                        **LABEL, "name": "verdict", "labels": ["yes", "no"], "passing_labels": ["yes"],
                                        "sampling_params": {"max_completions_tokens": 6}, "input": JUDGE_INPUT[:1] + [
                                            {"role": "user", "content": "Is {{sample.output_text}} the capital of {{item.country}}? yes or no?"}]}])
    content = [{"item": {"country": "France"}, "sample": {"output_text": "Paris"}},
               {"item": {"country": "Italy"}, "sample": {"output_text": "Oslo"}}]
    run = openai_client.evals.runs.create(ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}})
    deadline = time.time() + 240
    while run.status not in ("completed", "failed", "canceled") and time.time() < deadline:
        time.sleep(0.5)
        run = openai_client.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert run.status == "completed", run.error
    items = openai_client.evals.runs.output_items.list(run.id, eval_id=ev.id).data
    assert len(items) == 2
    passed = 0
    for it in items:
        result = it.results[0].to_dict()
        sample = result["sample"]
        assert sample["model"] == "gpt-4o-mini" and sample["error"] is None
        assert sample["input"][-1]["content"].startswith(f"Is {content[it.datasource_item_id]['sample']['output_text']} the capital of {it.datasource_item['country']}?")
        assert sample["usage"]["completion_tokens"] > 0 and sample["usage"]["total_tokens"] == sample["usage"]["prompt_tokens"] + sample["usage"]["completion_tokens"]
        value = parse_score(sample["output"][0]["content"])
        expected = 0.0 if value is None else min(max(value, 0.0), 1.0)
        assert result["score"] == expected and result["passed"] == (expected >= 0.5)
        assert result.get("errors", {}).get("model_grader_parse_error", False) == (value is None)
        passed += result["passed"]
        verdict = it.results[1].to_dict()
        label = parse_label(verdict["sample"]["output"][0]["content"], ["yes", "no"])
        assert verdict["score"] == (1.0 if label == "yes" else 0.0) and verdict["passed"] == (label == "yes")
        assert verdict.get("errors", {}).get("model_grader_parse_error", False) == (label is None)
        assert it.status == ("pass" if result["passed"] and verdict["passed"] else "fail")
    assert run.per_testing_criteria_results[0].passed == passed
    # The judge's usage is the run's usage of its model (a jsonl run generates nothing itself).
    usages = [r.to_dict()["sample"]["usage"] for it in items for r in it.results]
    assert [u.to_dict() for u in run.per_model_usage] == [{
        "model_name": "gpt-4o-mini", "invocation_count": 4, "cached_tokens": 0,
        **{k: sum(u[k] for u in usages) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}]
