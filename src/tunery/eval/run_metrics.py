"""The task metrics of an eval run (what `tunery eval` reports): accuracy, macro/weighted F1,
confusion matrix, invalid answers, MAE/RMSE, match rates, ROUGE-L, token F1.

They need a reference per row and the model's answer. Both come from the eval's own criteria: the
first `string_check` or `text_similarity` whose `input` is `{{sample.output_text}}` names the
reference (its `reference` template, rendered per item). No such criterion, no metrics (None).
The task is inferred from the references (`tunery.eval.tasks.infer_task`) unless given, e.g. by
`tunery eval`'s `--task`/`--labels`, which it keeps in the run's `report` column.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunery.eval.scoring import score_answers
from tunery.eval.tasks import Task, infer_task
from tunery.graders.template import MissingVariable, render

ANSWER = "{{sample.output_text}}"


def reference_criterion(criteria: Sequence[dict]) -> dict | None:
    """The criterion whose reference is the expected answer, or None."""
    return next((c for c in criteria if c.get("type") in ("string_check", "text_similarity")
                 and isinstance(c.get("input"), str) and c["input"].replace(" ", "") == ANSWER
                 and isinstance(c.get("reference"), str)), None)


def answer_text(sample: dict | None) -> str:
    return "".join(m.get("content") or "" for m in (sample or {}).get("output", []) if isinstance(m, dict))


def task_from(stored: dict | None) -> Task | None:
    """A `Task.to_dict()` as kept in a run's `report` column, back as a Task."""
    if not stored or not stored.get("task"):
        return None
    return Task(stored["task"], stored.get("labels"), bool(stored.get("ordinal")))


def run_metrics(criteria: Sequence[dict], items: Sequence, task: Task | None = None) -> dict | None:
    """Metrics over `items` (output items, in row order), with `predictions` (one per item) and
    the `criterion` id they were read from; None without a reference criterion or items."""
    crit = reference_criterion(criteria)
    if crit is None or not items:
        return None
    references, answers = [], []
    for it in items:
        try:
            references.append(render(crit["reference"], {"item": it.datasource_item, "sample": {}}))
        except MissingVariable:
            references.append("")
        answers.append(answer_text(it.sample))
    if task is None:
        try:
            task = infer_task(references)
        except ValueError:
            task = infer_task(references, "generation")
    else:
        # Classes fixed by the caller: a reference outside them is nobody's class, scored as generation.
        if task.name == "classification" and any(r.strip() not in task.labels for r in references):
            task = infer_task(references)
    out = score_answers(references, answers, task)
    return {"criterion": crit["id"] if "id" in crit else crit.get("name"), **task.to_dict(), **out}
