"""`/v1/completions` (legacy) wire objects: `CreateCompletionRequest` and `text_completion`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tunery.api.protocol.chat import StreamOptions
from tunery.api.protocol.sampling import SamplingFields, Usage


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="allow")  # user, best_of (= n): accepted

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]] = "<|endoftext|>"
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = False
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    best_of: int | None = Field(None, ge=1)


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
