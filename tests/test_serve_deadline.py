"""The engine's per-request deadline (`SamplingParams.timeout`, the server's max_generation_seconds)."""

from __future__ import annotations

import threading

import pytest

from serve_fixtures import tiny_llama, tiny_tokenizer
from tunery.serve.engine import Engine
from tunery.serve.sampling import SamplingParams


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    engine = Engine(tiny_llama(tok), stop_token_ids=set(), name="tiny-deadline")  # never stops on its own
    yield engine, tok
    engine.close()


def test_deadline_ends_only_its_own_request_as_length(setup):
    engine, tok = setup
    prompt = tok("hello world")["input_ids"]
    results = {}

    def run(name, **kw):
        results[name] = engine.generate(prompt, SamplingParams(max_tokens=200, temperature=0, **kw), tok)

    threads = [threading.Thread(target=run, args=("timed",), kwargs={"timeout": 0.05}), threading.Thread(target=run, args=("free",))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    timed, free = results["timed"], results["free"]
    assert (free.finish_reason, free.completion_tokens) == ("length", 200)  # its neighbour ran to max_tokens
    assert timed.finish_reason == "length" and timed.completion_tokens < 200
    assert [t.token_id for t in timed.tokens] == [t.token_id for t in free.tokens][: len(timed.tokens)]  # greedy: a prefix


def test_a_request_whose_deadline_passed_in_the_queue_ends_without_tokens(setup):
    engine, tok = setup
    done = engine.generate(tok("hello world")["input_ids"], SamplingParams(max_tokens=50, temperature=0, timeout=0.0), tok)
    assert (done.finish_reason, done.completion_tokens, done.text) == ("length", 0, "")
