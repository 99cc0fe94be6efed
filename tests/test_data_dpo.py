import pytest

from tunery.data.dpo import check_dpo_record
from tunery.data.findings import Level

USER = {"role": "user", "content": "Capital of France?"}
GOOD = [{"role": "assistant", "content": "Paris."}]
BAD = [{"role": "assistant", "content": "Lyon."}]
VALID = {"input": {"messages": [USER]}, "preferred_output": GOOD, "non_preferred_output": BAD}


def found(record, line=5):
    return [(f.code, f.field, f.line) for f in check_dpo_record(record, line)]


def test_valid_examples_have_no_findings():
    assert check_dpo_record(VALID, 1) == []
    with_tools = {
        "input": {
            "messages": [{"role": "system", "content": "s"}, USER, {"role": "assistant", "content": "?"}, USER],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "parallel_tool_calls": True,
        },
        "preferred_output": GOOD,
        "non_preferred_output": BAD,
    }
    assert check_dpo_record(with_tools, 1) == []


@pytest.mark.parametrize(
    "record, expected",
    [
        ("x", [("data_type", None, 5)]),
        ({}, [("dpo_missing_key", "input", 5), ("dpo_missing_key", "preferred_output", 5), ("dpo_missing_key", "non_preferred_output", 5)]),
        ({**VALID, "input": [USER]}, [("dpo_invalid_input", "input", 5)]),
        ({**VALID, "input": {"msgs": [USER]}}, [("missing_messages_list", "input.messages", 5)]),
        ({**VALID, "input": {"messages": []}}, [("empty_messages", "input.messages", 5)]),
        # the chat message checks, reused with the input. prefix
        ({**VALID, "input": {"messages": [{"role": "human", "content": "x"}]}}, [("unrecognized_role", "input.messages[0].role", 5)]),
        ({**VALID, "input": {"messages": [{"role": "user"}]}}, [("missing_content", "input.messages[0].content", 5)]),
        ({**VALID, "input": {"messages": [USER], "tools": {}}}, [("invalid_tools", "input.tools", 5)]),
        (
            {**VALID, "input": {"messages": [USER], "parallel_tool_calls": 1}},
            [("invalid_parallel_tool_calls", "input.parallel_tool_calls", 5)],
        ),
        (
            {**VALID, "input": {"messages": [USER, GOOD[0]]}},
            [("dpo_input_ends_with_assistant", "input.messages[1].role", 5)],
        ),
        ({**VALID, "preferred_output": GOOD[0]}, [("dpo_invalid_output", "preferred_output", 5)]),
        ({**VALID, "preferred_output": []}, [("dpo_invalid_output", "preferred_output", 5)]),
        ({**VALID, "non_preferred_output": BAD + BAD}, [("dpo_invalid_output", "non_preferred_output", 5)]),
        (
            {**VALID, "preferred_output": [{"role": "user", "content": "Paris."}]},
            [("dpo_output_not_assistant", "preferred_output[0].role", 5)],
        ),
        (
            {**VALID, "preferred_output": [{"role": "assistant", "content": 42}]},
            [("content_not_string", "preferred_output[0].content", 5)],
        ),
        (
            {**VALID, "non_preferred_output": [{"role": "assistant"}]},
            [("missing_content", "non_preferred_output[0].content", 5)],
        ),
        (
            {
                **VALID,
                "non_preferred_output": [
                    {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
                ],
            },
            [("missing_content", "non_preferred_output[0].content", 5)],
        ),
        ({**VALID, "non_preferred_output": ["Lyon."]}, [("message_data_type", "non_preferred_output[0]", 5)]),
        (
            {**VALID, "preferred_output": [{"role": "assistant", "content": "x", "score": 1}]},
            [("message_unrecognized_key", "preferred_output[0].score", 5)],
        ),
    ],
)
def test_errors(record, expected):
    assert found(record) == expected


def test_identical_outputs_and_extra_keys_are_warnings():
    findings = check_dpo_record({**VALID, "non_preferred_output": GOOD, "id": 3}, 8)
    assert [(f.code, f.level, f.field, f.line) for f in findings] == [
        ("example_unrecognized_key", Level.WARNING, "id", 8),
        ("dpo_identical_outputs", Level.WARNING, "non_preferred_output", 8),
    ]


OLD = {"input": {"messages": [USER]}, "preferred_completion": GOOD, "non_preferred_completion": BAD}


def test_the_older_key_names_are_accepted_and_findings_name_them():
    from tunery.data.dpo import preference_outputs
    from tunery.data.formats import DPO, record_format

    assert check_dpo_record(OLD, 1) == []
    assert record_format(OLD) == DPO
    assert preference_outputs(OLD) == (GOOD[0], BAD[0])
    mixed = {"input": OLD["input"], "preferred_output": GOOD, "non_preferred_completion": BAD}
    assert check_dpo_record(mixed, 1) == [] and preference_outputs(mixed) == (GOOD[0], BAD[0])
    assert found({**OLD, "non_preferred_completion": [{"role": "user", "content": "x"}]}) == [
        ("dpo_output_not_assistant", "non_preferred_completion[0].role", 5)
    ]
    assert found({**OLD, "preferred_completion": BAD}) == [("dpo_identical_outputs", "non_preferred_completion", 5)]


def test_an_output_under_both_names_is_refused():
    both = {**VALID, "preferred_completion": BAD}
    assert found(both, 7) == [("dpo_duplicate_key", "preferred_completion", 7)]
