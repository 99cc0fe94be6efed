"""The prepare pipeline as a library: record shapes, conversions, chat/DPO checks, splits, tokens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunery.data.findings import Level
from tunery.data.prepare import PrepareOptions, UsageError, prepare
from tunery.data.tokens import TokenCounter

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_model(folder: Path, context: int = 64) -> Path:
    """A real Hugging Face model folder's tokenizer files: one token per word or punctuation run."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<eos>", "<|im_start|>", "<|im_end|>"])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "chat_template": CHAT_TEMPLATE}))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": context}))
    return folder


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(i: int, system: bool = True) -> dict:
    messages = [{"role": "system", "content": "be brief"}] if system else []
    messages += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i} here"}]
    return {"messages": messages}


def written(report) -> list[list[dict]]:
    return [[json.loads(x) for x in Path(p).read_text(encoding="utf-8").splitlines()] for p in report.outputs]


def test_chat_file_checks_dedup_and_writes_shuffled(tmp_path):
    rows = [chat(i) for i in range(20)] + [chat(3), chat(7, system=False)]
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "c.jsonl", rows), out_dir=tmp_path))
    assert report.shape == report.target == "chat" and report.usable
    found = {f.code: f for f in report.findings}
    assert found["duplicate_examples"].count == 1 and found["duplicate_examples"].line == 21
    assert found["missing_system_message"].line == 22
    [out] = written(report)
    assert len(out) == 21 and out != rows[:21]  # deduplicated and shuffled
    assert sorted(map(json.dumps, out)) == sorted(map(json.dumps, rows[:20] + [rows[21]]))
    assert report.outputs == [str(tmp_path / "c_prepared.jsonl")]


def test_chat_errors_name_line_and_field_and_nothing_is_written(tmp_path):
    rows = [chat(0), {"messages": [{"role": "user", "content": "hi"}]}, {"messages": [{"role": "robot", "content": "x"}]}]
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "c.jsonl", rows), out_dir=tmp_path))
    errors = {f.code: f for f in report.errors}
    assert errors["example_missing_assistant_message"].line == 2
    assert errors["unrecognized_role"].line == 3 and errors["unrecognized_role"].field == "messages[0].role"
    assert report.outputs == [] and not report.usable
    assert not list(tmp_path.glob("*_prepared*"))


def test_dpo_file(tmp_path):
    def dpo(i):
        return {
            "input": {"messages": [{"role": "user", "content": f"q{i}"}]},
            "preferred_output": [{"role": "assistant", "content": f"good {i}"}],
            "non_preferred_output": [{"role": "assistant", "content": f"bad {i}"}],
        }

    report = prepare(PrepareOptions(path=jsonl(tmp_path / "d.jsonl", [dpo(i) for i in range(12)]), out_dir=tmp_path))
    assert report.shape == "dpo" and report.usable and report.n_examples == 12
    bad = dpo(0)
    del bad["preferred_output"]
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "e.jsonl", [dpo(1), bad]), out_dir=tmp_path))
    assert [e.line for e in report.errors] == [2] and not report.usable


def test_mixed_shapes_name_the_first_line_that_differs(tmp_path):
    rows = [chat(0), chat(1), {"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "m.jsonl", rows), out_dir=tmp_path))
    [e] = report.errors
    assert e.code == "mixed_format" and e.line == 3 and e.count == 2 and e.lines == [3, 4]
    assert e.message == "a prompt/completion example in a file that starts with chat examples (line 1); use one format per file"


def test_broken_lines_and_non_objects_are_errors_with_lines(tmp_path):
    rows = [{"prompt": "a", "completion": " b"}, '{"prompt": "a", "completion":', "[1, 2]", '"text"']
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "b.jsonl", rows), out_dir=tmp_path))
    errors = {f.code: f for f in report.errors}
    assert errors["invalid_json"].line == 2 and "invalid JSON" in errors["invalid_json"].message
    assert errors["data_type"].lines == [3, 4] and "not list" in errors["data_type"].message
    assert report.outputs == []


def test_templates_from_csv_to_chat_with_system_and_where(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("title,body,stars,lang\n" + "".join(f"T{i},body {i},{i % 5 + 1},{'en' if i % 2 else 'de'}\n" for i in range(40)))
    report = prepare(
        PrepareOptions(
            path=src, prompt=r"{title}\n{body}", completion="{stars}", system="Rate 1-5.", to="chat", where="lang == 'en'",
            out_dir=tmp_path, split=True,
        )
    )
    assert report.n_filtered == 20 and report.n_read == 20 and report.target == "chat"
    assert report.task is None and report.classification["n_classes"] == 5
    assert report.n_valid == 4  # asked for: the legacy size rule, stratified (5 classes x 4 answers)
    valid_answers = sorted(r["messages"][2]["content"] for r in written(report)[1])
    assert len(set(valid_answers)) == 4  # 0.8 of an example per class: four classes get one each
    train, valid = written(report)
    first = sorted(train + valid, key=lambda r: r["messages"][1]["content"])[0]
    assert first == {
        "messages": [
            {"role": "system", "content": "Rate 1-5."},
            {"role": "user", "content": "T1\nbody 1"},
            {"role": "assistant", "content": "2"},
        ]
    }


def test_legacy_file_converted_to_chat(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a {i}"} for i in range(12)]
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "l.jsonl", rows), to="chat", out_dir=tmp_path))
    assert report.shape == "completion" and report.target == "chat"
    [out] = written(report)
    assert {"messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a 0"}]} in out
    assert not any(f.code == "missing_prompt_separator" for f in report.findings)  # legacy-only checks


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"system": "x"}, "--system needs --to chat"),
        ({"to": "json"}, "--to must be 'chat' or 'completion'"),
        ({"prompt": "{q}"}, "--prompt needs --completion"),
        ({"completion": "{missing}"}, "--completion: unknown column 'missing'; the columns are: messages"),
        ({"where": "lang == 'en'"}, "--where: unknown column 'lang'"),
        ({"where": "open('x')"}, "Call is not allowed"),
        ({"to": "completion"}, "cannot convert chat examples to completion examples"),
        ({"valid_fraction": 1.5}, "--valid-fraction must be between 0 and 1"),
    ],
)
def test_usage_errors(tmp_path, kw, message):
    src = jsonl(tmp_path / "c.jsonl", [chat(0)])
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        prepare(PrepareOptions(path=src, out_dir=tmp_path, **kw))
    assert e.value.exit_code == 2


def test_split_options(tmp_path):
    rows = [chat(i) for i in range(50)]
    src = jsonl(tmp_path / "c.jsonl", rows)
    report = prepare(PrepareOptions(path=src, out_dir=tmp_path, valid_fraction=0.2, seed=1))
    assert (report.n_train, report.n_valid) == (40, 10)
    assert report.outputs == [str(tmp_path / "c_prepared_train.jsonl"), str(tmp_path / "c_prepared_valid.jsonl")]
    again = prepare(PrepareOptions(path=src, out_dir=tmp_path / "again", valid_fraction=0.2, seed=1))
    assert written(again) == written(report)  # seeded
    other = prepare(PrepareOptions(path=src, out_dir=tmp_path / "other", valid_fraction=0.2, seed=2))
    assert written(other) != written(report)
    legacy = prepare(PrepareOptions(path=src, out_dir=tmp_path / "legacy", split=True))
    assert (legacy.n_train, legacy.n_valid) == (40, 10)  # max(n - 1000, int(0.8 n))
    classes = [{"prompt": f"t{i}", "completion": " yes" if i % 2 else " no"} for i in range(30)]
    none = prepare(PrepareOptions(path=jsonl(tmp_path / "k.jsonl", classes), out_dir=tmp_path, split=False))
    assert none.n_valid == 0 and len(none.outputs) == 1


def test_outputs_next_to_the_input_by_default(tmp_path):
    src = jsonl(tmp_path / "n.jsonl", [chat(i) for i in range(12)])
    report = prepare(PrepareOptions(path=src))
    assert report.outputs == [str(tmp_path / "n_prepared.jsonl")]


def test_txt_is_open_ended_generation(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("".join(f"Story number {i}. It was fine\n" for i in range(12)) + "\n")
    report = prepare(PrepareOptions(path=src, out_dir=tmp_path))
    assert report.task == "open-ended generation"
    found = {f.code for f in report.findings}
    assert "missing_prompt_separator" not in found and "empty_completion" in found
    [out] = written(report)
    # like the legacy tool: the common completion prefix "Story number " goes, a leading space comes
    assert sorted(r["completion"] for r in out) == sorted(f" {i}. It was fine" for i in range(12))
    assert all(r["prompt"] == "" for r in out)


def test_xlsx_and_parquet_with_templates(tmp_path):
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    book = openpyxl.Workbook()
    book.active.append(["q", "a"])
    for i in range(12):
        book.active.append([f"question {i}", i])
    book.save(tmp_path / "x.xlsx")
    pq.write_table(pa.table({"q": [f"question {i}" for i in range(12)], "a": list(range(12))}), tmp_path / "x.parquet")
    for name in ("x.xlsx", "x.parquet"):
        report = prepare(PrepareOptions(path=tmp_path / name, prompt="{q}", completion=" {a}.", out_dir=tmp_path / f"out-{name}"))
        assert report.usable and report.n_examples == 12, name
        assert {"prompt": "question 3 ->", "completion": " 3."} in written(report)[0]


def test_token_statistics_with_the_models_tokenizer(tmp_path):
    counter = TokenCounter.from_folder(tiny_model(tmp_path / "model", context=8))
    rows = [{"prompt": "one two", "completion": " three ."}] * 1 + [
        {"prompt": "w " * k + f"x{k}", "completion": " y"} for k in range(1, 12)
    ]
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "t.jsonl", rows), out_dir=tmp_path, split=False), counter=counter)
    t = report.tokens
    # classification (2 distinct completions): " ->" is added to the prompts, nothing to completions.
    # "w ... x{k} ->" is k + 2 tokens, " y" 1, EOS 1; "one two ->" 3 + " three ." 2 + EOS 1 = 6
    totals = sorted([6] + [k + 4 for k in range(1, 12)])
    per = t["tokens_per_example"]
    assert (per["min"], per["max"], per["count"]) == (5, 15, 12)
    assert t["trained_tokens"] == 3 + 11 * 2  # completion tokens + EOS each
    assert t["context_length"] == 8
    assert t["total_tokens"] == sum(totals)
    assert t["examples_over_context"] == sum(1 for x in totals if x > 8) == 7
    assert t["billable_tokens_per_epoch"] == sum(min(x, 8) for x in totals)
    over = next(f for f in report.findings if f.code == "examples_over_context")
    assert over.lines == [6, 7, 8, 9, 10]  # input lines of the first examples over 8 tokens (k = 5..)
    est = report.estimates
    assert est["n_epochs"] == 8  # 12 examples: 100 // 12
    assert est["billed_tokens"] == t["billable_tokens_per_epoch"] * 8
    assert est["cost_usd"]["gpt-3.5-turbo"] == round(est["billed_tokens"] / 1000 * 0.008, 6)


def test_chat_tokens_count_assistant_content_and_end_of_turn(tmp_path):
    counter = TokenCounter.from_folder(tiny_model(tmp_path / "model"))
    rows = [chat(i) for i in range(12)]
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "c.jsonl", rows), out_dir=tmp_path), counter=counter)
    # per message: <|im_start|> role content... <|im_end|>; system 1+1+2+1, user 1+1+2+1, assistant 1+1+3+1
    assert report.tokens["tokens_per_example"]["min"] == report.tokens["tokens_per_example"]["max"] == 16
    assert report.tokens["trained_tokens"] == 12 * (3 + 1)


def test_examples_the_chat_template_cannot_render_are_errors_and_nothing_is_written(tmp_path):
    # A template that concatenates m['content'] (as SmolLM2's does) fails on a tool-call turn
    # without content; the trainer could not render that example either.
    folder = tiny_model(tmp_path / "model")
    concat = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": concat}))
    counter = TokenCounter.from_folder(folder)
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    tool_turn = {
        "messages": [
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "found"},
            {"role": "assistant", "content": "it is found"},
        ]
    }
    rows = [chat(i) for i in range(11)]
    rows[3:3] = [tool_turn]  # line 4
    report = prepare(PrepareOptions(path=jsonl(tmp_path / "t.jsonl", rows), out_dir=tmp_path / "out"), counter=counter)
    refused = [f for f in report.findings if f.code == "chat_template_error"]
    assert len(refused) == 1 and refused[0].level is Level.ERROR
    assert refused[0].line == 4 and refused[0].count == 1
    assert "line 4" in refused[0].message and "content" in refused[0].message
    assert report.outputs == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
