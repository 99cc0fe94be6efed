"""What `tunery eval` runs: several models (and few-shot settings) on one data set (`Plan`), each run an Evals run (`tunery.eval.local_runs`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tunery.eval.dataset import EvalError, Example
from tunery.eval.labels import label_order
from tunery.eval.sources import EvalModel
from tunery.eval.tasks import Task, infer_task

# What `--json` returns per run, in this order; the rest (per_class, confusion_matrix,
# labels) follows for classification.
HEADLINE = ("model", "few_shot", "task", "n", "accuracy", "macro_f1", "weighted_f1", "invalid", "mae", "rmse",
            "exact_match", "normalized_match", "rouge_l", "token_f1", "loss", "perplexity", "seconds")


@dataclass
class Plan:
    """What to run: each model once per few-shot count (fine-tuned models only zero-shot)."""

    models: list[EvalModel]
    examples: list[Example]
    task: Task
    few_shot: list[int] = field(default_factory=lambda: [0])
    shots_pool: list[Example] = field(default_factory=list)
    seed: int = 0
    max_tokens: int | None = None
    temperature: float = 0.0
    with_loss: bool = True

    def runs(self) -> list[tuple[EvalModel, int]]:
        out = []
        for m in self.models:
            ks = [0] if m.fine_tuned else self.few_shot
            out += [(m, k) for k in dict.fromkeys(ks)]
        return out

    @property
    def steps_per_run(self) -> int:
        return len(self.examples) * (2 if self.with_loss else 1)


def make_plan(models: list[EvalModel], examples: list[Example], task: str | None = None, labels: Sequence[str] | None = None,
              few_shot: Sequence[int] = (0,), shots_pool: Sequence[Example] = (), **options) -> Plan:
    """Check the options against the data; `EvalError` explains what does not fit."""
    if not models:
        raise EvalError("name at least one model to evaluate")
    few_shot = list(few_shot) or [0]
    if any(k < 0 for k in few_shot):
        raise EvalError(f"--few-shot must be 0 or more, got {min(few_shot)}")
    if max(few_shot) > 0 and not shots_pool:
        raise EvalError("--few-shot K > 0 needs --few-shot-file (the training examples to show)")
    references = [e.reference for e in examples]
    try:
        resolved = infer_task(references, task, labels)
        if labels is None and resolved.name == "classification" and shots_pool:
            # Classes the evaluated slice happens to lack are still classes: take the training file's too.
            resolved = infer_task(references, "classification", label_order({*resolved.labels, *(e.reference.strip() for e in shots_pool)}))
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if max(few_shot) > len(shots_pool) and shots_pool:
        raise EvalError(f"--few-shot {max(few_shot)} needs at least {max(few_shot)} examples in the few-shot file, it has {len(shots_pool)}")
    if shots_pool and shots_pool[0].kind != examples[0].kind:
        raise EvalError(f"the few-shot file holds {shots_pool[0].kind} records but the data is {examples[0].kind} records")
    return Plan(models, examples, resolved, few_shot, list(shots_pool), **options)


def ordered(result: dict) -> dict:
    head = {k: result[k] for k in HEADLINE if k in result}
    return {**head, **{k: v for k, v in result.items() if k not in head}}
