"""The continuous-batching engine against Hugging Face `generate` on a tiny random Llama."""

from __future__ import annotations

import asyncio
import math
import os
import time

import pytest
import torch

from serve_fixtures import random_lora, save_base, tiny_llama, tiny_tokenizer
from tunery.serve.compute import COMPUTE
from tunery.serve.engine import MIN_SHARED_PREFIX, Engine
from tunery.serve.registry import ModelRegistry, ModelSource, serving_dtype
from tunery.serve.sampling import SamplingParams

PROMPTS = ["hello world", "the quick brown fox jumps over the lazy dog, the quick brown fox", "tunery", "1 2 3 4 5 stars ->"]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok)


@pytest.fixture(scope="module")
def engine(model):
    e = Engine(model, stop_token_ids=set(), name="tiny")
    yield e
    e.close()


def ids(tok, text):
    return tok(text)["input_ids"]


def hf_greedy(model, prompt_ids, n):
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def greedy(n, **kw):
    return SamplingParams(max_tokens=n, temperature=0.0, **kw)


def token_ids(completion):
    return [t.token_id for t in completion.tokens]


async def together(engine, tok, jobs, delay_last=0.0):
    """Submit (prompt_ids, params, adapter) jobs concurrently; the last one joins mid-flight when delayed."""
    gens = [engine.submit(p, sp, tok, a) for p, sp, a in jobs[:-1]]
    if delay_last:
        await asyncio.sleep(delay_last)
    gens.append(engine.submit(*jobs[-1][:2], tok, jobs[-1][2]))
    return await asyncio.gather(*[g.result() for g in gens])


def test_greedy_equals_hf_generate(engine, model, tok):
    for text in PROMPTS:
        p = ids(tok, text)
        got = engine.generate(p, greedy(24), tok)
        assert token_ids(got) == hf_greedy(model, p, 24)
        assert got.finish_reason == "length" and got.completion_tokens == 24 and got.prompt_tokens == len(p)
        assert got.text == tok.decode(hf_greedy(model, p, 24), skip_special_tokens=True).rstrip("\ufffd")


def test_concurrent_requests_match_one_at_a_time(engine, tok):
    jobs = [(ids(tok, t), greedy(8 + 6 * i), None) for i, t in enumerate(PROMPTS)]
    alone = [token_ids(engine.generate(p, sp, tok)) for p, sp, _ in jobs]
    # Different lengths leave the batch at different steps; the last one joins while others run.
    batched = asyncio.run(together(engine, tok, jobs, delay_last=0.01))
    assert [token_ids(c) for c in batched] == alone


def test_requests_waiting_together_are_prefilled_in_one_forward_with_the_same_tokens(engine, tok):
    jobs = [(ids(tok, t), greedy(6 + 3 * i), None) for i, t in enumerate(PROMPTS)]  # different lengths: padding
    alone = [token_ids(engine.generate(p, sp, tok)) for p, sp, _ in jobs]
    shapes = []
    forward = engine._forward
    engine._forward = lambda ids, *a, **kw: shapes.append(tuple(ids.shape)) or forward(ids, *a, **kw)
    try:
        with COMPUTE.cond:  # the compute thread waits at its next step: everything below queues up
            gens = [engine.submit(p, sp, tok, callback=lambda e: None) for p, sp, _ in jobs]
        deadline = time.time() + 30
        while any(g.finish_reason is None for g in gens) and time.time() < deadline:
            time.sleep(0.01)
    finally:
        del engine._forward
    assert [g.generated for g in gens] == alone
    longest = max(len(p) for p, _, _ in jobs)
    assert shapes[0] == (len(jobs), longest)  # one left-padded prefill for the whole wave
    assert all(s[1] == 1 for s in shapes[1:])  # then decoding steps only


def queued_wave(engine, tok, jobs):
    """Submit every job while the engine waits (one prefill wave); returns (gens, forward input shapes)."""
    shapes = []
    forward = engine._forward
    engine._forward = lambda ids, *a, **kw: shapes.append(tuple(ids.shape)) or forward(ids, *a, **kw)
    try:
        with COMPUTE.cond:  # the compute thread waits: one wave
            gens = [engine.submit(p, sp, tok, a, callback=lambda e: None) for p, sp, a in jobs]
        deadline = time.time() + 60
        while any(g.finish_reason is None for g in gens) and time.time() < deadline:
            time.sleep(0.01)
    finally:
        del engine._forward
    return gens, shapes


SYSTEM = "You are a careful assistant. Classify the sentiment of the review below with one digit from zero to four. "


def test_a_prefix_the_whole_wave_shares_is_computed_once_with_the_same_tokens(engine, tok):
    texts = [SYSTEM + t for t in PROMPTS]
    jobs = [(ids(tok, t), greedy(5 + 2 * i), None) for i, t in enumerate(texts)]
    shared = len(os.path.commonprefix([p for p, _, _ in jobs]))
    assert shared >= MIN_SHARED_PREFIX
    alone = [token_ids(engine.generate(p, sp, tok)) for p, sp, _ in jobs]
    gens, shapes = queued_wave(engine, tok, jobs)
    assert [g.generated for g in gens] == alone
    assert shapes[0] == (1, shared)  # the shared prefix, once
    assert shapes[1] == (len(jobs), max(len(p) for p, _, _ in jobs) - shared)  # then each prompt's own tokens
    assert all(s[1] == 1 for s in shapes[2:])


def test_a_prompt_that_is_the_shared_prefix_itself_keeps_its_last_token(engine, tok):
    base = ids(tok, SYSTEM)
    jobs = [(base, greedy(6), None), (base + ids(tok, " great film"), greedy(6), None), (base, greedy(4), None)]
    alone = [token_ids(engine.generate(p, sp, tok)) for p, sp, _ in jobs]
    gens, shapes = queued_wave(engine, tok, jobs)
    assert [g.generated for g in gens] == alone
    assert shapes[0] == (1, len(base) - 1)


def test_max_tokens_gives_length_and_stop_string_gives_stop(engine, tok):
    p = ids(tok, PROMPTS[1])
    full = engine.generate(p, greedy(20), tok)
    assert full.finish_reason == "length" and full.completion_tokens == 20
    text = full.text
    stop = text[5:8]
    cut = text.index(stop)
    got = engine.generate(p, greedy(20, stop=["zzzz-never", stop]), tok)
    assert got.finish_reason == "stop"
    assert got.text == text[:cut]
    assert got.completion_tokens < 20


def test_stop_token_ends_with_stop(model, tok):
    p = ids(tok, PROMPTS[0])
    first = hf_greedy(model, p, 3)
    e = Engine(model, stop_token_ids={first[2]})
    try:
        got = e.generate(p, greedy(10), tok)
    finally:
        e.close()
    assert got.finish_reason == "stop"
    assert token_ids(got) == first[:2]  # the stop token itself is not part of the text or tokens
    assert got.completion_tokens == 3


def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(engine, tok):
    p = ids(tok, PROMPTS[2])
    sp = lambda seed: SamplingParams(max_tokens=16, temperature=8.0, top_p=0.95, seed=seed)
    a = token_ids(engine.generate(p, sp(7), tok))
    b = token_ids(engine.generate(p, sp(7), tok))
    c = token_ids(engine.generate(p, sp(8), tok))
    assert a == b
    assert a != c
    jobs = [(ids(tok, PROMPTS[0]), greedy(16), None), (p, sp(7), None), (ids(tok, PROMPTS[3]), sp(1), None)]
    assert token_ids(asyncio.run(together(engine, tok, jobs))[1]) == a


def test_logprobs_are_consistent(engine, model, tok):
    p = ids(tok, PROMPTS[3])
    got = engine.generate(p, greedy(6, logprobs=True, top_logprobs=5), tok)
    assert token_ids(got) == hf_greedy(model, p, 6)
    for t in got.tokens:
        assert t.logprob <= 0.0
        assert len(t.top) == 5
        assert t.top[0] == (t.token_id, pytest.approx(t.logprob))  # greedy picks the most likely token
        assert [v for _, v in t.top] == sorted((v for _, v in t.top), reverse=True)
        assert sum(math.exp(v) for _, v in t.top) <= 1.0 + 1e-5
    # The first token's logprob is log-softmax of HF's logits at the prompt's last position.
    with torch.no_grad():
        logits = model(torch.tensor([p])).logits[0, -1]
    assert got.tokens[0].logprob == pytest.approx(float(torch.log_softmax(logits, -1).max()), abs=1e-4)


def test_penalties_change_greedy_choice(engine, tok):
    p = ids(tok, PROMPTS[0])
    plain = token_ids(engine.generate(p, greedy(30), tok))
    penalized = token_ids(engine.generate(p, greedy(30, frequency_penalty=2.0, presence_penalty=2.0), tok))
    assert plain != penalized
    # With heavy penalties the model repeats fewer tokens.
    assert len(set(penalized)) >= len(set(plain))


def test_cancellation_frees_the_slot(model, tok):
    e = Engine(model, stop_token_ids=set())
    try:
        async def run():
            gen = e.submit(ids(tok, PROMPTS[0]), greedy(200), tok)
            other = e.submit(ids(tok, PROMPTS[1]), greedy(5), tok)
            async for event in gen:
                gen.cancel()
                break
            result = await other.result()
            async for event in gen:  # drain: the engine reports the cancellation
                last = event
            return gen, last, result
        gen, last, other = asyncio.run(run())
        assert last.finish_reason == "cancelled" and gen.finish_reason == "cancelled"
        assert len(gen.generated) < 200
        assert other.finish_reason == "length"
        deadline = time.time() + 5
        while e.active and time.time() < deadline:
            time.sleep(0.01)
        assert e.active == 0 and e._cache.size == 0
    finally:
        e.close()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base = save_base(root / "base")
    return base, [random_lora(base, root / f"lora{i}", seed=i) for i in range(3)]


@pytest.fixture
def fp32_serving(monkeypatch):
    """The batching logic is checked token for token against one-at-a-time generation in fp32: in
    bf16 a batched matmul may round differently from a single row's (on the same machine, the same
    code), so greedy ties can flip. bf16 serving has its own test below."""
    monkeypatch.setenv("TUNERY_SERVE_DTYPE", "float32")


def peft_greedy(base_folder, adapter_folder, prompt_ids, n, dtype=torch.float32):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder, dtype=dtype), str(adapter_folder)).eval()
    return hf_greedy(m, prompt_ids, n)


@pytest.mark.parametrize("value, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16), (" BFloat16 ", torch.bfloat16)])
def test_serving_dtype_follows_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("TUNERY_SERVE_DTYPE", value)
    assert serving_dtype("cpu") is expected


@pytest.mark.parametrize("native_bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
@pytest.mark.parametrize("value", [None, "auto"])
def test_serving_dtype_auto_is_bf16_only_on_cpus_with_native_bf16(monkeypatch, native_bf16, expected, value):
    import tunery.models.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: native_bf16)  # both kinds of CPU, on any machine
    if value is None:
        monkeypatch.delenv("TUNERY_SERVE_DTYPE", raising=False)
    else:
        monkeypatch.setenv("TUNERY_SERVE_DTYPE", value)
    assert serving_dtype("cpu") is expected


def test_a_bad_serving_dtype_is_a_clear_error(monkeypatch, folders):
    monkeypatch.setenv("TUNERY_SERVE_DTYPE", "fp8")
    with pytest.raises(ValueError, match="TUNERY_SERVE_DTYPE must be one of auto, float32, bfloat16, got 'fp8'"):
        serving_dtype()
    reg = ModelRegistry()
    try:
        with pytest.raises(ValueError, match="TUNERY_SERVE_DTYPE"):
            reg.get(ModelSource("base", "base", folders[0]))
    finally:
        reg.close()


def test_serve_refuses_to_start_with_a_bad_serving_dtype(tmp_path):
    import subprocess

    from api_support import TUNERY, server_env

    out = subprocess.run([TUNERY, "serve", "--port", "1"], env=server_env(tmp_path, TUNERY_SERVE_DTYPE="half"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: TUNERY_SERVE_DTYPE must be one of auto, float32, bfloat16, got 'half'"


def test_bf16_serving_gives_what_the_model_and_adapter_give_in_bf16(monkeypatch, folders, tok):
    """Served in bf16, the base and an adapter (the batched multi-LoRA step, adapters kept in fp32
    as peft keeps them, pre-packed base linears) answer one request exactly as transformers/peft
    do in bf16."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("TUNERY_SERVE_DTYPE", "bfloat16")
    base, loras = folders
    reg = ModelRegistry(budget_bytes=10**9)
    try:
        served = reg.get(ModelSource("base", "base", base))
        a = reg.get(ModelSource("ft:a", "adapter", loras[0], base_path=base))
        assert served.engine.model.get_base_model().model.embed_tokens.weight.dtype is torch.bfloat16
        # ... with its linears pre-packed for oneDNN where this CPU allows it (tunery.serve.prepack)
        assert hasattr(served.engine.model.get_base_model().lm_head, "_tunery_packed") or not torch.backends.mkldnn.is_available()
        p = ids(tok, PROMPTS[3])
        plain = hf_greedy(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), p, 10)
        tuned = peft_greedy(base, loras[0], p, 10, dtype=torch.bfloat16)
        assert plain != tuned
        assert token_ids(served.engine.generate(p, greedy(10), tok)) == plain
        assert token_ids(a.engine.generate(p, greedy(10), tok, a.adapter)) == tuned
    finally:
        reg.close()


def test_mixed_adapters_in_one_batch_match_each_alone(folders, tok, fp32_serving):
    base, loras = folders
    reg = ModelRegistry(budget_bytes=10**9)
    try:
        served_base = reg.get(ModelSource("base", "base", base))
        a = reg.get(ModelSource("ft:a", "adapter", loras[0], base_path=base))
        b = reg.get(ModelSource("ft:b", "adapter", loras[1], base_path=base))
        assert a.engine is b.engine is served_base.engine  # one base in memory serves all
        p = ids(tok, PROMPTS[1])
        from transformers import AutoModelForCausalLM

        expected = {None: hf_greedy(AutoModelForCausalLM.from_pretrained(base), p, 12)}
        expected[a.adapter] = peft_greedy(base, loras[0], p, 12)
        expected[b.adapter] = peft_greedy(base, loras[1], p, 12)
        assert len({tuple(v) for v in expected.values()}) == 3  # adapters really change the output
        order = [a.adapter, None, b.adapter, a.adapter, b.adapter, None]
        jobs = [(p, greedy(12), name) for name in order]
        got = asyncio.run(together(a.engine, tok, jobs, delay_last=0.01))
        assert [token_ids(c) for c in got] == [expected[name] for name in order]
    finally:
        reg.close()


def test_a_shared_prefix_runs_once_per_adapter(folders, tok, fp32_serving):
    base, loras = folders
    reg = ModelRegistry(budget_bytes=10**9)
    try:
        a = reg.get(ModelSource("ft:a", "adapter", loras[0], base_path=base))
        b = reg.get(ModelSource("ft:b", "adapter", loras[1], base_path=base))
        prompts = [ids(tok, SYSTEM + t) for t in PROMPTS[:3]]
        same = [(p, greedy(8), a.adapter) for p in prompts]
        gens, shapes = queued_wave(a.engine, tok, same)
        assert [g.generated for g in gens] == [peft_greedy(base, loras[0], p, 8) for p in prompts]
        assert shapes[0][0] == 1  # one adapter: the prefix ran once
        mixed = [(prompts[0], greedy(8), a.adapter), (prompts[1], greedy(8), b.adapter), (prompts[2], greedy(8), None)]
        gens, shapes = queued_wave(a.engine, tok, mixed)
        from transformers import AutoModelForCausalLM

        expected = [peft_greedy(base, loras[0], prompts[0], 8), peft_greedy(base, loras[1], prompts[1], 8),
                    hf_greedy(AutoModelForCausalLM.from_pretrained(base), prompts[2], 8)]
        assert [g.generated for g in gens] == expected
        assert shapes[0][0] == 3  # every row its own adapter: sharing saves nothing, one padded prefill
        # two rows of a, two of b, one base: the prefix runs once for each of the three
        order = [a.adapter, b.adapter, a.adapter, None, b.adapter]
        mixed = [(ids(tok, SYSTEM + PROMPTS[i % 3]), greedy(8), name) for i, name in enumerate(order)]
        gens, shapes = queued_wave(a.engine, tok, mixed)
        shared = len(os.path.commonprefix([p for p, _, _ in mixed]))
        assert shapes[0] == (3, shared) and shapes[1] == (5, max(len(p) for p, _, _ in mixed) - shared)
        plain = AutoModelForCausalLM.from_pretrained(base)
        want = [peft_greedy(base, loras[0] if n == a.adapter else loras[1], p, 8) if n else hf_greedy(plain, p, 8) for p, _, n in mixed]
        assert [g.generated for g in gens] == want
    finally:
        reg.close()


def test_lru_evicts_least_recently_used_adapter_under_budget(folders):
    base, loras = folders
    size = sum(f.stat().st_size for f in loras[0].glob("adapter_model.*"))
    reg = ModelRegistry(budget_bytes=int(size * 2.5))
    try:
        x = reg.get(ModelSource("ft:x", "adapter", loras[0], base_path=base))
        reg.get(ModelSource("ft:y", "adapter", loras[1], base_path=base))
        reg.get(ModelSource("ft:x", "adapter", loras[0], base_path=base))  # x is now the most recent
        reg.get(ModelSource("ft:z", "adapter", loras[2], base_path=base))
        assert reg.cached() == ["ft:x", "ft:z"]
        assert reg.used_bytes <= reg.budget
        loaded = set(x.engine.model.peft_config)
        assert len(loaded) == 2 and x.adapter in loaded
        assert reg.evict("ft:x") and reg.cached() == ["ft:z"]
        assert x.adapter not in x.engine.model.peft_config
        assert not reg.evict("ft:x")
    finally:
        reg.close()


def test_a_failing_request_reports_an_error_and_the_engine_keeps_serving(engine, model, tok):
    with pytest.raises(RuntimeError, match="IndexError"):
        engine.generate([10**6], greedy(4), tok)  # a token id outside the embedding table
    p = ids(tok, PROMPTS[0])
    assert token_ids(engine.generate(p, greedy(4), tok)) == hf_greedy(model, p, 4)


def test_a_failing_request_in_a_prefill_wave_fails_alone(engine, model, tok):
    p = ids(tok, PROMPTS[1])
    done = {}
    with COMPUTE.cond:  # both wait for the same prefill wave
        bad = engine.submit([10**6], greedy(4), tok, callback=lambda e: e.finish_reason and done.setdefault("bad", e))
        good = engine.submit(p, greedy(4), tok, callback=lambda e: e.finish_reason and done.setdefault("good", e))
    deadline = time.time() + 30
    while len(done) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert done["bad"].finish_reason == "error" and "IndexError" in done["bad"].error
    assert done["good"].finish_reason == "length" and good.generated == hf_greedy(model, p, 4)
