"""Running one served model over evaluation examples, through the serving engine.

Answers come from the same `Engine` the chat and completions endpoints use: every prompt is
submitted at once and the engine batches them (continuous batching), greedy unless a temperature
is given. Chat prompts are rendered with the model's own chat template; legacy prompts are raw
text, as `/v1/completions` tokenizes them.

The reference loss is teacher-forced: the example (prompt + reference) is tokenized exactly as the
trainer tokenizes training data, with only the reference's tokens weighted (for a chat, the final
assistant message and its end-of-turn token), and scored by the same weights (and adapter),
packed as the trainer packs validation data: several examples per forward, a prefix they all
share (system prompt, few-shot examples) computed once per row. The loss is the token-weighted
mean, as the trainer's `valid_loss` is; perplexity is its exponential.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

from tunery.eval.dataset import CHAT, EvalError, Example
from tunery.eval.fewshot import few_shot_prompt
from tunery.eval.tasks import Task
from tunery.serve.chat import ChatError, render_chat
from tunery.serve.registry import Served
from tunery.serve.sampling import SamplingParams

Progress = Callable[[int], None]  # called with the number of examples just finished
LOSS_TOKENS = 4096  # tokens per teacher-forced forward (packed rows)
LOSS_CHUNK = 128  # examples packed together between two progress reports


def prompt_ids(served: Served, example: Example, shots: Sequence[Example] = ()) -> list[int]:
    prompt = few_shot_prompt(example, shots)
    if example.kind == CHAT:
        try:
            return render_chat(served.tokenizer, prompt)
        except ChatError as exc:
            raise EvalError(f"line {example.line}: {exc}") from None
    return served.tokenizer(prompt)["input_ids"]


def default_max_tokens(served: Served, examples: Sequence[Example], task: Task) -> int:
    """Room for the longest reference, plus a few words of preamble for classification answers."""
    longest = max(len(served.tokenizer(e.reference, add_special_tokens=False)["input_ids"]) for e in examples)
    return longest + 16 if task.name in ("classification", "regression") else min(2 * longest + 16, 1024)


def check_context(served: Served, examples: Sequence[Example], prompts: Sequence[list[int]], max_tokens: int) -> None:
    """An `EvalError` naming the first example whose prompt and answer do not fit the model's context."""
    for e, ids in zip(examples, prompts):
        if len(ids) + max_tokens > served.context_length:
            raise EvalError(f"line {e.line}: the prompt is {len(ids)} tokens; with {max_tokens} to generate it exceeds the model's context of {served.context_length} tokens")


def generate_answers(
    served: Served,
    prompts: Sequence[list[int]],
    max_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    progress: Progress | None = None,
) -> list[str]:
    """The engine's answer to each prompt; all are queued at once so the engine batches them."""
    answers: list[str | None] = [None] * len(prompts)
    texts: list[list[str]] = [[] for _ in prompts]
    errors: list[str] = []
    done = threading.Event()
    remaining = [len(prompts)]
    lock = threading.Lock()

    def on_event(i: int, event) -> None:
        texts[i].append(event.text)
        if event.finish_reason is None:
            return
        with lock:
            if event.error or event.finish_reason not in ("stop", "length"):
                errors.append(f"example {i + 1}: generation {event.finish_reason}: {event.error or ''}".rstrip(": "))
            answers[i] = "".join(texts[i])
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()
        if progress is not None:
            progress(1)

    if not prompts:
        return []
    for i, ids in enumerate(prompts):
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=None if seed is None else seed + i, stop=list(stop))
        served.engine.submit(ids, params, served.tokenizer, served.adapter, callback=lambda e, i=i: on_event(i, e))
    done.wait()
    if errors:
        raise RuntimeError(f"{len(errors)} generation(s) failed; first: {errors[0]}")
    return answers  # type: ignore[return-value]


def _record(example: Example, shots: Sequence[Example], reference: str):
    """The training record of prompt (with shots) + `reference`, only the reference weighted."""
    from tunery.train.records import Record

    prompt = few_shot_prompt(example, shots)
    if example.kind == CHAT:  # earlier assistant turns (the shots) get weight 0
        messages = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in prompt]
        return Record(example.line, "chat", {"messages": [*messages, {"role": "assistant", "content": reference}]})
    return Record(example.line, "completion", {"prompt": prompt, "completion": reference})


def _nll(served: Served, tok, records: Sequence) -> tuple[float, float]:
    """(weighted sum of the reference tokens' negative log-likelihoods, sum of weights) of `records`."""
    from tunery.train.modeling import micro_batch_loss
    from tunery.train.packing import micro_batches

    total = weight = 0.0
    for mb in micro_batches([tok.encode(r) for r in records], LOSS_TOKENS, packed=True, pad_id=0):
        # On the compute thread between two engine steps: the served weights, and no second OpenMP team.
        loss, _ = served.engine.score(served.adapter, lambda model, mb=mb: micro_batch_loss(model, mb.to(served.engine.device)))
        total, weight = total + float(loss), weight + mb.weight
    return total, weight


def _tokenizer(served: Served):
    from tunery.train.tokenize import Tokenizer

    return Tokenizer(served.tokenizer, served.context_length, prompt_loss_weight=0.0)


def reference_loss(served: Served, examples: Sequence[Example], shots: Sequence[Example] = (), progress: Progress | None = None) -> dict:
    """Teacher-forced loss and perplexity of the references given their prompts (with the shots)."""
    tok = _tokenizer(served)
    total = weight = 0.0
    for start in range(0, len(examples), LOSS_CHUNK):
        chunk = examples[start : start + LOSS_CHUNK]
        s, w = _nll(served, tok, [_record(e, shots, e.reference) for e in chunk])
        total, weight = total + s, weight + w
        if progress is not None:
            progress(len(chunk))
    if not weight:
        return {"loss": None, "perplexity": None}
    loss = total / weight
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}


def label_probabilities(served: Served, example: Example, answers: Sequence[str]) -> list[float]:
    """P(answer | prompt) for each candidate answer (written as in the references, e.g. " 1"),
    normalized over the candidates: the model's scores for AUROC/AUPRC."""
    tok = _tokenizer(served)
    logps = [-_nll(served, tok, [_record(example, (), a)])[0] for a in answers]
    top = max(logps)
    weights = [math.exp(lp - top) for lp in logps]
    return [w / sum(weights) for w in weights]
