"""`POST /v1/chat/completions` through the current `openai` SDK against a real `tunery serve`
(tiny Llama base, a fine-tuned LoRA and a checkpoint LoRA), validated against OpenAI's spec."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
import torch

from serve_server import CKPT, FT, start_tiny_server

MESSAGES = [{"role": "system", "content": "You classify reviews."}, {"role": "user", "content": "hello world, how are you?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_tiny_server(tmp_path_factory.mktemp("chat"))
    yield s
    s.process.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


def direct_greedy(server, model: str, messages, n: int) -> str:
    """What the same weights answer when loaded directly with transformers/peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.base)
    m = AutoModelForCausalLM.from_pretrained(server.base)
    if model != "tiny":
        m = PeftModel.from_pretrained(m, str(server.adapters[model]))
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = m.eval().generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).rstrip("\ufffd")


def test_base_fine_tune_and_checkpoint_each_answer_with_their_own_weights(server, client, spec):
    answers = {}
    for model in ("tiny", FT, CKPT):
        r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0)
        spec.validate("CreateChatCompletionResponse", r.model_dump(exclude_unset=True))
        assert r.object == "chat.completion" and r.model == model and r.id.startswith("chatcmpl-")
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content == direct_greedy(server, model, MESSAGES, 12)
        answers[model] = r.choices[0].message.content
        assert r.usage.completion_tokens <= 12
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert len(set(answers.values())) == 3


def test_usage_counts_the_rendered_prompt(server, client):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.base)
    expected = len(tok(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"])
    r = client.chat.completions.create(model=FT, messages=MESSAGES, max_tokens=5, temperature=0)
    assert r.usage.prompt_tokens == expected
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


def test_stop_sequence_cuts_the_answer(client):
    full = client.chat.completions.create(model=FT, messages=MESSAGES, max_tokens=16, temperature=0).choices[0].message.content
    stop = full[4:7]
    r = client.chat.completions.create(model=FT, messages=MESSAGES, max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(stop)]


def test_n_choices_are_indexed_and_seeded(client):
    kw = dict(model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.5, n=3, seed=11)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert len({c.message.content for c in a.choices}) > 1
    # usage counts every choice's tokens: each choice's logprobs list one entry per token
    counted = client.chat.completions.create(**kw, logprobs=True)
    assert [c.message.content for c in counted.choices] == [c.message.content for c in a.choices]
    lengths = [len(c.logprobs.content) for c in counted.choices]
    assert all(n == 8 if c.finish_reason == "length" else 0 < n < 8 for c, n in zip(counted.choices, lengths))
    assert a.usage.completion_tokens == counted.usage.completion_tokens == sum(lengths)


def test_logprobs_and_top_logprobs(client, spec):
    r = client.chat.completions.create(model=FT, messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    spec.validate("CreateChatCompletionResponse", r.model_dump(exclude_unset=True))
    content = r.choices[0].logprobs.content
    assert len(content) == 6
    # Tokens may split a UTF-8 character; their bytes put together give the text back.
    joined = b"".join(bytes(t.bytes) for t in content).decode(errors="replace")
    assert joined.rstrip("\ufffd") == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert sum(math.exp(x.logprob) for x in t.top_logprobs) <= 1 + 1e-5
        assert bytes(t.bytes).decode(errors="replace") == t.token and t.bytes


def test_streaming_matches_non_streaming_and_reports_usage(client, spec):
    whole = client.chat.completions.create(model=CKPT, messages=MESSAGES, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model=CKPT, messages=MESSAGES, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}))
    for c in chunks:
        spec.validate("CreateChatCompletionStreamResponse", c.model_dump(exclude_unset=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done(server):
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {server.key}"}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def _error(exc_info):
    err = exc_info.value
    return err.status_code, err.body


@pytest.mark.parametrize(
    ("kwargs", "status", "param", "code"),
    [
        ({"model": "ft:tiny:default:nope:ftjob-missing"}, 404, "model", "model_not_found"),
        ({"model": "no-such-model"}, 404, "model", "model_not_found"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role", None),
        ({"messages": [{"role": "user"}]}, 400, "messages[0]", None),
        ({"messages": []}, 400, "messages", None),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages[0].content[0]", None),
        ({"max_tokens": 100000}, 400, "max_tokens", "context_length_exceeded"),
        ({"n": 1000}, 400, "n", None),
        ({"top_logprobs": 3}, 400, None, None),
        ({"logprobs": True, "top_logprobs": 50}, 400, "top_logprobs", None),
        ({"temperature": 3}, 400, "temperature", None),
    ],
)
def test_errors_use_the_envelope(client, kwargs, status, param, code):
    args = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as exc_info:
        client.chat.completions.create(**args)
    got_status, body = _error(exc_info)
    assert got_status == status
    assert set(body) >= {"message", "type", "param", "code"} and body["message"]
    assert body["type"] == "invalid_request_error"
    assert body["param"] == param
    if code:
        assert body["code"] == code


def test_other_projects_cannot_use_the_fine_tune(server):
    from api_support import create_key
    import json as _json

    other = create_key(server.process.home, "other", TUNERY_MODEL_ALIASES=_json.dumps({"tiny": str(server.base)}))
    c = openai.OpenAI(base_url=server.base_url, api_key=other, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model=FT, messages=MESSAGES, max_tokens=2)


def test_legacy_sdk_chat_completion(server):
    from api_support import LEGACY_PYTHON, LegacyRunner

    if not LEGACY_PYTHON.exists():
        pytest.skip("openai==0.28.1 is not installed: run `make setup`")
    out = LegacyRunner(server.base_url, server.key).run(
        f"""
        r = openai.ChatCompletion.create(model={FT!r}, messages={MESSAGES!r}, max_tokens=6, temperature=0)
        print(r["object"], r["choices"][0]["finish_reason"], r["usage"]["completion_tokens"])
        print(repr(r["choices"][0]["message"]["content"]))
        """
    )
    first, content = out.strip().splitlines()
    assert first == "chat.completion length 6"
    assert eval(content) == direct_greedy(server, FT, MESSAGES, 6)


def _cli(server, *args, stdin: str | None = None):
    import subprocess

    from api_support import TUNERY

    return subprocess.run([TUNERY, "chat", *args, "--base-url", server.base_url, "--api-key", server.key],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_cli_chat_one_shot_prints_the_served_answer(server, client):
    expected = client.chat.completions.create(model=FT, messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    out = _cli(server, FT, "-p", "hello", "--max-tokens", "8", "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected.choices[0].message.content + "\n"


def test_cli_chat_interactive_keeps_the_conversation(server, client):
    out = _cli(server, FT, "--max-tokens", "4", "--temperature", "0", stdin="hello\nthe quick fox\n/exit\n")
    assert out.returncode == 0, out.stderr
    first = client.chat.completions.create(model=FT, messages=[{"role": "user", "content": "hello"}], max_tokens=4, temperature=0).choices[0].message.content
    second = client.chat.completions.create(model=FT, max_tokens=4, temperature=0, messages=[
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": first}, {"role": "user", "content": "the quick fox"}]).choices[0].message.content
    assert out.stdout == f"{first}\n{second}\n"


def test_cli_chat_unknown_model_is_one_line_error(server):
    out = _cli(server, "ft:nope:x:y:z", "-p", "hi")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: ") and "does not exist" in out.stderr and "[HTTP 404]" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
