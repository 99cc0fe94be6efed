"""Few-shot prompts: K solved examples from a training file shown before each question.

The same K shots go in front of every evaluated example (chosen once, seeded), so scores differ
only by the question. For classification the shots cycle through the labels (one of each label
before a second of any), so a 5-shot prompt for five classes shows every class once.

Chat: the shots become user/assistant turns after the system message(s). Legacy prompt/completion:
the shots are `prompt + completion` texts, each followed by a blank line, before the prompt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tunery.eval.dataset import CHAT, EvalError, Example

SHOT_SEPARATOR = "\n\n"


def select_shots(pool: Sequence[Example], k: int, labels: Sequence[str] | None = None, seed: int = 0) -> list[Example]:
    """`k` examples from `pool`; balanced across `labels` when given."""
    if k < 0:
        raise EvalError(f"--few-shot must be 0 or more, got {k}")
    if k > len(pool):
        raise EvalError(f"--few-shot {k} needs at least {k} examples in the few-shot file, it has {len(pool)}")
    rng = random.Random(seed)
    if not labels:
        return rng.sample(list(pool), k)
    by_label = {label: [e for e in pool if e.reference.strip() == label] for label in labels}
    for group in by_label.values():
        rng.shuffle(group)
    shots: list[Example] = []
    while len(shots) < k:
        for label in labels:
            if by_label[label] and len(shots) < k:
                shots.append(by_label[label].pop())
        if not any(by_label.values()):
            break
    if len(shots) < k:  # the pool's other answers (not in the label set) fill the rest
        rest = [e for e in pool if e not in shots]
        shots += rng.sample(rest, k - len(shots))
    rng.shuffle(shots)  # no fixed label order for the model to copy
    return shots


def few_shot_prompt(example: Example, shots: Sequence[Example]) -> list[dict] | str:
    """`example`'s prompt with `shots` in front of its question."""
    if not shots:
        return example.prompt
    if any(s.kind != example.kind for s in shots):
        raise EvalError(f"the few-shot file holds {shots[0].kind} records but the data is {example.kind} records")
    if example.kind == CHAT:
        n_head = 0  # the leading system messages stay first
        while n_head < len(example.prompt) and example.prompt[n_head]["role"] in ("system", "developer"):
            n_head += 1
        turns = []
        for shot in shots:
            turns += [m for m in shot.prompt if m["role"] not in ("system", "developer")]
            turns.append({"role": "assistant", "content": shot.reference})
        return [*example.prompt[:n_head], *turns, *example.prompt[n_head:]]
    return "".join(shot.prompt + shot.reference + SHOT_SEPARATOR for shot in shots) + example.prompt
