"""`POST /v1/completions` (legacy): raw prompts, as prompt/completion fine-tunes were trained.

The prompt is tokenized exactly as the trainer tokenized legacy records (plain text, the
tokenizer's own special tokens, no chat template), so a prompt ending in the training separator
gets the fine-tuned completion.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from tunery.api import inference as inf
from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError
from tunery.api.openapi import event_stream
from tunery.api.protocol.completions import CompletionChoice, CompletionLogprobs, CompletionRequest, TextCompletion
from tunery.api.protocol.sampling import Usage

router = APIRouter(tags=["completions"])


def _prompts(body: CompletionRequest, tokenizer) -> list[list[int]]:
    p = body.prompt
    if isinstance(p, str):
        p = [p]
    if not p:
        raise APIError(400, "'prompt' is empty.", param="prompt")
    if all(isinstance(x, int) for x in p):
        p = [p]
    out = []
    for i, item in enumerate(p):
        ids = tokenizer(item)["input_ids"] if isinstance(item, str) else list(item)
        if not ids:
            raise APIError(400, f"prompt[{i}] is empty.", param="prompt")
        if any(t < 0 or t >= len(tokenizer) for t in ids):
            raise APIError(400, f"prompt[{i}] has a token id outside the vocabulary (0..{len(tokenizer) - 1}).", param="prompt")
        out.append(ids)
    return out


def _logprobs(tokenizer, entries, start_offset: int) -> CompletionLogprobs:
    """Legacy logprobs: parallel lists of tokens, their logprobs, top alternatives and text offsets."""
    tokens, values, tops, offsets = [], [], [], []
    offset = start_offset
    for token_id, choice in entries:
        text = inf.token_text(tokenizer, token_id)
        tokens.append(text)
        values.append(None if choice is None else choice.logprob)
        tops.append(None if choice is None or choice.top is None else {inf.token_text(tokenizer, i): v for i, v in choice.top})
        offsets.append(offset)
        offset += len(text)
    return CompletionLogprobs(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)


def _choice_logprobs(tokenizer, gen, tokens, echo: bool) -> CompletionLogprobs:
    entries = []
    if echo:
        prompt = gen.prompt_logprobs or [None] * len(gen.prompt_ids)
        entries += list(zip(gen.prompt_ids, prompt))
    entries += [(t.token_id, t) for t in tokens]
    return _logprobs(tokenizer, entries, 0)


@router.post("/completions", response_model=TextCompletion, responses={200: event_stream(TextCompletion)})
async def create_completion(body: CompletionRequest, request: Request, project=Depends(current_project), store=Depends(get_store)):
    inf.check_unsupported(body)
    if body.suffix:
        raise APIError(400, "suffix (insertion) is not supported by this server.", param="suffix")
    n = body.n or 1
    if body.best_of is not None and body.best_of != n:
        raise APIError(400, "best_of other than n is not supported by this server.", param="best_of")
    if body.max_tokens == 0:
        raise APIError(400, "max_tokens must be at least 1.", param="max_tokens")
    served = await inf.served_model(request, store, project.id, body.model)
    prompts = _prompts(body, served.tokenizer)
    if len(prompts) * n > 4 * 16:
        raise APIError(400, f"too many prompts x n ({len(prompts)} x {n}); at most 64 choices per request.", param="n")
    limits = store.settings
    budgets = [inf.token_budget(served, len(p), body.max_tokens, "max_tokens", "prompt", limits.default_max_tokens) for p in prompts]
    logprobs = body.logprobs is not None
    gens = []
    for ids, budget in zip(prompts, budgets):
        params = inf.sampling_params(
            body, budget, logprobs, body.logprobs or 0,
            prompt_logprobs=(body.logprobs or 0) if (logprobs and body.echo) else None, timeout=limits.max_generation_seconds,
        )
        gens += inf.submit_n(served, ids, params, n)
    cid, created = inf.new_id("cmpl"), inf.now()
    prompt_tokens = sum(len(p) for p in prompts)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(gens, served, cid, created, body, prompt_tokens, usage), media_type="text/event-stream")
    results = await inf.wait_all(request, gens)
    choices = []
    for i, (gen, r) in enumerate(zip(gens, results)):
        head = served.tokenizer.decode(gen.prompt_ids, skip_special_tokens=False) if body.echo else ""
        choices.append(CompletionChoice(
            index=i, text=head + r.text, finish_reason=r.finish_reason,
            logprobs=_choice_logprobs(served.tokenizer, gen, r.tokens, bool(body.echo)) if logprobs else None,
        ))
    completion = sum(r.completion_tokens for r in results)
    return TextCompletion(
        id=cid, created=created, model=body.model, choices=choices, system_fingerprint=inf.fingerprint(),
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion),
    )


async def _stream(gens, served, cid, created, body, prompt_tokens, include_usage):
    def chunk(choices, usage=None):
        obj = TextCompletion(id=cid, created=created, model=body.model, choices=choices, usage=usage, system_fingerprint=inf.fingerprint())
        return inf.sse(obj.model_dump_json(exclude={"usage"} if usage is None else None))

    tok = served.tokenizer
    logprobs = body.logprobs is not None
    if body.echo:
        for i, gen in enumerate(gens):
            lp = _logprobs(tok, list(zip(gen.prompt_ids, [None] * len(gen.prompt_ids))), 0) if logprobs else None
            yield chunk([CompletionChoice(index=i, text=tok.decode(gen.prompt_ids, skip_special_tokens=False), logprobs=lp, finish_reason=None)])
    async for i, event in inf.merged_events(gens):
        if event.error or event.finish_reason == "cancelled":
            yield inf.sse_error(event.error or "generation was interrupted: the model was unloaded")
            return
        if event.text or event.tokens or event.finish_reason:
            lp = _logprobs(tok, [(t.token_id, t) for t in event.tokens], 0) if logprobs else None
            yield chunk([CompletionChoice(index=i, text=event.text, logprobs=lp, finish_reason=event.finish_reason)])
    if include_usage:
        completion = sum(len(g.generated) for g in gens)
        yield chunk([], Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion))
    yield "data: [DONE]\n\n"
