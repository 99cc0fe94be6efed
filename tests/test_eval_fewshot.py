import pytest

from tunery.eval.dataset import CHAT, COMPLETION, EvalError, Example
from tunery.eval.fewshot import few_shot_prompt, select_shots

SYSTEM = {"role": "system", "content": "Rate 0-4."}


def chat(text, label, line=0):
    return Example(line, CHAT, [SYSTEM, {"role": "user", "content": text}], label)


POOL = [chat(f"t{i}", str(i % 3), i) for i in range(9)]  # labels 0,1,2 three times each


def test_chat_shots_go_between_system_and_question():
    shots = [chat("good", "4"), chat("bad", "0")]
    prompt = few_shot_prompt(chat("meh", "2"), shots)
    assert prompt == [
        SYSTEM,
        {"role": "user", "content": "good"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "bad"}, {"role": "assistant", "content": "0"},
        {"role": "user", "content": "meh"},
    ]


def test_no_shots_is_the_plain_prompt():
    ex = chat("meh", "2")
    assert few_shot_prompt(ex, []) == ex.prompt


def test_completion_shots_are_concatenated_texts():
    shots = [Example(1, COMPLETION, "Great!\n\n###\n\n", " 5"), Example(2, COMPLETION, "Awful\n\n###\n\n", " 1")]
    prompt = few_shot_prompt(Example(3, COMPLETION, "Fine\n\n###\n\n", " 3"), shots)
    assert prompt == "Great!\n\n###\n\n 5\n\nAwful\n\n###\n\n 1\n\nFine\n\n###\n\n"


def test_select_shots_balanced_over_labels_and_seeded():
    shots = select_shots(POOL, 3, labels=["0", "1", "2"], seed=1)
    assert sorted(s.reference for s in shots) == ["0", "1", "2"]
    assert select_shots(POOL, 3, labels=["0", "1", "2"], seed=1) == shots
    five = select_shots(POOL, 5, labels=["0", "1", "2"], seed=1)
    assert sorted(s.reference for s in five) in (["0", "0", "1", "1", "2"], ["0", "1", "1", "2", "2"], ["0", "0", "1", "2", "2"])
    assert len({s.line for s in five}) == 5


def test_select_shots_unbalanced_and_errors():
    assert len(select_shots(POOL, 4, seed=0)) == 4
    assert select_shots(POOL, 0) == []
    with pytest.raises(EvalError, match="--few-shot 10 needs at least 10 examples in the few-shot file, it has 9"):
        select_shots(POOL, 10)
    with pytest.raises(EvalError, match="--few-shot must be 0 or more"):
        select_shots(POOL, -1)


def test_mixed_formats_refused():
    with pytest.raises(EvalError, match="the few-shot file holds completion records but the data is chat records"):
        few_shot_prompt(chat("x", "1"), [Example(1, COMPLETION, "a", "b")])
