"""Schemathesis hooks for `tests/test_fuzz_api.py`: keep fuzzed generation requests short.

A chat or completions request the fuzzer makes valid really generates on the CPU, and an eval
run runs in the background after its 200, so every token count the fuzzer may pick is
bounded here: a length of MAX_TOKENS at most, or left as it is where it is invalid (the fuzzer's
negative cases: 0, -3, "x") or larger than any context (the server answers 400 before it
generates). A request that names no length gets MAX_TOKENS too: the server's default for a
missing `max_tokens` is not fuzzed (its cap is tested where it is configured).
"""

from __future__ import annotations

import schemathesis

MAX_TOKENS = 8
LONGER_THAN_ANY_CONTEXT = 1 << 15
GENERATING = ("/chat/completions", "/completions")  # OpenAI's paths end the same way as ours (/v1/...)


def _bounded(value, top: int):
    if isinstance(value, bool) or not isinstance(value, int) or value <= top or value > LONGER_THAN_ANY_CONTEXT:
        return value
    return top


@schemathesis.hook
def map_body(context, body):
    operation = context.operation
    if operation is None or operation.method.upper() != "POST" or not isinstance(body, dict):
        return body
    path = operation.path
    if path.endswith(GENERATING):
        fields = [f for f in ("max_tokens", "max_completion_tokens") if f in body]
        for field in fields:
            body[field] = _bounded(body[field], MAX_TOKENS)
        if not fields:
            body["max_tokens"] = MAX_TOKENS
    elif path.endswith("/runs") and isinstance(body.get("data_source"), dict):
        sampling = body["data_source"].get("sampling_params")
        if isinstance(sampling, dict) and "max_completion_tokens" in sampling:
            sampling["max_completion_tokens"] = _bounded(sampling["max_completion_tokens"], MAX_TOKENS)
        elif sampling is None:
            body["data_source"]["sampling_params"] = {"max_completion_tokens": MAX_TOKENS}
    return body
