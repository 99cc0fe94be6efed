"""Reading eval files, inferring the task, scoring answers."""

import json

import pytest

from tunery.eval.dataset import EvalError, load_examples
from tunery.eval.scoring import score_answers
from tunery.eval.tasks import infer_task


def write(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_chat_and_completion_records(tmp_path):
    path = write(tmp_path, [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "4"}]},
        "",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": "1"}]},
    ])
    ex = load_examples(path)
    assert [e.line for e in ex] == [1, 3]
    assert ex[0].prompt == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}] and ex[0].reference == "4"
    assert ex[1].prompt == [{"role": "user", "content": "ab"}]
    assert load_examples(path, limit=1) == ex[:1]
    legacy = load_examples(write(tmp_path, [{"prompt": "p ->", "completion": " 5"}], "l.jsonl"))
    assert legacy[0].prompt == "p ->" and legacy[0].reference == " 5" and legacy[0].as_record() == {"prompt": "p ->", "completion": " 5"}


@pytest.mark.parametrize("row,message", [
    ("{oops", "line 1: not valid JSON"),
    ('[1]', "line 1: the line must be a JSON object, not list"),
    ({"text": "x"}, "line 1: unknown format: expected 'messages' (chat), 'prompt'/'completion' (prompt/completion)"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "prompt": "p"}, "line 1: the record has the keys of more than one format"),
    ({"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []}, "line 1: preference (DPO) records cannot be evaluated"),
    ({"messages": [{"role": "user", "content": "u"}]}, "line 1: messages[0]: the last message must be the assistant's reference answer (role 'assistant', got 'user')"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "line 1: 'messages' has no prompt before the assistant's answer"),
    ({"messages": [{"content": "u"}, {"role": "assistant", "content": "a"}]}, "line 1: messages[0] needs a 'role'"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": 3}]}, "line 1: messages[1]: 'content' must be a string"),
    ({"prompt": "p"}, "line 1: 'completion' must be a string (the reference answer)"),
    ({"prompt": 1, "completion": "c"}, "line 1: 'prompt' must be a string"),
])
def test_bad_records_name_file_line_and_field(tmp_path, row, message):
    path = write(tmp_path, [row])
    with pytest.raises(EvalError) as err:
        load_examples(path)
    assert str(err.value).startswith(f"{path}, {message}")


def test_file_errors(tmp_path):
    with pytest.raises(EvalError, match="missing.jsonl: file not found"):
        load_examples(tmp_path / "missing.jsonl")
    with pytest.raises(EvalError, match="the file has no examples"):
        load_examples(write(tmp_path, [""]))
    mixed = write(tmp_path, [{"prompt": "a", "completion": "b"}, {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}])
    with pytest.raises(EvalError, match=r"line 2: a chat example in a file that starts with prompt/completion examples \(line 1\)"):
        load_examples(mixed)


def test_infer_task():
    assert infer_task([" 1", " 2", " 1", " 2"]).to_dict() == {"task": "classification", "labels": ["1", "2"], "ordinal": True}
    assert infer_task(["pos", "neg", "pos", "neg"]).to_dict() == {"task": "classification", "labels": ["neg", "pos"], "ordinal": False}
    assert infer_task(["1.5", "2.25", "3.0"]).name == "regression"
    assert infer_task(["a long free text answer here", "another one entirely", "third"]).name == "generation"
    assert infer_task(["1", "2"], task="generation").name == "generation"
    t = infer_task(["neutral"], labels=["negative", "neutral", "positive"])
    assert t.labels == ["negative", "neutral", "positive"] and not t.ordinal
    with pytest.raises(ValueError, match="references not in --labels: 'x'"):
        infer_task(["x"], labels=["a"])
    with pytest.raises(ValueError, match="unknown task 'foo'"):
        infer_task(["x"], task="foo")
    with pytest.raises(ValueError, match="regression needs numeric references, got 'x'"):
        infer_task(["x"], task="regression")


def test_score_classification_with_ordinal_labels():
    task = infer_task([" 1", " 2", " 3", " 3"], task="classification")
    r = score_answers([" 1", " 2", " 3", " 3"], ["1", "3 stars", "three", "3"], task)
    assert r["predictions"] == ["1", "3", None, "3"]
    assert r["accuracy"] == 0.5 and r["invalid"] == 1
    assert r["mae"] == pytest.approx(1 / 3)  # |3-2| over the three valid answers
    assert r["exact_match"] == 0.5  # "1" and "3" equal the stripped references
    assert r["normalized_match"] == 0.5


def test_score_generation_and_regression():
    task = infer_task(["the cat sat", "a dog ran home"], task="generation")
    r = score_answers(["the cat sat", "a dog ran home"], ["the cat sat", "dog ran"], task)
    assert r["exact_match"] == 0.5 and r["rouge_l"] == pytest.approx((1 + 2 * (1 * 0.5) / 1.5) / 2)
    assert r["token_f1"] == pytest.approx((1 + 0.8) / 2)
    reg = score_answers(["1.5", "2"], ["about 2", "n/a"], infer_task(["1.5", "2"], task="regression"))
    assert reg["mae"] == 0.5 and reg["invalid"] == 1
