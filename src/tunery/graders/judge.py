"""How model graders reach a model without importing the serving layer.

The caller (the Evals worker, the graders endpoint, the RFT trainer) passes a `Judge`: given a
model name, a batch of chat conversations and sampling settings, it returns one reply per
conversation. The serving engine batches them; tests pass a judge backed by a real model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class JudgeReply:
    text: str
    usage: dict[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens, total_tokens
    error: str | None = None  # set when the model could not answer (unknown model, engine failure)


class Judge(Protocol):
    def __call__(self, model: str, conversations: list[list[dict[str, Any]]], sampling: dict[str, Any],
                 response_format: dict[str, Any] | None = None) -> list[JudgeReply]: ...
