"""score_model and label_model: validation errors name the field, answers are parsed leniently
and clamped, a judge's failure is the row's error; and one grading through the real serve judge
with the packaged model.

`FixedJudge` is a test double of the `Judge` protocol (it answers fixed text, so the parsing
rules can be pinned); the serve judge test at the end runs the real engine."""

from __future__ import annotations

import math

import pytest

from tunery.graders import GraderError, grade_batch, make_sample, passed, validate
from tunery.graders.judge import JudgeReply
from tunery.graders.label_model import parse_label
from tunery.graders.score_model import parse_score

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def score(**kw):
    return {"type": "score_model", "name": "judge", "model": "gpt-4o-mini",
            "input": [{"role": "user", "content": "Rate: {{sample.output_text}} (ref {{item.ref}})"}], **kw}


def label(**kw):
    return {"type": "label_model", "name": "sentiment", "model": "gpt-4o-mini",
            "input": [{"role": "developer", "content": "Classify."}, {"role": "user", "content": [{"type": "input_text", "text": "{{item.text}}"}]}],
            "labels": ["positive", "negative", "neutral"], "passing_labels": ["positive"], **kw}


class FixedJudge:
    """Answers `texts` in turn (cycling) and records every call."""

    def __init__(self, *texts, error=None, raises=None):
        self.texts, self.error, self.raises, self.calls = texts, error, raises, []

    def __call__(self, model, conversations, sampling, response_format=None):
        self.calls.append((model, conversations, sampling, response_format))
        if self.raises:
            raise self.raises
        if self.error:
            return [JudgeReply("", error=self.error) for _ in conversations]
        return [JudgeReply(self.texts[i % len(self.texts)], dict(USAGE)) for i in range(len(conversations))]


def rows(*answers, ref="x"):
    return [(make_sample(a), {"ref": ref, "text": a}) for a in answers]


# --- validate ---------------------------------------------------------------------------------
@pytest.mark.parametrize("grader, param", [
    ({**score(), "model": ""}, "grader.model"),
    ({k: v for k, v in score().items() if k != "model"}, "grader.model"),
    (score(input=[]), "grader.input"),
    (score(input="hi"), "grader.input"),
    (score(input=[{"role": "tool", "content": "x"}]), "grader.input[0].role"),
    (score(input=[{"role": "user"}]), "grader.input[0].content"),
    (score(input=[{"role": "user", "content": "x", "type": "chat"}]), "grader.input[0].type"),
    (score(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/i.png"}]}]), "grader.input[0].content[0].type"),
    (score(input=[{"role": "user", "content": {"type": "input_text"}}]), "grader.input[0].content.text"),
    (score(input=[{"role": "user", "content": 3}]), "grader.input[0].content"),
    (score(range=[0, 1, 2]), "grader.range"),
    (score(range=[1, 0]), "grader.range"),
    (score(range=[0, "1"]), "grader.range[1]"),
    (score(range=[True, 1]), "grader.range[0]"),
    (score(sampling_params={"temperature": 3}), "grader.sampling_params.temperature"),
    (score(sampling_params={"top_p": -0.1}), "grader.sampling_params.top_p"),
    (score(sampling_params={"max_completions_tokens": 0}), "grader.sampling_params.max_completions_tokens"),
    (score(sampling_params={"max_completion_tokens": 1.5}), "grader.sampling_params.max_completion_tokens"),
    (score(sampling_params={"seed": "1"}), "grader.sampling_params.seed"),
    (score(sampling_params={"reasoning_effort": "low"}), "grader.sampling_params.reasoning_effort"),
    (score(sampling_params={"n": 2}), "grader.sampling_params.n"),
    (score(sampling_params=[1]), "grader.sampling_params"),
    (score(pass_threshold="high"), "grader.pass_threshold"),
])
def test_score_model_validation_names_the_field(grader, param):
    with pytest.raises(GraderError) as err:
        validate(grader, context="run")
    assert err.value.param == param, err.value.message


def test_score_model_accepts_the_spec_forms():
    validate(score(range=[-5, 5.5], pass_threshold=0.5, sampling_params={
        "temperature": None, "seed": 3, "top_p": 1, "max_completions_tokens": 8, "reasoning_effort": None}), context="run")
    validate(score(input=[{"type": "message", "role": "system", "content": {"type": "input_text", "text": "a"}},
                          {"role": "assistant", "content": ["b", {"type": "output_text", "text": "c"}]}]), context="eval")


@pytest.mark.parametrize("grader, param", [
    (label(labels=[]), "grader.labels"),
    (label(labels=["a", 1]), "grader.labels[1]"),
    (label(passing_labels=["positive", "great"]), "grader.passing_labels[1]"),
    (label(passing_labels="positive"), "grader.passing_labels"),
    ({k: v for k, v in label().items() if k != "labels"}, "grader.labels"),
    (label(input=[{"role": "robot", "content": "x"}]), "grader.input[0].role"),
])
def test_label_model_validation_names_the_field(grader, param):
    with pytest.raises(GraderError) as err:
        validate(grader, context="eval")
    assert err.value.param == param, err.value.message


@pytest.mark.parametrize("context", ["run", "rft"])
def test_label_model_is_refused_at_the_top_level_of_run_and_rft(context):
    with pytest.raises(GraderError) as err:
        validate(label(), context=context)
    assert err.value.param == "grader.type" and "label_model" in err.value.message
    validate(label(), context="eval", param="testing_criteria[0]")
    # Inside a multi it is allowed, in each of the forms multi accepts for `graders`.
    for graders in ({"mood": label()}, [label()], label()):
        validate({"type": "multi", "name": "m", "graders": graders, "calculate_output": "sentiment" if
                  not isinstance(graders, dict) or "type" in graders else "mood"}, context=context)


def test_label_model_inside_multi_enters_as_one_or_zero():
    exact = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "good",
             "operation": "eq"}
    grader = {"type": "multi", "name": "m", "graders": {"mood": label(), "exact": exact},
              "calculate_output": "0.75 * mood + 0.25 * exact"}
    out = grade_batch(grader, rows("good", "bad"), FixedJudge('{"result": "positive"}', '{"result": "negative"}'))
    assert [r.sub_rewards for r in out] == [{"mood": 1.0, "exact": 1.0}, {"mood": 0.0, "exact": 0.0}]
    assert [r.reward for r in out] == [1.0, 0.0]
    assert out[0].token_usage["gpt-4o-mini"]["total_tokens"] == 10


# --- parsing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ('{"result": 0.25, "steps": []}', 0.25),
    ('Sure! ```json\n{"steps": [{"description": "a", "conclusion": "b"}], "result": 3}\n```', 3.0),
    ('{"result": "0.5"}', 0.5),
    ('{"result": "good", "steps": [{"description": "step 1"}]}', None),  # a result that is not a number
    ('{"result": true}', None),
    ('{"result": NaN}', None),
    ("I would give it 7.5 out of 10", 7.5),
    ("score: -2e-1", -0.2),
    ("{not json} 4", 4.0),
    ("no number here", None),
    ("", None),
])
def test_parse_score(text, value):
    got = parse_score(text)
    assert got == value if value is None else math.isclose(got, value)


@pytest.mark.parametrize("text, got", [
    ('{"result": "Positive"}', "positive"),
    ('{"result": "great"}', None),
    ("negative", "negative"),
    ('  "NEUTRAL".  ', "neutral"),
    ("I think this is negative, not positive.", "negative"),
    ("unpositively", None),
    ("", None),
])
def test_parse_label(text, got):
    assert parse_label(text, ["positive", "negative", "neutral"]) == got


# --- grading with a fixed judge ---------------------------------------------------------------
def test_score_model_clamps_to_range_and_asks_once_for_the_batch():
    judge = FixedJudge('{"result": 5}', '{"result": -3}', "0.4", "nothing")
    out = grade_batch(score(range=[0, 1], sampling_params={"max_completions_tokens": 9}), rows("a", "b", "c", "d"), judge)
    assert [r.reward for r in out] == [1.0, 0.0, 0.4, 0.0]
    assert [r.errors["model_grader_parse_error"] for r in out] == [False, False, False, True]
    assert len(judge.calls) == 1
    model, convs, sampling, fmt = judge.calls[0]
    assert model == "gpt-4o-mini" and len(convs) == 4
    assert sampling == {"temperature": 0.0, "top_p": 1.0, "seed": None, "max_completion_tokens": 9}
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["result", "steps"]
    system, user = convs[0]
    assert system["role"] == "system" and '"result"' in system["content"] and "from 0 to 1" in system["content"]
    assert user == {"role": "user", "content": "Rate: a (ref x)"}
    run = out[0].to_run_response()
    assert run["model_grader_token_usage_per_model"] == {"gpt-4o-mini": {**USAGE, "cached_tokens": 0}}
    assert run["metadata"]["token_usage"] == 10 and run["metadata"]["type"] == "score_model"
    assert out[3].sample["output"] == [{"role": "assistant", "content": "nothing"}] and out[3].sample["input"] == convs[3]


def test_score_model_other_range_and_the_spec_spelling_of_max_tokens():
    judge = FixedJudge('{"result": 7}')
    (r,) = grade_batch(score(range=[1, 5], sampling_params={"max_completion_tokens": 4, "temperature": 0.7, "seed": 1}), rows("a"), judge)
    assert r.reward == 5.0
    assert judge.calls[0][2] == {"temperature": 0.7, "top_p": 1.0, "seed": 1, "max_completion_tokens": 4}
    assert "from 1 to 5" in judge.calls[0][1][0][0]["content"]


def test_instruction_joins_the_graders_own_system_message():
    judge = FixedJudge('{"result": "positive"}')
    (r,) = grade_batch(label(), rows("lovely"), judge)
    conv = judge.calls[0][1][0]
    assert [m["role"] for m in conv] == ["developer", "user"]
    assert conv[0]["content"].startswith("Classify.\n\n") and '"positive", "negative", "neutral"' in conv[0]["content"]
    assert conv[1]["content"] == "lovely"
    assert r.label == "positive" and r.reward == 1.0 and passed(label(), r)


def test_label_model_rewards_passing_labels_only():
    judge = FixedJudge("positive", "Negative.", "banana")
    out = grade_batch(label(), rows("a", "b", "c"), judge)
    assert [(r.label, r.reward) for r in out] == [("positive", 1.0), ("negative", 0.0), (None, 0.0)]
    assert [passed(label(), r) for r in out] == [True, False, False]
    assert out[2].errors["model_grader_parse_error"] and not out[1].errors["model_grader_parse_error"]


def test_a_missing_variable_is_the_rows_error_and_is_not_sent():
    judge = FixedJudge('{"result": 1}')
    pairs = [(make_sample("a"), {"ref": "r"}), (make_sample("b"), {})]
    out = grade_batch(score(), pairs, judge)
    assert out[0].reward == 1.0 and out[1].reward == 0.0 and out[1].errors["invalid_variable_error"]
    assert len(judge.calls[0][1]) == 1 and out[1].sample is None and out[1].token_usage == {}


def test_nothing_renders_no_judge_call():
    judge = FixedJudge('{"result": 1}')
    (r,) = grade_batch(score(), [(make_sample("a"), {})], judge)
    assert judge.calls == [] and r.errors["invalid_variable_error"]


@pytest.mark.parametrize("judge, details", [
    (FixedJudge(error="model_not_found: no such model"), "model_not_found: no such model"),
    (FixedJudge(raises=RuntimeError("engine down")), "the judge failed: RuntimeError: engine down"),
    (None, "no judge model is available to this grading"),
])
def test_judge_failures_are_server_errors_of_the_row(judge, details):
    for grader in (score(), label()):
        (r,) = grade_batch(grader, rows("a"), judge)
        assert r.reward == 0.0 and r.label is None
        assert r.errors["model_grader_server_error"] is True and r.errors["model_grader_server_error_details"] == details
        assert not r.errors["model_grader_parse_error"] and r.token_usage == {}
        assert r.to_run_response()["metadata"]["token_usage"] is None


def test_a_judge_answering_the_wrong_count_fails_every_row():
    class Short(FixedJudge):
        def __call__(self, model, conversations, sampling, response_format=None):
            return super().__call__(model, conversations[:1], sampling, response_format)

    out = grade_batch(score(), rows("a", "b"), Short('{"result": 1}'))
    assert all(r.errors["model_grader_server_error"] for r in out)
    assert "answered 1 of 2" in out[0].errors["model_grader_server_error_details"]


# --- the real serve judge ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def serve_judge(tmp_path_factory):
    from tunery.serve.judge import ServeJudge
    from tunery.serve.registry import ModelRegistry
    from tunery.store.context import open_store
    from tunery.store.keys import get_or_create_project
    from tunery.store.settings import load_settings

    # fp32, as the deadline test serves: in bf16 a padded batch can flip a near-tie against the
    # same prompt generated alone, which the test below compares with.
    mp = pytest.MonkeyPatch()
    mp.setenv("TUNERY_SERVE_DTYPE", "float32")
    store = open_store(load_settings(tmp_path_factory.mktemp("judge") / "home"))
    with store.db.session_scope() as s:
        project = get_or_create_project(s, "p").id
    registry = ModelRegistry()
    yield ServeJudge(store, registry, project)
    registry.close()
    store.close()
    mp.undo()


def test_score_model_through_the_serve_judge_with_the_packaged_model(serve_judge):
    from tunery.serve.chat import render_chat
    from tunery.serve.judge import model_source
    from tunery.serve.sampling import SamplingParams

    grader = score(input=[{"role": "user", "content": "Is '{{sample.output_text}}' the capital of {{item.ref}}? Reply with 1 for yes, 0 for no."}],
                   sampling_params={"max_completions_tokens": 12})
    validate(grader, context="run")
    out = grade_batch(grader, rows("Paris", "Rome", ref="France"), serve_judge)
    served = serve_judge.registry.get(model_source(serve_judge.store, serve_judge.project_id, "gpt-4o-mini"))
    for r in out:
        assert not r.errors["model_grader_server_error"], r.errors
        ids = render_chat(served.tokenizer, r.sample["input"])
        expected = served.engine.generate(ids, SamplingParams(max_tokens=12, temperature=0.0), served.tokenizer)
        assert r.sample["output"][0]["content"] == expected.text  # greedy: what the engine answers alone
        usage = r.token_usage["gpt-4o-mini"]
        assert usage == {"prompt_tokens": len(ids), "completion_tokens": expected.completion_tokens,
                         "total_tokens": len(ids) + expected.completion_tokens, "cached_tokens": 0}
        value = parse_score(expected.text)
        assert r.errors["model_grader_parse_error"] == (value is None)
        assert r.reward == (0.0 if value is None else min(max(value, 0.0), 1.0))


def test_the_serve_judge_never_raises(serve_judge):
    gone = serve_judge("no-such-model", [[{"role": "user", "content": "hi"}]] * 2, {})
    assert [r.error.split(":")[0] for r in gone] == ["model_not_found"] * 2 and all(r.text == "" for r in gone)
    too_long = serve_judge("gpt-4o-mini", [[{"role": "user", "content": "hi"}]], {"max_completion_tokens": 10**7})
    assert too_long[0].error.startswith("context_length_exceeded")
    bad = serve_judge("gpt-4o-mini", [[{"role": "user", "content": [{"type": "image_url"}]}]], {})
    assert bad[0].error.startswith("invalid_prompt")
    (r,) = grade_batch(score(model="no-such-model"), rows("a"), serve_judge)
    assert r.errors["model_grader_server_error"] and r.errors["model_grader_server_error_details"].startswith("model_not_found")


def test_a_judge_model_whose_weights_do_not_load_is_each_replys_error(serve_judge):
    import json

    home = serve_judge.store.settings.home
    bad = home / "broken-weights"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama"}')
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    (home / "models.json").write_text(json.dumps({"broken": str(bad), "gone": str(home / "no-such-folder")}))
    try:
        broken = serve_judge("broken", [[{"role": "user", "content": "hi"}]] * 2, {})
        assert [r.error for r in broken] == ["model_unavailable: the model 'broken' could not be loaded (SafetensorError)"] * 2
        gone = serve_judge("gone", [[{"role": "user", "content": "hi"}]], {})
        assert gone[0].error.startswith("model_not_found") and str(home) not in gone[0].error  # no server path
    finally:
        (home / "models.json").unlink()


def test_a_judge_model_unloaded_mid_generation_fails_its_replies(serve_judge):
    import threading
    import time

    from tunery.serve.judge import ServeJudge, model_source
    from tunery.serve.registry import ModelRegistry

    registry = ModelRegistry()  # its own engine, closed under the running generations
    judge = ServeJudge(serve_judge.store, registry, serve_judge.project_id)
    out = []
    worker = threading.Thread(target=lambda: out.extend(judge("gpt-4o-mini", [[{"role": "user", "content": "Count to 500."}]] * 2,
                                                              {"max_completion_tokens": 400})))
    worker.start()
    served = registry.get(model_source(serve_judge.store, serve_judge.project_id, "gpt-4o-mini"))  # waits for the judge's load
    deadline = time.monotonic() + 120
    while not served.engine.active and time.monotonic() < deadline:
        time.sleep(0.05)
    registry.close()
    worker.join(60)
    assert [r.error for r in out] == ["generation_failed: the model was unloaded"] * 2
