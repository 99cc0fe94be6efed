"""`POST /v1/chat/completions` for base models, fine-tuned models and their checkpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from tunery.api import inference as inf
from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError
from tunery.api.openapi import event_stream
from tunery.api.protocol.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    TokenLogprob,
    TopLogprob,
)
from tunery.api.protocol.sampling import Usage
from tunery.serve.chat import ChatError, render_chat

router = APIRouter(tags=["chat"])


def _logprobs(tokenizer, tokens) -> ChoiceLogprobs:
    def top(token_id, logprob):
        raw = inf.token_bytes(tokenizer, token_id)
        return TopLogprob(token=raw.decode("utf-8", errors="replace"), logprob=logprob, bytes=list(raw))

    content = []
    for t in tokens:
        head = top(t.token_id, t.logprob)
        content.append(TokenLogprob(**head.model_dump(), top_logprobs=[top(i, v) for i, v in (t.top or [])]))
    return ChoiceLogprobs(content=content)


@router.post("/chat/completions", response_model=ChatCompletion, responses={200: event_stream(ChatCompletionChunk)})
async def create_chat_completion(body: ChatCompletionRequest, request: Request, project=Depends(current_project), store=Depends(get_store)):
    inf.check_unsupported(body)
    if body.response_format and body.response_format.get("type") not in (None, "text"):
        raise APIError(400, f"response_format type {body.response_format.get('type')!r} is not supported; only 'text'.", param="response_format")
    served = await inf.served_model(request, store, project.id, body.model)
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    try:
        prompt_ids = render_chat(served.tokenizer, messages, body.tools)
    except ChatError as err:
        raise APIError(400, str(err), param=err.param) from None
    max_tokens = body.max_completion_tokens or body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    limits = store.settings
    budget = inf.token_budget(served, len(prompt_ids), max_tokens, param, "messages", limits.default_max_tokens)
    params = inf.sampling_params(body, budget, bool(body.logprobs), body.top_logprobs or 0, timeout=limits.max_generation_seconds)
    gens = inf.submit_n(served, prompt_ids, params, body.n or 1)
    cid, created = inf.new_id("chatcmpl"), inf.now()
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(gens, served, cid, created, body.model, usage), media_type="text/event-stream")
    results = await inf.wait_all(request, gens)
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(content=r.text),
            logprobs=_logprobs(served.tokenizer, r.tokens) if params.logprobs else None,
            finish_reason=r.finish_reason,
        )
        for i, r in enumerate(results)
    ]
    completion = sum(r.completion_tokens for r in results)
    return ChatCompletion(
        id=cid, created=created, model=body.model, choices=choices, system_fingerprint=inf.fingerprint(),
        usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion, total_tokens=len(prompt_ids) + completion),
    )


async def _stream(gens, served, cid, created, model, include_usage):
    def chunk(choices, usage=None):
        return inf.sse(ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage, system_fingerprint=inf.fingerprint()))

    # OpenAI opens each choice with a role-only delta.
    for i in range(len(gens)):
        yield chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))])
    async for i, event in inf.merged_events(gens):
        if event.error or event.finish_reason == "cancelled":
            yield inf.sse_error(event.error or "generation was interrupted: the model was unloaded")
            return
        logprobs = _logprobs(served.tokenizer, event.tokens) if gens[i].params.logprobs and event.tokens else None
        if event.text or logprobs:
            yield chunk([ChunkChoice(index=i, delta=Delta(content=event.text), logprobs=logprobs)])
        if event.finish_reason:
            yield chunk([ChunkChoice(index=i, delta=Delta(), finish_reason=event.finish_reason)])
    if include_usage:
        prompt = len(gens[0].prompt_ids)
        completion = sum(len(g.generated) for g in gens)
        yield chunk([], Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion))
    yield "data: [DONE]\n\n"
