"""Per-request sampling: penalties, temperature, top-p, seeded generators, logprobs.

One decoding step hands the whole batch's last-position logits to `sample_batch`; each row keeps
its own parameters and its own `torch.Generator`, so a seeded request draws the same tokens
whether it runs alone or next to others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """What a request asks of the sampler (OpenAI's fields, already validated)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0
    prompt_logprobs: int | None = None  # score the prompt too (legacy `echo` + `logprobs`): top-k size
    timeout: float | None = None  # seconds from submission; past them the generation ends as "length"


    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class TokenChoice:
    """One sampled token and, when asked, its log-probability and the best alternatives."""

    token_id: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def make_generator(seed: int | None) -> torch.Generator:
    g = torch.Generator(device="cpu")
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def apply_penalties(logits: torch.Tensor, generated: list[int], presence: float, frequency: float) -> torch.Tensor:
    """OpenAI's penalties: subtract `frequency * count + presence * (count > 0)` per token."""
    if not generated or (presence == 0.0 and frequency == 0.0):
        return logits
    counts = torch.bincount(torch.tensor(generated, dtype=torch.long), minlength=logits.shape[-1])[: logits.shape[-1]]
    counts = counts.to(device=logits.device, dtype=logits.dtype)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches `top_p` (always the best one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token already enough
    drop[0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(0, order, sorted_logits)


def sample_row(logits: torch.Tensor, params: SamplingParams, generated: list[int], generator: torch.Generator) -> TokenChoice:
    """Pick the next token for one sequence from its float32 logits `[vocab]`."""
    raw_logprobs = torch.log_softmax(logits, dim=-1) if params.logprobs else None
    logits = apply_penalties(logits, generated, params.presence_penalty, params.frequency_penalty)
    if params.greedy:
        token = int(torch.argmax(logits))
    else:
        scaled = top_p_filter(logits / params.temperature, params.top_p)
        probs = torch.softmax(scaled, dim=-1)
        token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
    if raw_logprobs is None:
        return TokenChoice(token)
    top = None
    if params.top_logprobs:
        values, ids = torch.topk(raw_logprobs, params.top_logprobs)
        top = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist())]
    return TokenChoice(token, float(raw_logprobs[token]), top)


def score_prompt(logits: torch.Tensor, prompt_ids: list[int], top: int) -> list[TokenChoice | None]:
    """Log-probability of each prompt token given the ones before it (`logits`: `[len, vocab]`)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    out: list[TokenChoice | None] = [None]  # the first token has no context to be scored against
    for pos, token in enumerate(prompt_ids[1:]):
        row = logprobs[pos]
        best = None
        if top:
            values, ids = torch.topk(row, top)
            best = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist())]
        out.append(TokenChoice(token, float(row[token]), best))
    return out


def sample_batch(logits: torch.Tensor, rows: list) -> list[TokenChoice]:
    """Sample one token per row; `rows[i]` has `.params`, `.generated` and `.generator`."""
    logits = logits.float()
    if all(r.params.greedy and not r.params.logprobs and not _penalized(r.params) for r in rows):
        return [TokenChoice(int(t)) for t in torch.argmax(logits, dim=-1).tolist()]  # the common fast path
    logits = logits.cpu()
    return [sample_row(logits[i], r.params, r.generated, r.generator) for i, r in enumerate(rows)]


def _penalized(p: SamplingParams) -> bool:
    return p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
