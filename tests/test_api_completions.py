"""Legacy `POST /v1/completions` through the current SDK and `openai==0.28.1`, against a real
`tunery serve` with the tiny Llama and a LoRA fine-tune; responses validated against the spec."""

from __future__ import annotations

import math

import openai
import pytest
import torch

from serve_server import FT, start_tiny_server

PROMPT = "the quick brown fox ->"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_tiny_server(tmp_path_factory.mktemp("completions"))
    yield s
    s.process.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


@pytest.fixture(scope="module")
def direct(server):
    """Greedy continuation by the fine-tune loaded directly with peft, tokenized as the trainer does."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.base)
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(server.base), str(server.adapters[FT])).eval()

    def run(prompt, n):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = m.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=tok.eos_token_id)
        return out[0, ids.shape[1]:].tolist(), tok

    return run


def test_fine_tune_answers_after_the_separator(client, direct, spec):
    r = client.completions.create(model=FT, prompt=PROMPT, max_tokens=10, temperature=0)
    spec.validate("CreateCompletionResponse", r.model_dump(exclude_unset=True))
    ids, tok = direct(PROMPT, 10)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].text == tok.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tok(PROMPT)["input_ids"]) and r.usage.completion_tokens == 10


def test_default_max_tokens_is_16(client):
    r = client.completions.create(model="tiny", prompt="hello world", temperature=0)
    explicit = client.completions.create(model="tiny", prompt="hello world", temperature=0, max_tokens=16)
    longer = client.completions.create(model="tiny", prompt="hello world", temperature=0, max_tokens=17)
    assert r.choices[0].text == explicit.choices[0].text and r.usage == explicit.usage
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (16, "length")
    assert longer.usage.completion_tokens == 17


def test_stop_n_and_list_prompts(client):
    full = client.completions.create(model=FT, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    stop = full[3:6]
    r = client.completions.create(model=FT, prompt=[PROMPT, "hello world"], max_tokens=12, temperature=0, n=2, stop=stop)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_echo_with_logprobs_scores_the_prompt(client, server):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.base)
    prompt_ids = tok(PROMPT)["input_ids"]
    r = client.completions.create(model=FT, prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=2)
    c = r.choices[0]
    assert c.text.startswith(PROMPT)
    lp = c.logprobs
    assert len(lp.tokens) == len(prompt_ids) + 4
    assert lp.token_logprobs[0] is None and all(v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for top, value in zip(lp.top_logprobs[len(prompt_ids):], lp.token_logprobs[len(prompt_ids):]):
        assert len(top) == 2 and max(top.values()) == pytest.approx(value)  # greedy: the chosen token is the best
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-5


def test_streaming_matches_non_streaming(client, spec):
    whole = client.completions.create(model=FT, prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(client.completions.create(model=FT, prompt=PROMPT, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 8 and chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    # The spec has no streaming schema for completions; the final chunk is a complete choice.
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    spec.validate("CreateCompletionResponse", final[0].model_dump(exclude_unset=True))


@pytest.mark.parametrize(
    ("kwargs", "status", "param"),
    [
        ({"model": "ft:tiny:default:gone:ftjob-x"}, 404, "model"),
        ({"max_tokens": 10**6}, 400, "max_tokens"),
        ({"n": 99}, 400, "n"),
        ({"logprobs": 9}, 400, "logprobs"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": [10**7]}, 400, "prompt"),
        ({"suffix": "x"}, 400, "suffix"),
    ],
)
def test_errors_use_the_envelope(client, kwargs, status, param):
    args = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as exc_info:
        client.completions.create(**args)
    assert exc_info.value.status_code == status
    body = exc_info.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == param and body["message"]


def test_deleted_model_is_evicted_and_then_not_found(server, client):
    """Deleting a cached fine-tune through /v1/models makes the next request a 404."""
    from serve_server import register_fine_tune
    from serve_fixtures import random_lora

    name = "ft:tiny:default:doomed:ftjob-doomed"
    register_fine_tune(server.process.home, server.key, name, random_lora(server.base, server.process.home / "doomed" / "adapter", seed=5))
    assert client.completions.create(model=name, prompt=PROMPT, max_tokens=2).usage.completion_tokens == 2  # now cached
    assert client.models.delete(name).deleted
    with pytest.raises(openai.NotFoundError) as exc_info:
        client.completions.create(model=name, prompt=PROMPT, max_tokens=2)
    assert exc_info.value.body["code"] == "model_not_found"


def test_legacy_sdk_completion(server, direct):
    from api_support import LEGACY_PYTHON, LegacyRunner

    if not LEGACY_PYTHON.exists():
        pytest.skip("openai==0.28.1 is not installed: run `make setup`")
    out = LegacyRunner(server.base_url, server.key).run(
        f"""
        r = openai.Completion.create(model={FT!r}, prompt={PROMPT!r}, max_tokens=5, temperature=0, logprobs=1)
        print(r["object"], r["choices"][0]["finish_reason"], len(r["choices"][0]["logprobs"]["tokens"]))
        print(repr(r["choices"][0]["text"]))
        """
    )
    first, text = out.strip().splitlines()
    assert first == "text_completion length 5"
    ids, tok = direct(PROMPT, 5)
    assert eval(text) == tok.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
