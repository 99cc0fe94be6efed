"""A continuous-batching generation engine for one set of model weights.

The serving process's compute thread (`compute.py`) runs its steps. Between two decoding steps it
admits waiting requests (prefilling them together in one left-padded forward and merging their KV
cache into the running batch; a prompt prefix the whole wave shares, such as a system prompt or
few-shot examples, is computed once per adapter and its keys/values shared by that adapter's rows),
then runs one step for every running sequence at once, samples each row with its own parameters,
and drops the rows that finished or were cancelled. Rows may use different LoRA adapters of the
same base: the batched multi-LoRA step (`multilora.py`) applies each row's adapter inside one
forward pass.

The asyncio side talks to it through `Engine.submit`, which returns a `Generation` whose events
arrive on an asyncio queue (thread-safe hand-off with `call_soon_threadsafe`).

A request's `timeout` (the server's per-request generation deadline, counted from submission,
waiting included) ends it like `max_tokens` does: finish_reason "length" with the text so far, so
a streamed answer keeps what it already sent and a client handles it as any truncated answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from tunery.serve.batch_cache import BatchCache
from tunery.serve.compute import COMPUTE
from tunery.serve.detokenize import TextStream
from tunery.serve.multilora import MultiLoRA
from tunery.serve.sampling import SamplingParams, TokenChoice, make_generator, sample_batch, score_prompt

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch
MAX_PREFILL_TOKENS = 4096  # padded prompt tokens in one prefill forward (bounds its memory and stall)
MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a separate forward


@dataclass
class Event:
    """What one decoding step produced for one request."""

    text: str
    tokens: list[TokenChoice]
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None


@dataclass
class Generation:
    """A request in the engine. Iterate it (async) for events; `cancel()` stops it at the next step."""

    prompt_ids: list[int]
    params: SamplingParams
    tokenizer: object
    adapter: str | None = None
    id: int = 0
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    first_token_at: float | None = None
    prompt_logprobs: list[TokenChoice | None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    _queue: asyncio.Queue | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _callback: object = None

    def __post_init__(self) -> None:
        self.generator = make_generator(self.params.seed)
        self.stream = TextStream(self.tokenizer, self.params.stop)
        self.submitted_at = time.perf_counter()
        self.deadline = None if self.params.timeout is None else self.submitted_at + self.params.timeout

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def cancel(self) -> None:
        self.cancelled.set()

    def _emit(self, event: Event) -> None:
        if self._callback is not None:
            self._callback(event)
        if self._queue is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def __aiter__(self):
        return self._events()

    async def _events(self):
        while True:
            event = await self._queue.get()
            yield event
            if event.finish_reason is not None:
                return

    async def result(self) -> "Completion":
        """Wait for the whole generation."""
        text, tokens = [], []
        async for event in self:
            text.append(event.text)
            tokens.extend(event.tokens)
            if event.error:
                raise RuntimeError(event.error)
        return Completion("".join(text), tokens, self.finish_reason, len(self.prompt_ids), len(self.generated))


@dataclass
class Completion:
    text: str
    tokens: list[TokenChoice]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """Continuous batching over one model (a base, possibly wrapped by peft with several adapters)."""

    def __init__(self, model, stop_token_ids: set[int], max_batch_size: int = 32, name: str = "model"):
        self.model = model
        self.stop_token_ids = set(stop_token_ids)
        self.max_batch_size = max_batch_size
        self.name = name
        self._pending: deque[Generation] = deque()
        self._running: list[Generation] = []
        self._cache = BatchCache()
        self._lora = MultiLoRA()
        self._ids = itertools.count(1)
        self._closed = False
        COMPUTE.add(self)

    # --- public ----------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, tokenizer, adapter: str | None = None, callback=None) -> Generation:
        """Queue a request. From a coroutine, events arrive on its asyncio queue; `callback` is for threads."""
        gen = Generation(list(prompt_ids), params, tokenizer, adapter, id=next(self._ids), _callback=callback)
        try:
            gen._loop = asyncio.get_running_loop()
            gen._queue = asyncio.Queue()
        except RuntimeError:
            pass
        with COMPUTE.cond:
            if not self._closed:
                self._pending.append(gen)
                COMPUTE.cond.notify()
                return gen
        self._finish(gen, "cancelled")
        return gen

    def generate(self, prompt_ids: list[int], params: SamplingParams, tokenizer, adapter: str | None = None) -> Completion:
        """Blocking convenience for scripts and tests outside an event loop."""
        done, events = threading.Event(), []

        def on_event(e: Event) -> None:
            events.append(e)
            if e.finish_reason is not None:
                done.set()

        gen = self.submit(prompt_ids, params, tokenizer, adapter, callback=on_event)
        done.wait()
        if events[-1].error:
            raise RuntimeError(events[-1].error)
        return Completion("".join(e.text for e in events), [t for e in events for t in e.tokens], gen.finish_reason, len(gen.prompt_ids), len(gen.generated))

    @property
    def active(self) -> int:
        return len(self._running) + len(self._pending)

    def uses_adapter(self, adapter: str) -> bool:
        return any(g.adapter == adapter for g in list(self._running) + list(self._pending))

    def cancel_adapter(self, adapter: str) -> None:
        """Cancel every request of one adapter (its model is being evicted or deleted)."""
        for g in list(self._running) + list(self._pending):
            if g.adapter == adapter:
                g.cancel()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(self, adapter: str | None, fn):
        """`fn(model)` with `adapter` (None: the base) applied to every row, on the compute thread
        between two steps: teacher-forced scoring with the served weights outside generation."""
        return COMPUTE.call(self._score, adapter, fn)

    def _score(self, adapter: str | None, fn):
        model = self.model
        with torch.inference_mode():
            if not hasattr(model, "peft_config"):
                return fn(model)
            if self._lora.sync(model):
                with self._lora.rows([adapter], self.device):  # one row's mask broadcasts over the batch
                    return fn(model)
            if adapter is None:
                with model.disable_adapter():
                    return fn(model)
            previous = model.active_adapter
            model.set_adapter(adapter)
            try:
                return fn(model)
            finally:
                model.set_adapter(previous)

    def close(self) -> None:
        """Stop serving: waiting and running requests end as cancelled."""
        COMPUTE.call(self._close)

    def _close(self) -> None:
        with COMPUTE.cond:
            self._closed = True
            gens, self._pending, self._running = list(self._pending) + self._running, deque(), []
        COMPUTE.remove(self)
        for g in gens:
            self._finish(g, "cancelled")
        self._cache = BatchCache()

    # --- steps, on the compute thread --------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self._pending or self._running)

    def step(self) -> None:
        """Admit what waits, then one decoding step for every running row."""
        try:
            with torch.inference_mode():
                self._admit()
                if self._running:
                    self._decode_step()
        except Exception as exc:  # a failed step fails its requests, never the server
            for g in list(self._running):
                self._fail(g, exc)
            self._running, self._cache = [], BatchCache()

    def _admit(self) -> None:
        """Prefill every waiting request that fits: one padded forward for all of them, so the
        running rows stall once per wave of arrivals rather than once per request."""
        wave: list[Generation] = []
        shared = 0  # the wave's common prompt prefix
        while self._pending and len(self._running) + len(wave) < self.max_batch_size:
            with COMPUTE.cond:
                gen = self._pending[0]
                if wave:
                    now_shared = _common_prefix(wave[0], gen, shared)
                    longest = max([len(gen.prompt_ids), *(len(g.prompt_ids) for g in wave)])
                    saved = now_shared if now_shared >= MIN_SHARED_PREFIX else 0
                    heads = len({g.adapter for g in wave} | {gen.adapter})  # the prefix runs once per adapter
                    if saved * heads + (len(wave) + 1) * (longest - saved) > MAX_PREFILL_TOKENS:
                        break  # the rest waits for the next wave (bounded memory and stall)
                self._pending.popleft()
            if gen.cancelled.is_set():
                self._finish(gen, "cancelled")
            elif gen.past_deadline():  # its time went by in the queue
                self._finish(gen, "length")
            elif gen.params.prompt_logprobs is not None:  # scores every prompt position: alone
                self._prefill([gen])
            else:
                shared = now_shared if wave else len(gen.prompt_ids) - 1
                wave.append(gen)
        if wave:
            self._prefill(wave)
        self._drop_finished()  # a request can finish on its first token

    def _forward(self, input_ids, attention_mask, position_ids, cache, adapters: list[str | None], all_positions=False):
        kwargs, rows = {}, contextlib.nullcontext()
        if hasattr(self.model, "peft_config"):
            if self._lora.sync(self.model):  # one batched LoRA step per layer, whatever the mix
                rows = self._lora.rows(adapters, input_ids.device)
            else:  # adapters the batched step doesn't cover (DoRA, modules_to_save, ...): peft's loop
                kwargs["adapter_names"] = [a or BASE_ADAPTER for a in adapters]
        with rows:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=cache, use_cache=True, logits_to_keep=0 if all_positions else 1, **kwargs,
            )
        return out.logits if all_positions else out.logits[:, -1, :]

    def _prefill(self, gens: list[Generation]) -> None:
        """One forward over `gens`' prompts, left-padded to the longest (the batch cache's layout),
        then their first tokens. A failure fails only the request that causes it."""
        try:
            if gens[0].params.prompt_logprobs is not None:  # alone (see _admit): no padding
                gen = gens[0]
                ids = torch.tensor([gen.prompt_ids], device=self.device)
                cache, mask = BatchCache.new_single(), torch.ones_like(ids)
                logits = self._forward(ids, mask, mask.cumsum(dim=1) - 1, cache, [gen.adapter], all_positions=True)[0]
                gen.prompt_logprobs = score_prompt(logits[:-1], gen.prompt_ids, gen.params.prompt_logprobs)
                logits = logits[-1:]
            else:
                shared = len(gens[0].prompt_ids) - 1 if len(gens) > 1 else 0
                for g in gens[1:]:
                    shared = _common_prefix(gens[0], g, shared)
                logits, cache, mask = self._prefill_rows(gens, shared if shared >= MIN_SHARED_PREFIX else 0)
            choices = sample_batch(logits, gens)
        except Exception as exc:
            if len(gens) > 1:  # find the culprit: the others still get served
                for g in gens:
                    self._prefill([g])
            else:
                self._fail(gens[0], exc)
            return
        self._cache.add(cache, mask)
        now = time.perf_counter()
        for gen, choice in zip(gens, choices):
            self._running.append(gen)
            gen.first_token_at = now
            self._accept(gen, choice)

    def _prefill_rows(self, gens: list[Generation], shared: int):
        """(last-position logits, cache, mask) of `gens`' prompts. The first `shared` tokens, common
        to every prompt, run once per adapter (its keys/values depend on the adapter), one row each
        in one forward; each row's keys/values for them come from its adapter's copy, and its own
        tokens follow, left-padded to the longest: `[shared prefix][padding][own tokens]`, the mask
        marking the padding. Without two rows of one adapter nothing would be saved: no prefix."""
        device = self.device
        adapters = [g.adapter for g in gens]
        heads = list(dict.fromkeys(adapters))  # the wave's adapters, in order of first use
        if len(heads) == len(gens):
            shared = 0
        cache = BatchCache.new_single()
        if shared:
            head = torch.tensor([gens[0].prompt_ids[:shared]] * len(heads), device=device)
            positions = torch.arange(shared, device=device)[None].expand(len(heads), -1)
            self._forward(head, torch.ones_like(head), positions, cache, heads)
            if len(heads) == 1:  # views, not copies: the next forward's cat makes the rows
                for layer in cache.layers:
                    layer.keys = layer.keys.expand(len(gens), -1, -1, -1)
                    layer.values = layer.values.expand(len(gens), -1, -1, -1)
            else:
                row_head = torch.tensor([heads.index(a) for a in adapters], device=device)
                for layer in cache.layers:
                    layer.keys = layer.keys.index_select(0, row_head)
                    layer.values = layer.values.index_select(0, row_head)
        tails = [g.prompt_ids[shared:] for g in gens]
        longest = max(len(t) for t in tails)
        ids = torch.zeros(len(gens), longest, dtype=torch.long)
        own = torch.zeros(len(gens), longest, dtype=torch.long)
        for row, tail in enumerate(tails):
            ids[row, longest - len(tail):] = torch.tensor(tail)
            own[row, longest - len(tail):] = 1
        positions = (shared + own.cumsum(dim=1) - 1).clamp(min=0)
        mask = torch.cat([torch.ones(len(gens), shared, dtype=torch.long), own], dim=1)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        return self._forward(ids, mask, positions, cache, adapters), cache, mask

    def _decode_step(self) -> None:
        self._drop_finished()  # cancelled rows leave before the step, not after
        if not self._running:
            return
        device = self.device
        rows = self._running
        ids = torch.tensor([[g.generated[-1]] for g in rows], device=device)
        positions = torch.tensor([[len(g.prompt_ids) + len(g.generated) - 1] for g in rows], device=device)
        mask = self._cache.step_mask().to(device)
        logits = self._forward(ids, mask, positions, self._cache.hf_cache(), [g.adapter for g in rows])
        for gen, choice in zip(rows, sample_batch(logits, rows)):
            self._accept(gen, choice)
        self._drop_finished()

    def _accept(self, gen: Generation, choice: TokenChoice) -> None:
        """Record a sampled token, emit its text, decide whether the sequence is done."""
        if gen.cancelled.is_set():
            gen.finish_reason = "cancelled"
            gen._emit(Event("", [], "cancelled"))
            return
        gen.generated.append(choice.token_id)
        is_stop_token = choice.token_id in self.stop_token_ids
        text = gen.stream.push(None if is_stop_token else choice.token_id)
        reason = None
        if is_stop_token or gen.stream.stopped:
            reason = "stop"
        elif len(gen.generated) >= gen.params.max_tokens or gen.past_deadline():
            reason = "length"
            text += gen.stream.push(None)
            if gen.stream.stopped:
                reason = "stop"
        tokens = [] if is_stop_token else [choice]
        gen.finish_reason = reason
        gen._emit(Event(text, tokens, reason))

    def _drop_finished(self) -> None:
        keep = [i for i, g in enumerate(self._running) if g.finish_reason is None and not g.cancelled.is_set()]
        for i, g in enumerate(self._running):
            if i not in keep and g.finish_reason is None:
                self._finish(g, "cancelled")
        if len(keep) != len(self._running):
            order = self._cache.keep(keep)  # rows move in the cache: follow its order
            self._running = [self._running[i] for i in order]

    def _finish(self, gen: Generation, reason: str) -> None:
        gen.finish_reason = reason
        gen._emit(Event("", [], reason))

    def _fail(self, gen: Generation, exc: Exception) -> None:
        gen.finish_reason = "error"
        gen._emit(Event("", [], "error", error=f"{type(exc).__name__}: {exc}"))


def _common_prefix(first: Generation, gen: Generation, limit: int) -> int:
    """How many leading prompt tokens (at most `limit`) `gen` shares with `first`. Each prompt keeps
    at least its last token, whose logits start its answer."""
    limit = min(limit, len(gen.prompt_ids) - 1, len(first.prompt_ids) - 1)
    a, b = first.prompt_ids, gen.prompt_ids
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n
