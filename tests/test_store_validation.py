"""The upload check of `fine-tune` files (`tunery.data.validate` behind `tunery.store.validation`):
prepare's record checks, the first bad line and field named, good files pass, memory bounded."""

import io
import json
import tracemalloc

import pytest

from tunery.data.validate import first_error
from tunery.store.validation import problem


def stream(*records) -> io.BytesIO:
    return io.BytesIO(b"".join((r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()) + b"\n" for r in records))


def check(*records) -> str | None:
    return problem(stream(*records))


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
LEGACY = {"prompt": "2+2 ->", "completion": " 4\n"}
DPO = {
    "input": {"messages": [{"role": "user", "content": "hi"}]},
    "preferred_output": [{"role": "assistant", "content": "hello"}],
    "non_preferred_output": [{"role": "assistant", "content": "go away"}],
}


def test_good_files_pass():
    assert check(CHAT, CHAT) is None
    assert check(LEGACY, LEGACY, "") is None
    assert check(DPO) is None
    assert check({"prompt": None, "completion": " open-ended"}, {"completion": " text"}) is None  # empty prompts
    assert check({**LEGACY, "id": 7}) is None  # other keys are ignored, as the trainer ignores them
    assert problem(io.BytesIO(b"\xef\xbb\xbf" + json.dumps(CHAT).encode())) is None  # a BOM, no final newline


def test_the_first_bad_line_is_named():
    assert check(CHAT, "{not json", CHAT) == "Line 2: invalid JSON (Expecting property name enclosed in double quotes at column 2)"
    assert check(CHAT, [1, 2]) == "Line 2: the line must be a JSON object, not list"
    assert check(CHAT, b"\xff\xfe") == "Line 2: the line is not valid UTF-8 (byte 1 of the line); save the file as UTF-8"
    assert check(CHAT, b'{"a": "\x00"}') == "Line 2: the line contains NUL bytes; this looks like a binary file"


@pytest.mark.parametrize(
    ("bad", "details"),
    [
        ({"prompt": "a"}, "Line 3, completion: the example has no `completion`: nothing to train on (`tunery prepare` removes such rows)"),
        ({"prompt": "a", "completion": None}, "Line 3, completion: the example has no `completion`: nothing to train on (`tunery prepare` removes such rows)"),
        ({"prompt": "a", "completion": ""}, "Line 3, completion: the example has an empty `completion`: nothing to train on (`tunery prepare` removes such rows)"),
        ({"prompt": ["a"], "completion": "b"}, "Line 3, prompt: `prompt` must be a string, not list"),
        ({"prompt": "a", "completion": 3}, "Line 3, completion: `completion` must be a string, not int"),  # prepare converts; nothing converts an upload
        ({"prompt": {"x": 1}, "completion": "b"}, "Line 3, prompt: `prompt` must be a string, not dict"),
        ({"prompt": True, "completion": "b"}, "Line 3, prompt: `prompt` must be a string, not bool"),
    ],
)
def test_broken_legacy_records(bad, details):
    assert check(LEGACY, LEGACY, bad, LEGACY) == details


def test_chat_and_dpo_records_get_the_prepare_checks():
    no_assistant = {"messages": [{"role": "user", "content": "hi"}]}
    assert check(CHAT, CHAT, no_assistant) == "Line 3, messages: the example has no assistant message"
    bad_role = {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
    assert check(bad_role) == (
        "Line 1, messages[0].role: unrecognized role 'robot' (expected one of system, user, assistant, tool, function)"
    )
    no_content = {"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}
    assert check(CHAT, no_content) == "Line 2, messages[0].content: the message has no content"
    assert check(CHAT, {**CHAT, "topic": "x"}) is None  # a warning in prepare, not an error
    assert check(DPO, {**DPO, "preferred_output": []}) == "Line 2, preferred_output: preferred_output must be a list of exactly one assistant message"
    assert check({k: v for k, v in DPO.items() if k != "input"}) == "Line 1, input: the example has no input"


def test_formats_cannot_be_mixed_and_must_be_known():
    assert check(CHAT, LEGACY) == "Line 2: a prompt/completion example in a file that starts with chat examples (line 1); use one format per file"
    assert check({"text": "x"}).startswith("Line 1: unknown format: expected 'messages' (chat)")
    assert check({**CHAT, "completion": "x"}).startswith("Line 1, messages: the record has the keys of more than one format")


def test_empty_file():
    expected = "The file has no examples: expected one JSON object per line"
    assert check() == expected
    assert problem(io.BytesIO(b"")) == expected
    assert problem(io.BytesIO(b"\n  \n\r\n")) == expected


def test_a_line_longer_than_the_limit_is_refused_without_being_read_whole():
    long = json.dumps({"prompt": "x" * 5000, "completion": " y"}).encode()
    f = io.BytesIO(json.dumps(LEGACY).encode() + b"\n" + long + b"\n")
    found = first_error(f, max_line_bytes=1000)
    assert (found.line, found.message) == (2, "the line is longer than 1,000 bytes, the longest line a file may have")
    assert first_error(io.BytesIO(long), max_line_bytes=len(long)) is None  # exactly the limit is fine


def test_memory_is_bounded_by_a_line_not_the_file():
    """40 MB of records are checked holding one line at a time (a whole-file read would hold 40 MB)."""

    class Records(io.RawIOBase):  # a 40 MB file that never exists in memory at once
        def __init__(self, n):
            self.line, self.left = (json.dumps({"prompt": "p" * 900 + " ->", "completion": " c"}) + "\n").encode(), n
            self.buf = b""

        def readable(self):
            return True

        def readinto(self, b):
            while len(self.buf) < len(b) and self.left:
                self.buf += self.line
                self.left -= 1
            n = min(len(b), len(self.buf))
            b[:n], self.buf = self.buf[:n], self.buf[n:]
            return n

    source = io.BufferedReader(Records(40_000))
    tracemalloc.start()
    try:
        assert first_error(source) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, peak


def test_dpo_files_with_the_older_key_names_pass_and_both_spellings_are_refused():
    old = {"input": DPO["input"], "preferred_completion": DPO["preferred_output"], "non_preferred_completion": DPO["non_preferred_output"]}
    assert check(old, old) is None
    assert check(DPO, old) is None  # one format (DPO), either spelling per line
    assert check(old, {**old, "preferred_output": DPO["preferred_output"]}) == (
        "Line 2, preferred_completion: the example has both preferred_output and its older name preferred_completion; keep one")
