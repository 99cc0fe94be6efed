"""Wire objects of `/v1/evaluations` (Tunery's own resource; OpenAI has no equivalent).

`POST /v1/evaluations` starts an evaluation of one or more models on an uploaded JSONL file and
returns an `evaluation` object (`status: queued`); poll `GET /v1/evaluations/{id}` until `status`
is `succeeded` (then `results` holds one run per model and few-shot count) or `failed` (`error`).
`GET /v1/evaluations/{id}/report` is the HTML report of a finished evaluation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tunery.api.protocol.common import ErrorBody, RequestModel


class EvaluationRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, max_length=8, description="Base models, fine-tuned models or checkpoints of the project.")
    file: str = Field(description="The evaluation data: an uploaded JSONL file of chat or prompt/completion records.")
    task: Literal["classification", "regression", "generation"] | None = None
    labels: list[str] | None = Field(None, min_length=1, description="Class labels in order (default: the references' values).")
    few_shot: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Shots shown to base models; one run per value.")
    few_shot_file: str | None = Field(None, description="The uploaded file the shots are drawn from.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N examples.")
    max_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int = 0
    compute_loss: bool = True


class ClassMetrics(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class EvaluationRun(BaseModel):
    """The metrics of one model (and few-shot count); a field is null where the task has no such metric."""

    model_config = ConfigDict(extra="allow")

    model: str
    few_shot: int
    task: str
    n: int
    accuracy: float | None = None
    macro_f1: float | None = None
    weighted_f1: float | None = None
    invalid: int | None = None
    mae: float | None = None
    rmse: float | None = None
    exact_match: float | None = None
    normalized_match: float | None = None
    rouge_l: float | None = None
    token_f1: float | None = None
    loss: float | None = None
    perplexity: float | None = None
    seconds: float | None = None
    labels: list[str] | None = None
    per_class: dict[str, ClassMetrics] | None = None
    confusion_matrix: list[list[int]] | None = Field(None, description="Rows: true label; columns: predicted label, then invalid answers.")


class EvaluationProgress(BaseModel):
    completed: int
    total: int


class Evaluation(BaseModel):
    id: str
    object: Literal["evaluation"] = "evaluation"
    created_at: int
    finished_at: int | None = None
    status: Literal["queued", "running", "succeeded", "failed"]
    models: list[str]
    file: str
    few_shot: list[int]
    few_shot_file: str | None = None
    task: str
    labels: list[str] | None = None
    n: int
    progress: EvaluationProgress
    results: list[EvaluationRun] = Field(default_factory=list)
    error: ErrorBody | None = None
