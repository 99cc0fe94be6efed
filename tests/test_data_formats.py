"""`tunery.data.formats`: the one rule telling chat, prompt/completion and DPO records apart."""

import pytest

from tunery.data.formats import CHAT, COMPLETION, DPO, FileFormat, FormatError, record_format
from tunery.data.findings import Level

CHAT_RECORD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
LEGACY = {"prompt": "2+2 ->", "completion": " 4"}
PAIR = {
    "input": {"messages": [{"role": "user", "content": "hi"}]},
    "preferred_output": [{"role": "assistant", "content": "hello"}],
    "non_preferred_output": [{"role": "assistant", "content": "go away"}],
}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (CHAT_RECORD, CHAT),
        ({"messages": "not even a list"}, CHAT),  # the chat checks say what is wrong with it
        ({**CHAT_RECORD, "tools": []}, CHAT),
        (LEGACY, COMPLETION),
        ({"prompt": "only a prompt"}, COMPLETION),
        ({"completion": "open-ended"}, COMPLETION),
        (PAIR, DPO),
        ({"non_preferred_output": []}, DPO),  # the DPO checks name the missing keys
        ({"input": {}, "preferred_output": []}, DPO),
    ],
)
def test_each_format(record, expected):
    assert record_format(record) == expected


def error(record, default=None) -> FormatError:
    with pytest.raises(FormatError) as err:
        record_format(record, default)
    return err.value


def test_keys_of_two_formats_are_ambiguous():
    e = error({**CHAT_RECORD, "prompt": "x"})
    assert e.code == "ambiguous_format" and e.field == "messages"
    assert e.message == (
        "the record has the keys of more than one format: 'messages' (chat) and 'prompt' (prompt/completion); "
        "use the keys of one format"
    )
    e = error({**PAIR, "completion": "y"})
    assert e.message.startswith("the record has the keys of more than one format: 'preferred_output' (preference (DPO)) and 'completion'")
    assert error({**CHAT_RECORD, **PAIR}).code == "ambiguous_format"


def test_input_alone_is_not_dpo_and_unknown_records_are_refused_unless_defaulted():
    alpaca = {"instruction": "Add", "input": "2 and 2", "output": "4"}
    e = error(alpaca)
    assert e.code == "unknown_format" and e.message.startswith("unknown format: expected 'messages' (chat)")
    assert record_format(alpaca, default=COMPLETION) == COMPLETION
    assert error({}).code == "unknown_format"


@pytest.mark.parametrize(("value", "kind"), [([1, 2], "list"), ("text", "str"), (3, "int"), (None, "NoneType")])
def test_a_record_must_be_an_object(value, kind):
    e = error(value, default=COMPLETION)  # the default is for objects without known keys only
    assert (e.code, e.message) == ("data_type", f"the line must be a JSON object, not {kind}")


def test_a_file_has_the_format_of_its_first_record():
    f = FileFormat()
    assert f.check(LEGACY, 2) == COMPLETION
    assert f.check({"prompt": "p", "completion": "c"}, 3) == COMPLETION
    with pytest.raises(FormatError) as err:
        f.check(CHAT_RECORD, 7)
    assert err.value.code == "mixed_format"
    assert err.value.message == "a chat example in a file that starts with prompt/completion examples (line 2); use one format per file"
    finding = err.value.finding(7)
    assert (finding.level, finding.line, finding.code) == (Level.ERROR, 7, "mixed_format")
    assert f.check(LEGACY, 8) == COMPLETION  # the file's format stays the first record's
    rows = FileFormat("row", default=COMPLETION)
    assert rows.check({"text": "a", "label": "b"}, 1) == COMPLETION
    with pytest.raises(FormatError, match=r"a preference \(DPO\) example in a file that starts with prompt/completion examples \(row 1\)"):
        rows.check(PAIR, 2)


def test_prepare_and_the_trainer_use_it(tmp_path):
    """The three readers agree: an ambiguous record is refused by each, with the same words."""
    import json

    from tunery.data.prepare import PrepareOptions, prepare
    from tunery.data.validate import first_error
    from tunery.train.errors import TrainError
    from tunery.train.records import read_records

    path = tmp_path / "amb.jsonl"
    path.write_text(json.dumps(CHAT_RECORD) + "\n" + json.dumps({**CHAT_RECORD, "prompt": "x"}) + "\n")
    expected = error({**CHAT_RECORD, "prompt": "x"}).message
    [e] = prepare(PrepareOptions(path=path, out_dir=tmp_path)).errors
    assert (e.code, e.line, e.message) == ("ambiguous_format", 2, expected)
    with open(path, "rb") as f:
        found = first_error(f)
    assert (found.code, found.line, found.message) == ("ambiguous_format", 2, expected)
    with pytest.raises(TrainError) as err:
        read_records(path)
    assert err.value.message == f"Training file, line 2: {expected}"  # by its role: a job's client must not learn server paths
