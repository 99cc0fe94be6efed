"""Wire objects of `/v1/fine_tuning/alpha/graders/{run,validate}`, shaped as the spec's
`RunGraderRequest`/`RunGraderResponse` and `ValidateGraderRequest`/`ValidateGraderResponse`.
The grader itself is an open-ended union checked field by field by `tunery.graders.validate`
(so that an error names the dotted field), hence a JSON object here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from tunery.api.protocol.common import RequestModel


class RunGraderRequest(RequestModel):
    grader: dict[str, Any]
    model_sample: str
    item: dict[str, Any] | None = None


class ValidateGraderRequest(RequestModel):
    grader: dict[str, Any]


class _AllSent(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # every key is sent, null or not


class GraderErrors(_AllSent):
    formula_parse_error: bool = False
    sample_parse_error: bool = False
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False
    invalid_variable_error: bool = False
    other_error: bool = False
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    model_grader_server_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_server_error_details: str | None = None


class RunGraderMetadata(_AllSent):
    name: str
    type: str
    errors: GraderErrors
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None = None  # total tokens of the model graders; per model below
    sampled_model_name: str | None = None


class RunGraderResponse(_AllSent):
    reward: float
    metadata: RunGraderMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]


class ValidateGraderResponse(BaseModel):
    grader: dict[str, Any]
