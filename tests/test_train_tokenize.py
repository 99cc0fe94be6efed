"""Loss masks: exactly which tokens are trained, on the tiny byte-level tokenizer (1 byte = 1 token,
special tokens 0-2, so positions can be computed from the rendered text)."""

import json
from pathlib import Path

import pytest

from tunery.train.errors import TrainError
from tunery.train.masks_view import render_plain
from tunery.train.records import PREFERENCE, Record, read_records
from tunery.train.tiny import tiny_tokenizer
from tunery.train.tokenize import Tokenizer

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def trained_positions(example):
    return [j for j, w in enumerate(example.weights) if j > 0 and w > 0]


def n_tokens(text: str) -> int:
    """Tokens of `text` under the tiny tokenizer: one per UTF-8 byte, one per special token."""
    n = 0
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        n += text.count(special)
        text = text.replace(special, "")
    return n + len(text.encode())


def test_multi_turn_chat_trains_every_assistant_turn_except_weight_zero(tok):
    record = {"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "No", "weight": 0},
        {"role": "user", "content": "R"},
        {"role": "assistant", "content": "OK", "weight": 1},
    ]}
    ex = Tokenizer(tok, 4096, 0.01).encode(Record(1, "chat", record))
    first = n_tokens(SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    second = first + n_tokens("Yo<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nNo<|im_end|>\n<|im_start|>user\nR<|im_end|>\n<|im_start|>assistant\n")
    # "Yo" + <|im_end|>, then "OK" + <|im_end|>; not the newline after <|im_end|>, not "No".
    assert trained_positions(ex) == [first, first + 1, first + 2, second, second + 1, second + 2]
    assert tok.decode([ex.input_ids[p] for p in trained_positions(ex)]) == "Yo<|im_end|>OK<|im_end|>"
    assert ex.input_ids[first + 2] == tok.convert_tokens_to_ids("<|im_end|>")
    assert len(ex) == second + 4  # ... "OK", <|im_end|>, "\n"
    assert render_plain(tok, ex).endswith("<|im_start|>assistant\n[[OK<|im_end|>]]\n")


def test_tool_calls_are_trained_as_text_when_the_template_ignores_them(tok):
    record = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    }
    ex = Tokenizer(tok, 4096, 0.01).encode(Record(1, "chat", record))
    text = tok.decode(ex.input_ids)
    # SmolLM2's template has no tools: they are described in a system message instead.
    assert text.startswith('<|im_start|>system\nYou can call these tools:\n<tools>\n{"type": "function", "function": {"name": "get_weather"')
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    start = n_tokens(text[: text.index(call)])
    after = start + n_tokens(call + "<|im_end|>")
    second = n_tokens(text[: text.index("Sunny.")])
    assert trained_positions(ex) == list(range(start, after)) + list(range(second, second + n_tokens("Sunny.<|im_end|>")))


TOOL_TEMPLATE = (  # a minimal Qwen-like template that renders tools and tool calls itself
    "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %} {{ t.function.name }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_tool_calls_use_the_templates_own_format_when_it_has_one():
    tok = tiny_tokenizer(TOOL_TEMPLATE)
    record = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "2"},
            {"role": "assistant", "content": "Two"},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    ex = Tokenizer(tok, 4096, 0.01).encode(Record(1, "chat", record))
    text = tok.decode(ex.input_ids)
    assert text.startswith("<|im_start|>system\nTOOLS: f<|im_end|>\n")
    assert 'CALL f {"x": 1}<|im_end|>' in text  # arguments given to the template as a mapping
    assert tok.decode([ex.input_ids[p] for p in trained_positions(ex)]) == 'CALL f {"x": 1}<|im_end|>Two<|im_end|>'


def test_eos_is_appended_when_the_template_closes_turns_without_a_special_token():
    plain = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    tok = tiny_tokenizer(plain)
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}
    ex = Tokenizer(tok, 4096, 0.01).encode(Record(1, "chat", record))
    assert tok.decode(ex.input_ids) == "user: a\nassistant: b<|im_end|>\nuser: c\n"
    start = n_tokens("user: a\nassistant: ")
    assert trained_positions(ex) == [start, start + 1]  # "b" and the inserted EOS


def test_prompt_completion_weights_prompt_tokens_by_prompt_loss_weight(tok):
    ex = Tokenizer(tok, 4096, 0.1).encode(Record(3, "completion", {"prompt": "Great film ->", "completion": " 4"}))
    assert tok.decode(ex.input_ids) == "Great film -> 4<|im_end|>"
    assert ex.weights[1:13] == [0.1] * 12  # "reat film ->" (the first token is never a target)
    assert ex.weights[13:] == [1.0, 1.0, 1.0]  # " ", "4", EOS
    assert ex.line == 3
    assert render_plain(tok, ex) == "G{{reat film ->}}[[ 4<|im_end|>]]"


def test_long_examples_are_truncated_from_the_end_and_counted(tok):
    records = [Record(1, "completion", {"prompt": "p", "completion": "x" * 50}), Record(2, "completion", {"prompt": "p", "completion": "ok"})]
    data = Tokenizer(tok, 20, 0.0).encode_all(records)
    assert [len(e) for e in data.examples] == [20, 4]
    assert data.examples[0].truncated and not data.examples[1].truncated
    assert data.truncated == 1


def test_no_trainable_tokens_is_an_error(tok):
    records = [Record(1, "chat", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]})]
    with pytest.raises(TrainError) as err:
        Tokenizer(tok, 4096, 0.01).encode_all(records)
    assert err.value.code == "no_trainable_tokens"
    assert err.value.param == "training_file"


def test_every_example_over_the_context_is_an_error(tok):
    records = [Record(i, "completion", {"prompt": "p" * 30, "completion": "c"}) for i in (1, 2)]
    with pytest.raises(TrainError) as err:
        Tokenizer(tok, 16, 0.0).encode_all(records)
    assert err.value.code == "all_examples_too_long"
    assert "longer than the context (16 tokens)" in err.value.message


def test_preference_records_are_recognized_and_refused_clearly(tok):
    rec = Record(4, PREFERENCE, {"input": {"messages": []}, "preferred_output": [], "non_preferred_output": []})
    with pytest.raises(TrainError) as err:
        Tokenizer(tok, 4096, 0.01).encode(rec)
    assert err.value.code == "invalid_training_file"
    assert err.value.message.startswith("line 4: preference (DPO) records need method 'dpo'")


def test_read_records_names_the_file_by_its_role_and_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n\n{oops\n")
    with pytest.raises(TrainError) as err:
        read_records(path)
    assert err.value.code == "invalid_training_file"
    assert err.value.message.startswith("Training file, line 3: not valid JSON")
    assert str(tmp_path) not in err.value.message  # a job's error is public: no server path
    path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n" + json.dumps({"messages": []}) + "\n")
    with pytest.raises(TrainError) as err:
        read_records(path)
    assert err.value.message == (
        "Training file, line 2: a chat example in a file that starts with prompt/completion examples (line 1); use one format per file"
    )
    with pytest.raises(TrainError, match="^Validation file not found$") as err:
        read_records(tmp_path / "missing.jsonl", "validation_file")
    assert err.value.code == "invalid_validation_file"


def test_the_token_store_reads_back_exactly_what_the_tokenizer_made_from_a_file_on_disk(tok, tmp_path):
    """Examples live in a temporary file in `folder`, not in memory; reading one back (alone, in a
    slice, after later appends) gives the tokenizer's own ids and weights, bit for bit."""
    import os

    records = [Record(i, "completion", {"prompt": f"review {i}: " + "good " * i, "completion": f" {i % 5}"}) for i in range(1, 40)]
    made = [Tokenizer(tok, 64, 0.1).encode(r) for r in records]
    data = Tokenizer(tok, 64, 0.1).encode_all(records, folder=tmp_path)
    data.examples._file.flush()  # its buffered tail
    fd = data.examples._file.fileno()
    assert Path(os.readlink(f"/proc/self/fd/{fd}")).parent == tmp_path  # the store's file is in the job's folder
    assert os.fstat(fd).st_size == sum(12 * len(e.input_ids) for e in made)  # int32 ids + float64 weights, nothing more
    assert len(data.examples) == len(made) and data.tokens == sum(len(e.input_ids) for e in made)
    for i in (0, 17, len(made) - 1):
        got = data.examples[i]
        assert (got.input_ids, got.weights, got.line, got.truncated) == (made[i].input_ids, made[i].weights, made[i].line, made[i].truncated)
    assert [e.input_ids for e in data.examples[3:6]] == [e.input_ids for e in made[3:6]]
    assert data.truncated == sum(e.truncated for e in made) > 0  # the longest reviews are cut to 64 tokens
    data.examples.close()
