"""The model graders' `Judge` (`tunery.graders.judge`) backed by Tunery's own serving path.

A judge belongs to one project: its model name is resolved as chat completions resolve it
(`tunery.store.catalog.resolve`: a base name, an alias, an OpenAI name mapped by the operator's
rule, or one of the project's fine-tunes and checkpoints), and served by the process's
`ModelRegistry`, so the judge shares weights and the running batch with `/v1/chat/completions`.

A call submits every conversation to the engine at once (it batches them) and waits for all.
Sampling: greedy unless `temperature` > 0; `seed` seeds every conversation alike (a reproducible
grading); without `max_completion_tokens`, `DEFAULT_MAX_TOKENS`, capped by the context and the
server's `default_max_tokens`. The engine cannot constrain decoding: `response_format` is not
enforced, the graders ask for their JSON in the prompt and parse leniently.

Nothing raises for a model or a conversation: a name that does not resolve gives every reply
`error` "model_not_found: …", a conversation the chat template rejects or that does not fit the
context gets its own `error`, an engine failure its own.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from tunery.graders.judge import JudgeReply
from tunery.serve.chat import ChatError, render_chat
from tunery.serve.registry import ModelRegistry, ModelSource
from tunery.serve.sampling import SamplingParams
from tunery.store import catalog

log = logging.getLogger("tunery.serve")

DEFAULT_MAX_TOKENS = 256  # enough for {"result", "steps"} of a few steps; the grader may ask for more


def model_source(store, project_id: str, name: str) -> ModelSource:
    """The serving source of a model name the project may use (catalog errors pass through)."""
    with store.db.session_scope() as session:
        found = catalog.resolve(session, store.settings, project_id, name)
    return ModelSource(name, found.kind, found.path, base_path=found.base_path, context_length=found.context_length)


class ServeJudge:
    def __init__(self, store, registry: ModelRegistry, project_id: str) -> None:
        self.store, self.registry, self.project_id = store, registry, project_id

    def __call__(self, model: str, conversations: list[list[dict[str, Any]]], sampling: dict[str, Any],
                 response_format: dict[str, Any] | None = None) -> list[JudgeReply]:
        try:
            served = self.registry.get(model_source(self.store, self.project_id, model))
        except catalog.ModelNotAvailable as exc:
            self.registry.evict(model)  # a fine-tune deleted while cached
            return [JudgeReply("", error=f"model_not_found: {exc}") for _ in conversations]
        except catalog.ModelUnusable as exc:
            return [JudgeReply("", error=f"model_unavailable: {exc}") for _ in conversations]
        except Exception as exc:  # weights that fail to load: the grading goes on without them
            log.warning("judge model %r could not be loaded: %s: %s", model, type(exc).__name__, exc)
            return [JudgeReply("", error=f"model_unavailable: the model {model!r} could not be loaded ({type(exc).__name__})")
                    for _ in conversations]
        return self._generate(served, conversations, sampling)

    def _generate(self, served, conversations, sampling) -> list[JudgeReply]:
        limits = self.store.settings
        asked = sampling.get("max_completion_tokens")
        replies: list[JudgeReply | None] = [None] * len(conversations)
        waiting = []
        for i, conv in enumerate(conversations):
            try:
                ids = render_chat(served.tokenizer, conv)
            except ChatError as exc:
                replies[i] = JudgeReply("", error=f"invalid_prompt: {exc}")
                continue
            room = served.context_length - len(ids)
            max_tokens = asked or min(DEFAULT_MAX_TOKENS, limits.default_max_tokens, room)
            if max_tokens > room or room <= 0:
                replies[i] = JudgeReply("", error=f"context_length_exceeded: the prompt ({len(ids)} tokens) and {max_tokens} "
                                                  f"completion tokens exceed the model's context of {served.context_length}")
                continue
            temperature, top_p = sampling.get("temperature"), sampling.get("top_p")
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0 if temperature is None else float(temperature),
                                    top_p=1.0 if top_p is None else float(top_p), seed=sampling.get("seed"),
                                    timeout=limits.max_generation_seconds)
            done, events = threading.Event(), []

            def on_event(e, done=done, events=events):
                events.append(e)
                if e.finish_reason is not None:
                    done.set()

            gen = served.engine.submit(ids, params, served.tokenizer, served.adapter, callback=on_event)
            waiting.append((i, gen, done, events))
        for i, gen, done, events in waiting:
            done.wait()  # the generation's own timeout bounds this wait
            last = events[-1]
            if last.error or last.finish_reason == "cancelled":
                replies[i] = JudgeReply("", error=f"generation_failed: {last.error or 'the model was unloaded'}")
                continue
            p, c = len(gen.prompt_ids), len(gen.generated)
            replies[i] = JudgeReply("".join(e.text for e in events),
                                    {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
        return replies


def judges(store, registry: ModelRegistry):
    """`project_id -> ServeJudge`, what the Evals worker grades a run's criteria with."""
    return lambda project_id: ServeJudge(store, registry, project_id)
