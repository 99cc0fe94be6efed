"""The upload check of `fine-tune` files: the first bad line is named, good files pass."""

import json

from tunery.store.validation import check_lines


def lines(*records) -> list[bytes]:
    return [(r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in records]


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
LEGACY = {"prompt": "2+2 ->", "completion": " 4\n"}
DPO = {
    "input": {"messages": [{"role": "user", "content": "hi"}]},
    "preferred_output": [{"role": "assistant", "content": "hello"}],
    "non_preferred_output": [{"role": "assistant", "content": "go away"}],
}


def test_good_files_pass():
    assert check_lines(lines(CHAT, CHAT)) is None
    assert check_lines(lines(LEGACY, LEGACY) + [b"\n"]) is None
    assert check_lines(lines(DPO)) is None


def test_the_first_bad_line_is_named():
    assert check_lines(lines(CHAT, "{not json", CHAT)) == "Line 2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert check_lines(lines(CHAT, [1, 2])) == "Line 2: each line must be a JSON object, got list"
    assert check_lines([b"\xff\xfe\n"]) == "Line 1: not valid UTF-8"


def test_chat_records_get_the_prepare_checks():
    no_assistant = {"messages": [{"role": "user", "content": "hi"}]}
    assert check_lines(lines(CHAT, CHAT, no_assistant)) == "Line 3: the example has no assistant message (messages)"
    bad_role = {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
    assert check_lines(lines(bad_role)).startswith("Line 1: ")
    assert "robot" in check_lines(lines(bad_role))


def test_formats_cannot_be_mixed_and_must_be_known():
    assert check_lines(lines(CHAT, LEGACY)) == "Line 2: prompt-completion record in a chat file (the first record sets the format)"
    assert check_lines(lines({"text": "x"})).startswith("Line 1: unknown format")


def test_legacy_records_need_string_fields():
    assert check_lines(lines(LEGACY, {"prompt": "a", "completion": 3})) == "Line 2: 'completion' must be a string"


def test_empty_file():
    assert check_lines([]) == "The file is empty: expected one JSON object per line"
    assert check_lines([b"\n", b"  \n"]) == "The file is empty: expected one JSON object per line"
