"""The serving process's single compute thread (`tunery.serve.compute`)."""

from __future__ import annotations

import threading

import pytest

from serve_fixtures import random_lora, save_base, tiny_tokenizer
from tunery.serve.compute import COMPUTE, ComputeThread


def test_call_returns_the_result_and_raises_the_error_in_the_caller():
    compute = ComputeThread()
    assert compute.call(lambda a, b=0: a + b, 2, b=3) == 5
    with pytest.raises(ZeroDivisionError):
        compute.call(lambda: 1 / 0)
    assert compute.call(lambda: 7) == 7  # the thread survives a failed call


def test_a_call_made_on_the_compute_thread_runs_at_once():
    compute = ComputeThread()
    names = compute.call(lambda: (threading.current_thread().name, compute.call(lambda: threading.current_thread().name)))
    assert names == ("tunery-compute", "tunery-compute")  # nested: no deadlock, same thread


def test_every_torch_step_of_serving_runs_on_the_compute_thread(tmp_path, monkeypatch):
    """Loading, hot-loading an adapter, generating and scoring never run torch on another thread
    (each thread would bring its own OpenMP team, and slow every decoding step; see compute.py)."""
    import torch

    import tunery.serve.engine as engine_module
    import tunery.serve.registry as registry_module
    from tunery.serve.registry import ModelRegistry, ModelSource
    from tunery.serve.sampling import SamplingParams

    threads: dict[str, set] = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.current_thread().name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(registry_module, "load_weights", spy("load", registry_module.load_weights))
    monkeypatch.setattr(registry_module, "unpack", spy("adapter", registry_module.unpack))
    monkeypatch.setattr(registry_module, "keeps_packing", lambda config: False)  # so the adapter load calls unpack
    monkeypatch.setattr(engine_module.Engine, "_forward", spy("forward", engine_module.Engine._forward))
    tok = tiny_tokenizer()
    base = save_base(tmp_path / "base")
    adapter = random_lora(base, tmp_path / "lora", seed=0)
    reg = ModelRegistry(budget_bytes=10**9)
    try:
        served = reg.get(ModelSource("base", "base", base))
        tuned = reg.get(ModelSource("ft:a", "adapter", adapter, base_path=base))
        prompt = tok("hello world")["input_ids"]
        served.engine.generate(prompt, SamplingParams(max_tokens=3, temperature=0.0), tok)
        tuned.engine.generate(prompt, SamplingParams(max_tokens=3, temperature=0.0), tok, tuned.adapter)
        scored = tuned.engine.score(tuned.adapter, lambda m: (threading.current_thread().name, m(input_ids=torch.tensor([prompt])).logits.shape))
    finally:
        reg.close()
    assert threads == {"load": {"tunery-compute"}, "adapter": {"tunery-compute"}, "forward": {"tunery-compute"}}
    assert scored[0] == "tunery-compute"


def test_a_closed_engine_cancels_what_waits_and_refuses_new_requests():
    from serve_fixtures import tiny_llama
    from tunery.serve.engine import Engine
    from tunery.serve.sampling import SamplingParams

    tok = tiny_tokenizer()
    engine = Engine(tiny_llama(tok), stop_token_ids=set())
    with COMPUTE.cond:  # queued before the compute thread can take it
        waiting = engine.submit(tok("hello")["input_ids"], SamplingParams(max_tokens=50, temperature=0.0), tok, callback=lambda e: None)
        closing = threading.Thread(target=engine.close)
        closing.start()
    closing.join(timeout=30)
    assert waiting.finish_reason == "cancelled"
    late = engine.submit(tok("hello")["input_ids"], SamplingParams(max_tokens=5, temperature=0.0), tok, callback=lambda e: None)
    assert late.finish_reason == "cancelled" and late.generated == []
