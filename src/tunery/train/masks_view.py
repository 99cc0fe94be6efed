"""`tunery train --show-masks N`: print tokenized examples with the trained tokens highlighted.

Masking bugs (training on the prompt, not training the end-of-turn token, a template that shifts
spans) are the most common silent failure in fine-tuning; this makes them visible. On a terminal
trained tokens are green (yellow when weighted below 1, e.g. legacy prompt tokens); without color
they are wrapped in [[...]] (or {{...}} for partial weights).
"""

from __future__ import annotations

from .tokenize import Example


def runs(tokenizer, example: Example) -> list[tuple[str, float]]:
    """Consecutive tokens of equal weight, decoded: [(text, weight)]."""
    out: list[tuple[list[int], float]] = []
    for j, token in enumerate(example.input_ids):
        w = example.weights[j] if j > 0 else 0.0
        if out and out[-1][1] == w:
            out[-1][0].append(token)
        else:
            out.append(([token], w))
    return [(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False), w) for ids, w in out]


def render_plain(tokenizer, example: Example) -> str:
    parts = []
    for text, w in runs(tokenizer, example):
        parts.append(f"[[{text}]]" if w >= 1 else f"{{{{{text}}}}}" if w > 0 else text)
    return "".join(parts)


def show_masks(console, tokenizer, examples: list[Example], n: int) -> None:
    from rich.text import Text

    for k, ex in enumerate(examples[:n], start=1):
        head = f"Example {k} (line {ex.line}): {len(ex)} tokens, {ex.trained_tokens} trained" + (" (truncated)" if ex.truncated else "")
        console.rule(head)
        if console.is_terminal and not console.no_color:
            text = Text()
            for chunk, w in runs(tokenizer, ex):
                text.append(chunk, style="bold black on green" if w >= 1 else "black on yellow" if w > 0 else "dim")
            console.print(text, highlight=False, markup=False)
        else:
            console.print(render_plain(tokenizer, ex), highlight=False, markup=False, soft_wrap=True)
    if n > len(examples):
        console.print(f"(only {len(examples)} example(s) in the file)")
