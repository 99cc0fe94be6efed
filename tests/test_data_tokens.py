"""Token counts must equal transformers' own (`apply_chat_template(tokenize=True)`), with no torch;
trained counts must equal the tokens of the trained answers, worked out independently.

Fast tests use a small byte-level BPE tokenizer trained in memory with several chat templates;
the slow test uses the packaged SmolLM2 tokenizer and template.
"""

import json
import sys

import pytest

from tunery.data.tokens import ChatTemplateError, Histogram, TokenCounter

SPECIALS = ["<unk>", "<s>", "</s>", "<|start|>", "<|sep|>", "<|eot|>"]

# Llama-3-like: BOS, trimmed content, tools as JSON, raise_exception, generation marks that
# follow the weight rule.
TRIM_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|start|>system<|sep|>You may call: {{ tools | tojson }}<|eot|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant', 'tool'] %}{{ raise_exception('Unknown role: ' + m['role']) }}{% endif %}"
    "<|start|>{{ m['role'] }}<|sep|>"
    "{% if m['role'] == 'assistant' and m.get('weight', 1) != 0 %}{% generation %}"
    "{% if m.tool_calls is defined %}{{ m.tool_calls | tojson }}{% else %}{{ m['content'] | trim }}{% endif %}<|eot|>"
    "{% endgeneration %}"
    "{% elif m.tool_calls is defined %}{{ m.tool_calls | tojson }}<|eot|>"
    "{% else %}{{ m['content'] | trim }}<|eot|>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|start|>assistant<|sep|>{% endif %}"
)
# ChatML-like: verbatim content, a default system prompt, a newline after the end of turn.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|start|>system<|sep|>Be kind.<|eot|>\n{% endif %}"
    "<|start|>{{ m['role'] }}<|sep|>"
    "{% if m['role'] == 'assistant' and m.get('weight', 1) != 0 %}{% generation %}{{ m['content'] }}<|eot|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|eot|>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|start|>assistant<|sep|>{% endif %}"
)
# A reasoning template: rewrites the assistant content (drops the thinking), so the markers fail.
THINK_TEMPLATE = (
    "{% for m in messages %}<|start|>{{ m['role'] }}<|sep|>"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'].split('</think>')[-1] }}<|eot|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|eot|>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|start|>assistant<|sep|>{% endif %}"
)

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text, **kw: {"role": "assistant", "content": text, **kw}  # noqa: E731

RECORDS = [
    {"messages": [U("Hello there"), A("Hello! How are you today?")]},
    {"messages": [{"role": "system", "content": "You are terse."}, U("Capital of France?"), A("Paris.")]},
    {"messages": [U("a"), A("b"), U("c"), A("d"), U("e"), A("The weather in Oslo is cold.")]},
    {"messages": [U("one"), A("skip me", weight=0), U("two"), A("keep me", weight=1)]},
    {"messages": [U("東京は？"), A("東京は日本の首都です。 🇯🇵 café naïve")]},
    {"messages": [U("  padded  "), A("  leading and trailing spaces \n")]},
    {"messages": [U("newlines"), A("\n\nline one\nline two\n\n")]},
    {"messages": [U("Hi"), A("Hi")]},  # identical text earlier in the chat
    {"messages": [U("x"), A("<|eot|> looks special")]},
    {"messages": [U("Weather?"), {"role": "assistant", "content": None, "tool_calls": [CALL]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "12C"}, A("It is 12C in Oslo.")], "tools": TOOLS},
    {"messages": [U("Weather?"), A("Checking.", tool_calls=[CALL]), {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
                  A("12C.", weight=0)], "tools": TOOLS},
    {"messages": [U("only a question")]},
    {"messages": [U("no tools at all"), A("Fine.")], "tools": []},
]


def make_folder(path, template, *, as_file=False, config_json=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = ["Hello there, how are you today? The weather in Oslo is cold.", "Paris is the capital of France. 東京は日本の首都です。"]
    tok.train_from_iterator(corpus * 50, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": {"__type": "AddedToken", "content": "<|eot|>", "special": True}, "unk_token": "<unk>"}
    if as_file:
        (path / "chat_template.jinja").write_text(template)
    else:
        config["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    if config_json:
        (path / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {
        "trim": make_folder(root / "trim", TRIM_TEMPLATE),
        "plain": make_folder(root / "plain", PLAIN_TEMPLATE, as_file=True, config_json=True),
        "think": make_folder(root / "think", THINK_TEMPLATE),
    }


def reference_totals(folder, records):
    """transformers' total counts (apply_chat_template(tokenize=True)): stable across its versions."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return [len(tok.apply_chat_template(r["messages"], tools=r.get("tools"), tokenize=True, return_dict=True)["input_ids"]) for r in records]


# What each template writes for an assistant turn it trains on (its `{% generation %}` block, less <|eot|>).
ANSWER_TEXT = {
    "trim": lambda m: json.dumps(m["tool_calls"], ensure_ascii=False) if "tool_calls" in m else m["content"].strip(),
    "plain": lambda m: m["content"],
    "think": lambda m: m["content"].split("</think>")[-1],
}


def expected_trained(folder, name, record):
    """Trained tokens worked out without Tunery or transformers' assistant mask (whose results change
    across transformers versions): each trained answer sits between two special tokens (<|sep|> and
    <|eot|>), which the tokenizer splits on first, so its tokens are those of the answer text alone,
    plus the <|eot|> that closes it."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    answers = [m for m in record["messages"] if m["role"] == "assistant" and m.get("weight", 1) != 0]
    return sum(len(raw.encode(ANSWER_TEXT[name](m), add_special_tokens=False).ids) + 1 for m in answers)


def renderable(name):
    if name == "plain":  # this template has no tool-call branch, like many
        return [r for r in RECORDS if not r.get("tools")]
    if name == "think":
        return [r for r in RECORDS if not r.get("tools") and all(m.get("weight", 1) for m in r["messages"])]
    return RECORDS


@pytest.mark.parametrize("name", ["trim", "plain", "think"])
def test_counts_equal_transformers_and_the_trained_answers(folders, name):
    records = renderable(name)
    counter = TokenCounter.from_folder(folders[name])
    ours = counter.count_chat(records)
    assert [total for total, _ in ours] == reference_totals(folders[name], records)
    assert [trained for _, trained in ours] == [expected_trained(folders[name], name, r) for r in records]


def test_content_starting_with_spaces_counts_every_token(folders):
    from tokenizers import Tokenizer

    counter = TokenCounter.from_folder(folders["plain"])
    raw = Tokenizer.from_file(str(folders["plain"] / "tokenizer.json"))
    text, spans = counter.render_chat(RECORDS[5])
    assert [text[s:e] for s, e in spans] == ["  leading and trailing spaces \n<|eot|>"]
    ids = raw.encode(text, add_special_tokens=False).ids
    after_last_sep = ids[::-1].index(raw.token_to_id("<|sep|>"))  # tokens after the assistant header
    assert text.endswith("<|eot|>")  # nothing after the end of turn here, so trained = the tail
    assert counter.count_chat([RECORDS[5]]) == [(len(ids), after_last_sep)]


def test_trailing_spaces_count_without_an_end_of_turn_token(tmp_path):
    from tokenizers import Tokenizer

    folder = make_folder(tmp_path / "bare", "{% for m in messages %}<|start|>{{ m['content'] }}{% endfor %}")
    counter = TokenCounter.from_folder(folder)
    record = {"messages": [U("a"), A("hi   ")]}
    text, spans = counter.render_chat(record)
    assert (text, [text[s:e] for s, e in spans]) == ("<|start|>a<|start|>hi   ", ["hi   "])
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    enc = raw.encode(text, add_special_tokens=False)
    assert enc.offsets[-1][0] == enc.offsets[-1][1]  # the trailing spaces token has trimmed offsets
    assert counter.count_chat([record]) == [(len(enc.ids), enc.ids[::-1].index(raw.token_to_id("<|start|>")))]


def test_reasoning_template_counts_only_the_rendered_answer(folders):
    counter = TokenCounter.from_folder(folders["think"])
    record = {"messages": [U("2+2?"), A("<think>two and two</think>Four.")]}
    text, spans = counter.render_chat(record)
    assert [text[s:e] for s, e in spans] == ["Four.<|eot|>"]
    assert counter.count_chat([record]) == [(reference_totals(folders["think"], [record])[0], expected_trained(folders["think"], "think", record))]


def test_trained_spans_are_content_plus_end_of_turn(folders):
    counter = TokenCounter.from_folder(folders["plain"])
    record = RECORDS[3]
    text, spans = counter.render_chat(record)
    assert text.startswith("<|start|>system<|sep|>Be kind.<|eot|>\n")
    assert [text[s:e] for s, e in spans] == ["keep me<|eot|>"]  # weight 0 left out, no newline
    trim = TokenCounter.from_folder(folders["trim"])
    text, spans = trim.render_chat(RECORDS[5])
    assert [text[s:e] for s, e in spans] == ["leading and trailing spaces<|eot|>"]
    text, spans = trim.render_chat(RECORDS[9])
    assert [text[s:e] for s, e in spans] == [json.dumps([CALL], ensure_ascii=False) + "<|eot|>", "It is 12C in Oslo.<|eot|>"]


def test_named_templates_pick_tool_use_when_tools_are_given(tmp_path):
    folder = make_folder(tmp_path / "named", "")
    templates = [{"name": "default", "template": "D{{ messages | length }}"}, {"name": "tool_use", "template": "T{{ tools | length }}"}]
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eot|>", "chat_template": templates}))
    counter = TokenCounter.from_folder(folder)
    assert counter.render_chat({"messages": [U("a"), A("b")]})[0] == "D2"
    assert counter.render_chat({"messages": [U("a"), A("b")], "tools": TOOLS})[0] == "T1"


def test_a_broken_template_is_a_value_error(tmp_path):
    folder = make_folder(tmp_path / "broken", "{% for m in messages %}{{ m['content'] }}")
    with pytest.raises(ValueError, match=r"the chat template does not parse: .*'endfor'.* \(template line 1\)"):
        TokenCounter.from_folder(folder)


def test_folder_metadata(folders):
    counter = TokenCounter.from_folder(folders["plain"])
    assert counter.special_tokens == {"bos_token": "<s>", "eos_token": "<|eot|>", "unk_token": "<unk>"}
    assert counter.context_length == 64
    assert TokenCounter.from_folder(folders["trim"]).context_length is None


def test_template_errors_name_the_example(folders):
    counter = TokenCounter.from_folder(folders["trim"])
    with pytest.raises(ChatTemplateError) as err:
        counter.count_chat([RECORDS[0], {"messages": [{"role": "robot", "content": "x"}, A("y")]}])
    assert err.value.index == 1
    assert str(err.value) == "the chat template failed on example 1 of the batch: Unknown role: robot"
    errors = []
    counts = counter.count_chat([{"messages": [{"role": "robot", "content": "x"}, A("y")]}, RECORDS[0]], errors=errors)
    assert counts == [None, counter.count_chat([RECORDS[0]])[0]]
    assert [(e.index, e.reason) for e in errors] == [(0, "Unknown role: robot")]


def test_missing_tokenizer_and_template(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json"):
        TokenCounter.from_folder(tmp_path)
    folder = make_folder(tmp_path / "bare", "")
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    counter = TokenCounter.from_folder(folder)
    with pytest.raises(ValueError, match="no chat template"):
        counter.count_chat(RECORDS[:1])
    assert counter.count_completion([{"prompt": "", "completion": ""}]) == [(1, 1)]  # just the EOS


def test_completion_counts(folders):
    from tokenizers import Tokenizer

    counter = TokenCounter.from_folder(folders["trim"])
    raw = Tokenizer.from_file(str(folders["trim"] / "tokenizer.json"))
    records = [{"prompt": "Capital of France? ->", "completion": " Paris"}, {"prompt": "東京 ->", "completion": " Paris"}]
    expected = []
    for r in records:
        p, c = len(raw.encode(r["prompt"]).ids), len(raw.encode(r["completion"], add_special_tokens=False).ids)
        expected.append((p + c + 1, c + 1))
    assert counter.count_completion(records) == expected
    assert expected[0] == (len(raw.encode("Capital of France? ->").ids) + 3, 3)  # " Paris" is 2 tokens here


def test_nothing_heavy_is_imported():
    code = (
        "import sys; from tunery.data import tokens, chat, dpo, estimates, prices;"
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- Histogram ---------------------------------------------------------------------------------


def test_histogram_exact_percentiles():
    h = Histogram()
    for v in [5, 1, 9, 3, 7, 2, 8, 4, 6, 10]:
        h.add(v)
    assert (h.count, h.sum, h.min, h.max, h.mean) == (10, 55, 1, 10, 5.5)
    assert h.percentile(0.5) == 5  # nearest rank: the 5th of 10
    assert h.percentile(0.95) == 10  # rank 10
    assert h.percentile(0.9) == 9
    assert h.percentile(1.0) == 10
    h2 = Histogram()
    for v in range(1, 101):
        h2.add(v)
    assert (h2.percentile(0.5), h2.percentile(0.95)) == (50, 95)


def test_histogram_large_values_are_bucketed_within_a_tiny_error():
    h = Histogram()
    values = [100_000 + 37 * i for i in range(1000)]
    for v in values:
        h.add(v)
    assert len(h.buckets) < 1000  # bounded: buckets of 64 at this size
    exact = sorted(values)[949]
    assert abs(h.percentile(0.95) - exact) <= exact / 2**11
    assert (h.min, h.max, h.sum) == (min(values), max(values), sum(values))


def test_histogram_empty_merge_and_errors():
    h = Histogram()
    assert h.percentile(0.5) is None and h.mean is None
    a, b = Histogram(), Histogram()
    a.add(3, times=4)
    b.add(10)
    a.merge(b)
    assert (a.count, a.sum, a.min, a.max, a.percentile(0.5), a.percentile(0.95)) == (5, 22, 3, 10, 3, 10)
    with pytest.raises(ValueError):
        h.add(-1)
    with pytest.raises(ValueError):
        h.percentile(0)


# -- the packaged model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_folder():
    """The packaged model as users get it (converted once into Tunery's cache)."""
    from tunery.models.resolve import resolve_model

    return resolve_model().path


@pytest.mark.slow
def test_smollm2_counts_equal_transformers(smollm2_folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_folder)
    counter = TokenCounter.from_folder(smollm2_folder)
    records = [r for r in RECORDS if not r.get("tools")]  # SmolLM2's template has no tool calls
    counts = counter.count_chat(records)
    assert [c[0] for c in counts] == [len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) for r in records]
    # trained: the content tokens and <|im_end|>, exactly
    (total, trained), = counter.count_chat([{"messages": [U("Capital of France?"), A("Paris is the capital.")]}])
    assert trained == len(tok.encode("Paris is the capital.", add_special_tokens=False)) + 1
    assert counter.eos_token == "<|im_end|>" and counter.context_length == 8192
    comp = counter.count_completion([{"prompt": "Great movie ->", "completion": " positive"}])
    n_p, n_c = len(tok.encode("Great movie ->")), len(tok.encode(" positive", add_special_tokens=False))
    assert comp == [(n_p + n_c + 1, n_c + 1)]


# -- TokenStats --------------------------------------------------------------------------------


def test_token_stats_with_a_context_limit():
    from tunery.data.findings import Level
    from tunery.data.tokens import TokenStats

    stats = TokenStats(context_length=100)
    stats.add_many([(10, 2), (50, 20), (150, 30), (100, 40), (300, 50)], lines=[1, 2, 3, 4, 5])
    d = stats.to_dict()
    assert d["examples"] == 5 and d["total_tokens"] == 610 and d["trained_tokens"] == 142
    assert d["tokens_per_example"]["median"] == 100 and d["tokens_per_example"]["p95"] == 300
    assert (d["examples_over_context"], d["truncated_tokens"], d["billable_tokens_per_epoch"]) == (2, 250, 360)
    codes = {f.code: f for f in stats.findings()}
    over = codes["examples_over_context"]
    assert (over.level, over.count, over.lines, over.line) == (Level.WARNING, 2, [3, 5], 3)
    assert over.message == "2 examples are longer than the 100-token context and will be truncated (250 tokens cut)"
    assert codes["tokens_per_example"].message == "tokens per example: min 10, median 100, p95 300, max 300"
    assert codes["trained_tokens_per_example"].data["max"] == 50


def test_token_stats_without_a_limit_or_data():
    from tunery.data.tokens import TokenStats

    stats = TokenStats()
    assert stats.findings() == []
    stats.add(10**6, 5)
    assert stats.billable_tokens == 10**6 and stats.over_context == 0
    assert [f.code for f in stats.findings()] == ["tokens_per_example", "trained_tokens_per_example"]


@pytest.mark.slow
def test_smollm2_template_cannot_render_a_bare_tool_call(smollm2_folder):
    """SmolLM2's template concatenates content, so a tool call without content is refused, as in transformers."""
    from transformers import AutoTokenizer

    record = RECORDS[9]  # assistant tool call with content None
    with pytest.raises(Exception):
        AutoTokenizer.from_pretrained(smollm2_folder).apply_chat_template(record["messages"], tools=record["tools"])
    errors = []
    assert TokenCounter.from_folder(smollm2_folder).count_chat([record], errors=errors) == [None]
    assert (errors[0].index, errors[0].reason) == (0, "'dict object' has no attribute 'content'")
