"""Fields shared by the chat and the legacy completions requests, and their `usage` object."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from tunery.api.protocol.common import RequestModel

MAX_N = 16  # choices per request; each choice is a row of the running batch


class SamplingFields(RequestModel):
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(0.0, ge=-2, le=2)
    frequency_penalty: float | None = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _n(cls, v):
        if v is not None and v > MAX_N:
            raise ValueError(f"at most {MAX_N} choices per request (n={v})")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else [s for s in (self.stop or []) if s]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
