"""What a grading returns, in the shape of OpenAI's `RunGraderResponse`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The 14 keys of RunGraderResponse.metadata.errors, in the spec's order. The *_details and
# *_type keys are strings or None; the rest are booleans.
ERROR_KEYS = (
    "formula_parse_error", "sample_parse_error", "truncated_observation_error",
    "unresponsive_reward_error", "invalid_variable_error", "other_error",
    "python_grader_server_error", "python_grader_server_error_type",
    "python_grader_runtime_error", "python_grader_runtime_error_details",
    "model_grader_server_error", "model_grader_refusal_error", "model_grader_parse_error",
    "model_grader_server_error_details",
)
_STRING_KEYS = {"python_grader_server_error_type", "python_grader_runtime_error_details", "model_grader_server_error_details"}


def no_errors() -> dict[str, Any]:
    return {key: (None if key in _STRING_KEYS else False) for key in ERROR_KEYS}


class GraderError(ValueError):
    """A grader object that cannot run; `param` is the dotted field path (e.g. `grader.operation`)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message, self.param = message, param


@dataclass
class GradeResult:
    reward: float
    name: str
    type: str
    errors: dict[str, Any] = field(default_factory=no_errors)
    execution_time: float = 0.0
    scores: dict[str, Any] = field(default_factory=dict)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    label: str | None = None  # label_model's chosen label
    sampled_model_name: str | None = None
    token_usage: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> usage
    sample: dict[str, Any] | None = None  # what a model grader answered (for output items)

    def metadata(self) -> dict[str, Any]:
        total = _sum_usage(self.token_usage.values())
        return {
            "name": self.name, "type": self.type, "errors": dict(self.errors),
            "execution_time": self.execution_time, "scores": dict(self.scores),
            # The spec types token_usage as integer|null (its example shows an object): the
            # total tokens, null when no model was asked; the detail is per model below.
            "token_usage": None if total is None else total["total_tokens"], "sampled_model_name": self.sampled_model_name,
        }

    def to_run_response(self) -> dict[str, Any]:
        return {
            "reward": self.reward, "metadata": self.metadata(), "sub_rewards": dict(self.sub_rewards),
            "model_grader_token_usage_per_model": {m: dict(u) for m, u in self.token_usage.items()},
        }


def _sum_usage(usages) -> dict[str, int] | None:
    usages = list(usages)
    if not usages:
        return None
    keys = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
    return {k: sum(int(u.get(k, 0)) for u in usages) for k in keys}
