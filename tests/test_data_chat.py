import pytest

from tunery.data.chat import ChatStats, check_chat_record
from tunery.data.findings import Level


def found(record, line=7):
    return [(f.code, f.field, f.line) for f in check_chat_record(record, line)]


SYS = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "Hi"}
ASST = {"role": "assistant", "content": "Hello."}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
TOOL_SPEC = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    "record",
    [
        {"messages": [SYS, USER, ASST]},
        {"messages": [USER, ASST, USER, {"role": "assistant", "content": "Again.", "weight": 0}, USER, ASST]},
        {"messages": [USER, {"role": "assistant", "content": "x", "weight": 1, "name": "bot"}]},
        {
            "messages": [
                USER,
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
                ASST,
            ],
            "tools": [TOOL_SPEC],
            "parallel_tool_calls": False,
        },
        {"messages": [USER, {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]},
        {"messages": [USER, {"role": "assistant", "content": "", "tool_calls": [CALL]}]},
    ],
)
def test_valid_examples_have_no_findings(record):
    assert check_chat_record(record, 1) == []


@pytest.mark.parametrize(
    "record, expected",
    [
        ([1, 2], [("data_type", None, 7)]),
        ("text", [("data_type", None, 7)]),
        ({"prompt": "a"}, [("missing_messages_list", "messages", 7), ("example_unrecognized_key", "prompt", 7)]),
        ({"messages": "hi"}, [("missing_messages_list", "messages", 7)]),
        ({"messages": []}, [("empty_messages", "messages", 7)]),
        ({"messages": [USER, "hello", ASST]}, [("message_data_type", "messages[1]", 7)]),
        ({"messages": [{"content": "x"}, ASST]}, [("message_missing_key", "messages[0].role", 7)]),
        (
            {"messages": [{"role": "user", "content": "x", "extra": 1}, ASST]},
            [("message_unrecognized_key", "messages[0].extra", 7)],
        ),
        (
            {"messages": [{"role": "human", "content": "x"}, ASST]},
            [("unrecognized_role", "messages[0].role", 7)],
        ),
        ({"messages": [{"role": "user"}, ASST]}, [("missing_content", "messages[0].content", 7)]),
        ({"messages": [USER, {"role": "assistant", "content": None}]}, [("missing_content", "messages[1].content", 7)]),
        (
            {"messages": [USER, {"role": "assistant", "content": ["x"]}]},
            [("content_not_string", "messages[1].content", 7)],
        ),
        ({"messages": [USER, {"role": "assistant", "content": 3}]}, [("content_not_string", "messages[1].content", 7)]),
        ({"messages": [SYS, USER]}, [("example_missing_assistant_message", "messages", 7)]),
        ({"messages": [USER, {**ASST, "name": 5}]}, [("name_not_string", "messages[1].name", 7)]),
        (
            {"messages": [USER, {"role": "function", "content": "12C"}, ASST]},
            [("message_missing_key", "messages[1].name", 7)],
        ),
    ],
)
def test_cookbook_errors(record, expected):
    assert found(record) == expected


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"messages": [USER, {**ASST, "weight": 0.5}]}, [("invalid_weight", "messages[1].weight", 7)]),
        ({"messages": [USER, {**ASST, "weight": True}]}, [("invalid_weight", "messages[1].weight", 7)]),
        ({"messages": [USER, {**ASST, "weight": "1"}]}, [("invalid_weight", "messages[1].weight", 7)]),
        ({"messages": [{**USER, "weight": 1}, ASST]}, [("weight_on_non_assistant", "messages[0].weight", 7)]),
        (
            {"messages": [USER, {**ASST, "weight": 0}, USER, {**ASST, "weight": 0}]},
            [("no_trainable_messages", "messages", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": {"id": "c"}}]},
            [("invalid_tool_calls", "messages[1].tool_calls", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": []}]},
            [("invalid_tool_calls", "messages[1].tool_calls", 7), ("missing_content", "messages[1].content", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}]},
            [("invalid_tool_calls", "messages[1].tool_calls[0].id", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": [CALL, {**CALL, "type": "code"}]}]},
            [("invalid_tool_calls", "messages[1].tool_calls[1].type", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}]}]},
            [("invalid_tool_calls", "messages[1].tool_calls[0].function", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": ["call"]}]},
            [("invalid_tool_calls", "messages[1].tool_calls[0]", 7)],
        ),
        (
            {"messages": [{**USER, "tool_calls": [CALL]}, ASST]},
            [("invalid_tool_calls", "messages[0].tool_calls", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "function_call": {"name": "f"}}]},
            [("invalid_function_call", "messages[1].function_call", 7)],
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "tool", "content": "1"}, ASST]},
            [("missing_tool_call_id", "messages[2].tool_call_id", 7)],
        ),
        (
            {
                "messages": [
                    USER,
                    {"role": "tool", "tool_call_id": "call_1", "content": "early"},
                    {"role": "assistant", "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "call_2", "content": "1"},
                    ASST,
                ]
            },
            [
                ("unknown_tool_call_id", "messages[1].tool_call_id", 7),
                ("unknown_tool_call_id", "messages[3].tool_call_id", 7),
            ],
        ),
        ({"messages": [USER, ASST], "tools": TOOL_SPEC}, [("invalid_tools", "tools", 7)]),
        ({"messages": [USER, ASST], "tools": [{"type": "retrieval"}]}, [("invalid_tools", "tools[0]", 7)]),
        (
            {"messages": [USER, ASST], "tools": [TOOL_SPEC, {"type": "function", "function": {"description": "d"}}]},
            [("invalid_tools", "tools[1].function.name", 7)],
        ),
        (
            {"messages": [USER, ASST], "tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
            [("invalid_tools", "tools[0].function.parameters", 7)],
        ),
        (
            {"messages": [USER, ASST], "parallel_tool_calls": "yes"},
            [("invalid_parallel_tool_calls", "parallel_tool_calls", 7)],
        ),
    ],
)
def test_trainer_errors(record, expected):
    assert found(record) == expected


def test_every_error_of_an_example_is_reported_with_its_field():
    record = {"messages": [{"role": "bot", "content": 1, "weight": 2}, {"role": "user"}], "id": 9}
    assert found(record, 3) == [
        ("unrecognized_role", "messages[0].role", 3),
        ("content_not_string", "messages[0].content", 3),
        ("invalid_weight", "messages[0].weight", 3),
        ("missing_content", "messages[1].content", 3),
        ("example_unrecognized_key", "id", 3),
        ("example_missing_assistant_message", "messages", 3),
    ]


def test_levels_and_messages():
    (f,) = check_chat_record({"messages": [USER, {"role": "assistant", "content": ""}]}, 4)
    assert (f.code, f.level, f.field, f.where()) == ("empty_content", Level.WARNING, "messages[1].content", "line 4, messages[1].content")
    (f,) = check_chat_record({"messages": [{"role": "human", "content": "x"}, ASST]}, 2)
    assert f.level is Level.ERROR
    assert f.message == "unrecognized role 'human' (expected one of system, user, assistant, tool, function)"


def test_chat_stats_counts_missing_roles_and_keeps_the_first_lines():
    stats = ChatStats()
    for line in range(1, 11):
        messages = [USER, ASST] if line % 2 else [SYS, USER, ASST, USER, ASST]
        stats.add({"messages": messages}, line)
    stats.add({"messages": [SYS, ASST]}, 11)
    stats.add({"messages": [ASST]}, 12)
    stats.add({"messages": [ASST]}, 13)
    by_code = {f.code: f for f in stats.findings()}
    assert by_code["missing_system_message"].count == 7
    assert by_code["missing_system_message"].lines == [1, 3, 5, 7, 9]
    assert by_code["missing_system_message"].line == 1
    assert by_code["missing_system_message"].message == "7 of 13 examples have no system message"
    assert by_code["missing_user_message"].count == 3
    assert by_code["missing_user_message"].lines == [11, 12, 13]
    dist = by_code["messages_per_example"]
    assert dist.level is Level.INFO
    # counts: 1,1 / 2 x5 / 2 (sys+asst) / 5 x5  -> sorted: 1 1 2 2 2 2 2 2 5 5 5 5 5
    assert (dist.data["min"], dist.data["median"], dist.data["p95"], dist.data["max"]) == (1, 2, 5, 5)
    assert dist.data["count"] == 13 and dist.data["sum"] == 2 + 12 + 25


def test_chat_stats_without_warnings():
    stats = ChatStats()
    stats.add({"messages": [SYS, USER, ASST]}, 1)
    assert [f.code for f in stats.findings()] == ["messages_per_example"]
    assert ChatStats().findings() == []
