"""`tunery eval` as Evals: one eval per invocation in the local Tunery home's database (the Store
the server uses), one run per (model, few-shot count), executed synchronously in this process
(`RunExecutor`), so every answer is an output item a user can open through `/v1/evals` later.

The eval's items are `{input, reference}`: `input` is the prompt with the shots already inserted
(chat messages, or a legacy prompt string, which the executor sends without a chat template),
`reference` the expected answer. One criterion, `string_check eq` of `sample.output_text` against
`item.reference`, gives the pass/fail counts and names the reference for the run metrics
(`tunery.eval.run_metrics`), which are the numbers the command prints. The reference loss and
perplexity are not an Evals concept: they are computed here, beside the run, as before.
The runs carry `report.executor = "cli"`, so a server on the same home never executes them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from tunery.eval import evals_config as cfg
from tunery.eval.evaluate import Plan, ordered
from tunery.eval.fewshot import few_shot_prompt, select_shots
from tunery.eval.run_metrics import answer_text, run_metrics
from tunery.eval.run_worker import RunExecutor
from tunery.eval.runner import Progress, check_context, default_max_tokens, prompt_ids, reference_loss
from tunery.eval.runs import normalize_data_source
from tunery.store import evals as repo

ITEM_SCHEMA = {"type": "object", "properties": {"input": {"type": ["array", "string"]}, "reference": {"type": "string"}},
               "required": ["input", "reference"]}
CRITERION = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.reference}}", "operation": "eq"}


def create_eval(store, project_id: str, name: str, metadata: dict | None = None) -> repo.EvalRecord:
    config = cfg.stored_config({"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True})
    record = repo.EvalRecord(id=f"eval_{uuid.uuid4().hex}", project_id=project_id, name=name, metadata_=metadata,
                             data_source_config=config, testing_criteria=cfg.stored_criteria([CRITERION], config))
    with store.db.session_scope() as s:
        s.add(record)
    return record


def _failure(run, items) -> str | None:
    if run.status != repo.COMPLETED:
        return (run.error or {}).get("message") or f"the eval run is {run.status}"
    failed = [(it.datasource_item_id, it.sample["error"]["message"]) for it in items if it.sample and it.sample.get("error")]
    if failed:
        return f"{len(failed)} generation(s) failed; first: example {failed[0][0] + 1}: {failed[0][1]}"
    return None


def run_plan_as_evals(plan: Plan, store, project_id: str, registry, name: str, metadata: dict | None = None,
                      on_run: Callable[[str, int], None] | None = None, progress: Progress | None = None):
    """(results, answers, eval id): like `tunery.eval.evaluate.run_plan`, each result with its `run_id`.
    A generation that fails raises RuntimeError; a prompt too long for the model, EvalError."""
    record = create_eval(store, project_id, name, metadata)
    results, answers = [], []
    for model, k in plan.runs():
        label = model.name + (f" ({k}-shot)" if k else "")
        if on_run is not None:
            on_run(label, plan.steps_per_run)
        served = registry.get(model.source)
        shots = select_shots(plan.shots_pool, k, plan.task.labels, plan.seed) if k else []
        max_tokens = plan.max_tokens or default_max_tokens(served, plan.examples, plan.task)
        prompts = [prompt_ids(served, e, shots) for e in plan.examples]
        check_context(served, plan.examples, prompts, max_tokens)
        rows = [{"item": {"input": few_shot_prompt(e, shots), "reference": e.reference}} for e in plan.examples]
        ds, _ = normalize_data_source(store, project_id, {
            "type": "completions", "model": model.name, "source": {"type": "file_content", "content": rows},
            "input_messages": {"type": "item_reference", "item_reference": "item.input"},
            "sampling_params": {"temperature": plan.temperature, "top_p": 1.0, "seed": plan.seed, "max_completion_tokens": max_tokens}},
            ITEM_SCHEMA, record.testing_criteria)
        run_id = f"evalrun_{uuid.uuid4().hex}"
        with store.db.session_scope() as s:
            s.add(repo.EvalRunRecord(id=run_id, eval_id=record.id, project_id=project_id, name=label, model=model.name, data_source=ds,
                                     metadata_={"few_shot": str(k)}, report={"executor": repo.CLI_EXECUTOR, "task": plan.task.to_dict()}))
        started = time.perf_counter()
        RunExecutor(store, registry, resolve=lambda *_, source=model.source: source, progress=progress).execute(run_id)
        generated = time.perf_counter()
        with store.db.session_scope() as s:
            run = repo.get_run(s, project_id, record.id, run_id)
            items = repo.run_items(s, run_id)
            problem = _failure(run, items)
            metrics = run_metrics(record.testing_criteria, items, plan.task)
            texts = [answer_text(it.sample) for it in items]
        if problem:
            raise RuntimeError(problem)
        result = {k2: v for k2, v in metrics.items() if k2 not in ("criterion", "ordinal") and not (k2 == "labels" and v is None)}
        predictions = result.pop("predictions", None)
        result.update(few_shot=k, max_tokens=max_tokens, prompt_tokens=sum(map(len, prompts)), seconds=generated - started)
        if plan.with_loss:
            result.update(reference_loss(served, plan.examples, shots, progress=progress))
            result["loss_seconds"] = time.perf_counter() - generated
        result.update(model=model.name, name=label, metrics_csv=str(model.metrics_csv) if model.metrics_csv else None,
                      eval_id=record.id, run_id=run_id)
        results.append(ordered(result))
        for i, (example, text) in enumerate(zip(plan.examples, texts)):
            answers.append({"model": model.name, "few_shot": k, "line": example.line, "reference": example.reference, "answer": text,
                            **({"prediction": predictions[i]} if predictions is not None else {})})
    return results, answers, record.id

