"""What the chat and completions routes share: finding the model a request names (base, the
project's fine-tune or checkpoint), the process-wide `ModelRegistry`, token-budget checks, running
the `n` generations while watching for a disconnected client, and server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request

from tunery.api.errors import APIError
from tunery.serve.engine import Generation
from tunery.serve.registry import ModelRegistry, ModelSource, Served
from tunery.serve.sampling import SamplingParams
from tunery.store import catalog

_registry_lock = threading.Lock()


def fingerprint() -> str:
    """`system_fingerprint`: what changes determinism here is our version and torch's."""
    import torch

    from tunery import __version__

    return f"fp_tunery-{__version__}-torch{torch.__version__}"


def registry(app) -> ModelRegistry:
    """One registry per app (created on first use; its engines are daemon threads)."""
    with _registry_lock:
        reg = getattr(app.state, "serve_registry", None)
        if reg is None:
            reg = app.state.serve_registry = ModelRegistry()
        return reg


def forget_model(app, name: str) -> bool:
    """Evict a deleted fine-tune (and cancel its requests). For the model-deletion route."""
    reg = getattr(app.state, "serve_registry", None)
    return bool(reg and reg.evict(name))


def model_not_found(name: str) -> APIError:
    return APIError(404, catalog.not_found_message(name), param="model", code="model_not_found")


def check_model_given(name) -> None:
    """`model: ""` is a 400, as OpenAI answers it (a missing field is pydantic's 400)."""
    if not isinstance(name, str) or not name.strip():
        raise APIError(400, "you must provide a model parameter", param="model")


def find_source(store, project_id: str, name: str) -> ModelSource:
    """The weights `name` means for the project (`tunery.store.catalog`, remote rules), as a
    serving source; the same 404 for every name the project may not use."""
    check_model_given(name)
    try:
        with store.db.session_scope() as session:
            found = catalog.resolve(session, store.settings, project_id, name)
    except catalog.ModelNotAvailable:
        raise model_not_found(name) from None
    except catalog.ModelUnusable as exc:
        raise APIError(500, str(exc), type="server_error", code="model_unavailable") from None
    return ModelSource(name, found.kind, found.path, base_path=found.base_path, context_length=found.context_length)


async def served_model(request: Request, store, project_id: str, name: str) -> Served:
    reg = registry(request.app)
    try:
        source = await asyncio.to_thread(find_source, store, project_id, name)
    except APIError as err:
        if err.status == 404:
            reg.evict(name)  # deleted while cached
        raise
    return await asyncio.to_thread(reg.get, source)


def token_budget(served: Served, prompt_len: int, max_tokens: int | None, param: str, prompt_param: str, default: int) -> int:
    """The number of tokens to generate, or a 400 when prompt + completion exceed the context.
    Without `max_tokens`, what the context leaves but at most `default` (`default_max_tokens`:
    OpenAI's default is the whole context, which on a CPU holds a batch slot for minutes)."""
    ctx = served.context_length
    if max_tokens is None:
        if prompt_len >= ctx:
            raise APIError(
                400, f"This model's maximum context length is {ctx} tokens. However, your {prompt_param} resulted in {prompt_len} tokens. Please reduce the length of the {prompt_param}.",
                param=prompt_param, code="context_length_exceeded",
            )
        return min(default, ctx - prompt_len)
    if prompt_len + max_tokens > ctx:
        raise APIError(
            400,
            f"This model's maximum context length is {ctx} tokens. However, you requested {prompt_len + max_tokens} tokens "
            f"({prompt_len} in the {prompt_param}, {max_tokens} in the completion). Please reduce the length of the {prompt_param} or completion.",
            param=param, code="context_length_exceeded",
        )
    return max_tokens


def sampling_params(body, max_tokens: int, logprobs: bool, top_logprobs: int, **extra) -> SamplingParams:
    """The sampling fields chat and completion requests share, with OpenAI's defaults (`extra`:
    `timeout`, the server's `max_generation_seconds`; `prompt_logprobs`)."""
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        stop=body.stops,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        **extra,
    )


def check_unsupported(body) -> None:
    if body.logit_bias:
        raise APIError(400, "logit_bias is not supported by this server.", param="logit_bias")


def submit_n(served: Served, prompt_ids: list[int], params: SamplingParams, n: int) -> list[Generation]:
    """`n` independent choices; a seeded request seeds choice i with seed + i (reproducible, not identical)."""
    gens = []
    for i in range(n):
        p = SamplingParams(**{**params.__dict__, "seed": None if params.seed is None else params.seed + i})
        gens.append(served.engine.submit(prompt_ids, p, served.tokenizer, served.adapter))
    return gens


async def wait_all(request: Request, gens: list[Generation]):
    """All results; the client hanging up cancels the generations (their batch slots free up)."""
    task = asyncio.ensure_future(asyncio.gather(*(g.result() for g in gens)))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                raise asyncio.CancelledError
        results = task.result()
    except RuntimeError as exc:
        raise APIError(500, f"generation failed: {exc}", type="server_error") from None
    finally:
        for g in gens:
            g.cancel()  # a no-op for finished ones
        if not task.done():
            task.cancel()
    for g in gens:
        if g.finish_reason not in ("stop", "length"):
            raise APIError(503, f"generation was interrupted ({g.finish_reason}): the model was unloaded", type="server_error")
    return results


async def merged_events(gens: list[Generation]) -> AsyncIterator[tuple[int, object]]:
    """(choice index, event) from all generations as they come; cancels them all if abandoned."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, g):
        async for event in g:
            await queue.put((i, event))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(gens)
        while remaining:
            i, event = await queue.get()
            if event.finish_reason is not None:
                remaining -= 1
            yield i, event
    finally:
        for g in gens:
            g.cancel()
        for t in tasks:
            t.cancel()


def sse(obj) -> str:
    data = obj if isinstance(obj, str) else obj.model_dump_json(exclude_none=False)
    return f"data: {data}\n\n"


def sse_error(message: str) -> str:
    return sse(json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}}))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def token_bytes(tokenizer, token_id: int) -> bytes:
    """The exact bytes of one token. Byte-level BPE tokens can be a fragment of a UTF-8 character,
    which decoding alone would turn into U+FFFD; map their symbols back to bytes instead."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(backend.decoder).__name__ == "ByteLevel" and token_id not in tokenizer.all_special_ids:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        decoder = _byte_decoder()
        if piece and all(c in decoder for c in piece):
            return bytes(decoder[c] for c in piece)
    return tokenizer.decode([token_id], skip_special_tokens=False).encode()


def token_text(tokenizer, token_id: int) -> str:
    return token_bytes(tokenizer, token_id).decode("utf-8", errors="replace")


_BYTE_DECODER: dict | None = None


def _byte_decoder() -> dict:
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        _BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}
    return _BYTE_DECODER
