"""`tunery eval`: score models on a held-out JSONL file through the serving engine.

Each invocation is an eval in the local Tunery home's database and each (model, few-shot) an eval
run, executed here (`tunery.eval.local_runs`); their ids are printed so the answers can be read
back through `/v1/evals` (output items, report page, metrics).

Exit codes: 0 done, 1 a model failed to load or generate, 2 bad input (file, line and field named).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(eval_command)


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None


def eval_command(
    models: list[str] = typer.Argument(..., help="Models: a base model (alias, registered or packaged name, OpenAI name, folder, .gguf), an ft: name of --project in the local Tunery home, or a folder written by `tunery train`."),
    data: Path = typer.Option(..., "--data", "-d", help="JSONL of chat `messages` (the reference is the final assistant message) or prompt/completion records."),
    task: str | None = typer.Option(None, "--task", help="classification, regression or generation (default: inferred from the references)."),
    labels: str | None = typer.Option(None, "--labels", help="Comma-separated class labels, in order (default: the references' distinct values)."),
    few_shot: str = typer.Option("0", "--few-shot", help="Shots shown to base models, e.g. 5, or 0,5 to run both (fine-tuned models always run zero-shot)."),
    few_shot_file: Path | None = typer.Option(None, "--few-shot-file", help="Training JSONL the shots are drawn from (balanced over the labels)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the shot selection (and of sampling with --temperature)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N examples."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Tokens to generate per answer (default: the longest reference + 16 for labels)."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 (default) is greedy decoding."),
    loss: bool = typer.Option(True, "--loss/--no-loss", help="Also score the references' loss and perplexity (teacher forcing)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Most sequences the engine decodes at once."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per run (a list) on stdout instead of the table."),
    report: Path | None = typer.Option(None, "--report", help="Write an HTML report with plots to this file."),
    answers: Path | None = typer.Option(None, "--answers", help="Write every model answer (JSONL) to this file."),
    project: str = typer.Option("default", "--project", help="Project of the local Tunery home whose fine-tuned models (ft:...) are looked up; no other project is searched."),
) -> None:
    """Evaluate MODELS on --data: accuracy, F1 and the confusion matrix for labels, MAE/RMSE for
    numbers, ROUGE-L and token F1 for text, and the references' loss and perplexity.

    Fine-tuning versus few-shot in one command:

      tunery eval SmolLM2-135M-Instruct runs/sst5 --data dev.jsonl --few-shot 0,5 --few-shot-file train.jsonl --report sst5.html
    """
    from rich.console import Console

    from tunery.eval.dataset import EvalError, load_examples
    from tunery.eval.evaluate import make_plan
    from tunery.eval.sources import resolve_eval_model

    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False, markup=False)
    ks = _ints(few_shot, "--few-shot")
    try:
        examples = load_examples(data, limit)
        pool = load_examples(few_shot_file) if few_shot_file else []
        resolved = [resolve_eval_model(m, project) for m in models]
        plan = make_plan(resolved, examples, task, [x for x in labels.split(",")] if labels else None, ks, pool, seed=seed,
                         max_tokens=max_tokens, temperature=temperature, with_loss=loss)
    except EvalError as exc:
        err.print(f"error: {exc}", style="red")
        raise typer.Exit(2) from None
    results, records, eval_id = _run(plan, batch_size, err, project, data)
    if answers:
        answers.parent.mkdir(parents=True, exist_ok=True)
        answers.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    if report:
        from tunery.eval.report import write_report

        write_report(report, results, data=str(data))
        err.print(f"Report: {report}")
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "name"} for r in results], indent=1))
    else:
        _table(Console(emoji=False), results, plan.task)


def _open_home(project: str, err):
    """The local home's Store and the id of `project` in it (created if new)."""
    from tunery.store.context import open_store
    from tunery.store.keys import get_or_create_project
    from tunery.store.settings import load_settings

    try:
        store = open_store(load_settings())
        with store.db.session_scope() as s:
            project_id = get_or_create_project(s, project).id
    except Exception as exc:  # a bad config or an unreachable database: say so in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"error: cannot open the local Tunery home to record the eval: {first}", style="red")
        raise typer.Exit(2) from None
    return store, project_id


def _run(plan, batch_size: int, err, project: str, data: Path):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from tunery.eval.dataset import EvalError
    from tunery.eval.local_runs import run_plan_as_evals
    from tunery.serve.registry import ModelRegistry

    store, project_id = _open_home(project, err)
    registry = ModelRegistry(max_batch_size=batch_size)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err) as progress:
            state = {}

            def on_run(name: str, total: int) -> None:
                if "task" in state:
                    progress.update(state["task"], completed=progress.tasks[state["task"]].total)
                state["task"] = progress.add_task(name, total=total)

            out = run_plan_as_evals(plan, store, project_id, registry, f"tunery eval {data.name}", {"source": "tunery eval", "data": str(data)[-512:]},
                                    on_run, lambda k: progress.advance(state["task"], k))
        err.print(f"Eval {out[2]} (project {project!r}); runs: " + ", ".join(f"{r['run_id']} ({r['name']})" for r in out[0]))
        return out
    except EvalError as exc:
        err.print(f"error: {exc}", style="red")
        raise typer.Exit(2) from None
    except Exception as exc:  # a model that cannot load or generate: one line, no traceback
        err.print(f"error: {type(exc).__name__}: {exc}", style="red")
        raise typer.Exit(1) from None
    finally:
        registry.close()
        store.close()


def _table(console, results: list[dict], task) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tunery.eval.report import fmt, summary_columns

    cols = [c for c in summary_columns(results) if c[0] != "weighted_f1"]
    table = Table(title=f"{task.name}" + (f" · labels {', '.join(task.labels)}" if task.labels else ""))
    table.add_column("model")
    for _, header, _ in cols:
        table.add_column(header, justify="right")
    for r in results:
        table.add_row(escape(r["name"]), *(fmt(r.get(k), spec) for k, _, spec in cols))
    console.print(table)
