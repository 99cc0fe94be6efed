"""`tunery jobs …`: a client of the fine-tuning jobs API, and `tunery worker`.

The server is found with `--base-url` / `TUNERY_BASE_URL` (default http://127.0.0.1:8000/v1) and
the key with `--api-key` / `TUNERY_API_KEY` (or `OPENAI_API_KEY`). Errors print the server's
message on one line and exit 1.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import typer

from tunery.cli.client import ApiError, api, connect, fail, show

jobs_app = typer.Typer(help="Create, watch and control fine-tuning jobs (a client of the server's API).", no_args_is_help=True)
connect(jobs_app)
TERMINAL = ("succeeded", "failed", "cancelled")


def _call(method: str, path: str, **kwargs) -> Any:
    try:
        return api().request(method, path, **kwargs)
    except ApiError as exc:
        fail(str(exc))


def _auto_or_number(value: Optional[str], name: str) -> Any:
    if value is None or value == "auto":
        return value
    try:
        return int(value) if value.isdigit() else float(value)
    except ValueError:
        fail(f"--{name.replace('_', '-')} must be 'auto' or a number, got {value!r}")


@jobs_app.command("create")
def create(
    training_file: str = typer.Argument(..., help="id of an uploaded fine-tune file (file-…)"),
    model: str = typer.Option("gpt-4o-mini", "--model", "-m", help="base model (an OpenAI name, alias or local model)"),
    validation_file: Optional[str] = typer.Option(None, "--validation-file"),
    suffix: Optional[str] = typer.Option(None, "--suffix"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    n_epochs: Optional[str] = typer.Option(None, "--n-epochs", help="'auto' or 1-50"),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="'auto' or 1-256"),
    learning_rate_multiplier: Optional[str] = typer.Option(None, "--learning-rate-multiplier", help="'auto' or > 0"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="cap the number of training steps (Tunery extension)"),
    method: str = typer.Option("supervised", "--method", help="supervised, or dpo for a preference file"),
    beta: Optional[str] = typer.Option(None, "--beta", help="dpo: 'auto' (0.1) or 0 < beta <= 2"),
    metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE, repeatable"),
    follow_: bool = typer.Option(False, "--follow", "-f", help="then follow it with a progress bar"),
) -> None:
    """Create a fine-tuning job and print it."""
    hp = {k: _auto_or_number(v, k) for k, v in
          (("n_epochs", n_epochs), ("batch_size", batch_size), ("learning_rate_multiplier", learning_rate_multiplier)) if v is not None}
    if max_steps is not None:
        hp["max_steps"] = max_steps
    if method not in ("supervised", "dpo"):
        fail(f"--method must be supervised or dpo, got {method!r}")
    if beta is not None:
        if method != "dpo":
            fail("--beta is a dpo hyperparameter; add --method dpo")
        hp["beta"] = _auto_or_number(beta, "beta")
    body: dict[str, Any] = {"model": model, "training_file": training_file}
    for key, value in (("validation_file", validation_file), ("suffix", suffix), ("seed", seed)):
        if value is not None:
            body[key] = value
    if hp or method != "supervised":
        body["method"] = {"type": method, method: {"hyperparameters": hp}}
    if metadata:
        pairs = [m.partition("=") for m in metadata]
        if any(not sep for _, sep, _ in pairs):
            fail("--metadata takes KEY=VALUE")
        body["metadata"] = {k: v for k, _, v in pairs}
    job = _call("POST", "/fine_tuning/jobs", json=body)
    if follow_:
        typer.echo(f"created {job['id']}", err=True)
        follow(job["id"])
    else:
        show(job)


@jobs_app.command("list")
def list_jobs(limit: int = typer.Option(20, "--limit"), after: Optional[str] = typer.Option(None, "--after")) -> None:
    """List jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    params: dict[str, Any] = {"limit": limit}
    if after:
        params["after"] = after
    page = _call("GET", "/fine_tuning/jobs", params=params)
    rows = [(j["id"], j["status"], j["model"], j["fine_tuned_model"] or "",
             time.strftime("%Y-%m-%d %H:%M", time.localtime(j["created_at"]))) for j in page["data"]]
    if not sys.stdout.isatty():  # piped: plain tab-separated lines for scripts
        for row in rows:
            typer.echo("\t".join(row))
    else:
        table = Table("id", "status", "model", "fine_tuned_model", "created")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    if page.get("has_more"):
        typer.echo(f"more: --after {page['data'][-1]['id']}", err=True)


@jobs_app.command("get")
def get(job_id: str) -> None:
    """Print one job."""
    show(_call("GET", f"/fine_tuning/jobs/{job_id}"))


def _control(action: str):
    def command(job_id: str) -> None:
        job = _call("POST", f"/fine_tuning/jobs/{job_id}/{action}")
        typer.echo(f"{job['id']}: {job['status']}")

    command.__doc__ = f"{action.capitalize()} a job."
    return command


for _action in ("cancel", "pause", "resume"):
    jobs_app.command(_action)(_control(_action))


@jobs_app.command("events")
def events(job_id: str, limit: int = typer.Option(20, "--limit")) -> None:
    """Print a job's latest events, oldest of them first."""
    page = _call("GET", f"/fine_tuning/jobs/{job_id}/events", params={"limit": limit})
    for e in reversed(page["data"]):
        stamp = time.strftime("%H:%M:%S", time.localtime(e["created_at"]))
        typer.echo(f"{stamp} {e['level']:5} {e['message']}")


@jobs_app.command("follow")
def follow(job_id: str, interval: float = typer.Option(1.0, "--interval", help="seconds between polls")) -> None:
    """Show new events and a live progress bar with the loss until the job finishes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    seen: set[str] = set()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("queued", total=None, loss="")
        while True:
            page = _call("GET", f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100})
            for e in reversed(page["data"]):
                if e["id"] in seen:
                    continue
                seen.add(e["id"])
                if e["type"] == "metrics":
                    d = e["data"]
                    loss = f"loss {d['train_loss']:.4f}" + (f" · valid {d['valid_loss']:.4f}" if d.get("valid_loss") is not None else "")
                    if d.get("rewards/accuracies") is not None:  # dpo
                        loss += f" · reward acc {d['rewards/accuracies']:.2f} · margin {d['rewards/margins']:.3f}"
                    progress.update(task, completed=d.get("step"), total=d.get("total_steps"), loss=loss)
                else:
                    progress.console.print(f"[dim]{time.strftime('%H:%M:%S', time.localtime(e['created_at']))}[/] {e['message']}")
            job = _call("GET", f"/fine_tuning/jobs/{job_id}")
            progress.update(task, description=job["status"])
            if job["status"] in TERMINAL:
                break
            time.sleep(interval)
    if job["status"] == "succeeded":
        typer.echo(job["fine_tuned_model"])
    else:
        err = job.get("error") or {}
        fail(f"job {job['status']}" + (f": {err.get('message')}" if err else ""))


def worker(concurrency: int = typer.Option(0, "--concurrency", help="jobs at a time [default: one per GPU, 1 on CPU]")) -> None:
    """Run a job worker in this process, sharing the server's database and data folder."""
    import logging
    import signal

    def _stop(*_):  # SIGTERM stops like Ctrl-C: running jobs are checkpointed and re-queued
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    from tunery.jobs.worker import Worker
    from tunery.store.context import open_store
    from tunery.store.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    store = open_store(load_settings())
    w = Worker.from_settings(store, concurrency=concurrency)
    typer.echo(f"worker {w.id}: {len(w.slots)} slot(s), database {store.settings.database_url}", err=True)
    w.run_forever()


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.command("worker")(worker)
