"""`tunery chat MODEL` (a streaming terminal chat, a client of the server's API) and
`tunery export MODEL --merged DIR` (base + adapter merged into a standalone Hugging Face folder,
done locally from the Tunery home)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

EXIT_WORDS = {"/exit", "/quit", "exit", "quit"}


def _stream_chat(client, body: dict) -> tuple[str, str | None]:
    """Print the answer as it streams; return (text, finish_reason)."""
    response = client._send("POST", "/chat/completions", stream=True, json={**body, "stream": True})
    text, reason = [], None
    try:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(chunk["error"].get("message", "generation failed"))
            for choice in chunk.get("choices", []):
                piece = choice.get("delta", {}).get("content") or ""
                text.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
                reason = choice.get("finish_reason") or reason
    finally:
        response.close()
    sys.stdout.write("\n")
    return "".join(text), reason


def chat(
    model: str = typer.Argument(..., help="A base model (alias) or a fine-tuned model name (ft:...)."),
    prompt: str = typer.Option(None, "-p", "--prompt", help="Ask once, print the answer and exit."),
    system: str = typer.Option(None, "--system", "-s", help="A system message to start the conversation."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Most tokens per answer (default: up to the context)."),
    temperature: float = typer.Option(None, "--temperature", "-t", help="0 for greedy; default 1."),
    seed: int = typer.Option(None, "--seed", help="Sampling seed, for reproducible answers."),
    base_url: str = typer.Option(None, "--base-url", envvar="TUNERY_BASE_URL", help="Server API URL (default http://127.0.0.1:8000/v1)."),
    api_key: str = typer.Option(None, "--api-key", envvar="TUNERY_API_KEY", help="API key (or $OPENAI_API_KEY)."),
) -> None:
    """Chat with a model served by `tunery serve`; answers stream as they are generated.

    Interactive by default (type /exit or press Ctrl-D to leave); `-p "..."` asks one question.
    """
    from tunery.cli.client import Api, ApiError

    client = Api(base_url, api_key)
    messages = [{"role": "system", "content": system}] if system else []
    options = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}.items() if v is not None}

    def ask(question: str) -> None:
        messages.append({"role": "user", "content": question})
        try:
            answer, reason = _stream_chat(client, {"model": model, "messages": messages, **options})
        except (ApiError, RuntimeError) as exc:
            status = f" [HTTP {exc.status}]" if isinstance(exc, ApiError) and exc.status else ""
            typer.echo(f"error: {exc}{status}", err=True)
            raise typer.Exit(1) from None
        messages.append({"role": "assistant", "content": answer})
        if reason == "length":
            typer.echo("[answer cut at --max-tokens]", err=True)

    if prompt is not None:
        ask(prompt)
        return
    interactive = sys.stdin.isatty()
    if interactive:
        typer.echo(f"Chatting with {model}. /exit or Ctrl-D to leave.", err=True)
    while True:
        try:
            line = input("> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            break
        if line.strip() in EXIT_WORDS:
            break
        if line.strip():
            ask(line)


def export(
    model: str = typer.Argument(..., help="A fine-tuned model name (ft:...) of the project, or an adapter/model folder."),
    merged: Path = typer.Option(..., "--merged", help="Folder to write the merged Hugging Face model to (must be new or empty)."),
    project: str = typer.Option("default", "--project", help="Project that owns the fine-tuned model."),
    home: str = typer.Option(None, "--home", help="Tunery home (default $TUNERY_HOME or ~/.tunery)."),
) -> None:
    """Write base + adapter merged into one Hugging Face folder that transformers loads on its own."""
    from tunery.serve.export import export_merged

    folder = Path(model).expanduser()
    if not folder.is_dir():
        folder = _weights_of(model, project, home)
    try:
        out = export_merged(folder, merged)
    except (FileNotFoundError, FileExistsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"merged {model} into {out}")


def _weights_of(model: str, project_name: str, home: str | None) -> Path:
    from sqlalchemy import select

    from tunery.models.errors import TuneryModelError
    from tunery.store import catalog
    from tunery.store.context import open_store
    from tunery.store.keys import Project
    from tunery.store.settings import load_settings

    if not catalog.is_fine_tuned_name(model):
        typer.echo(f"error: {model!r} is neither a folder nor a fine-tuned model name (ft:...)", err=True)
        raise typer.Exit(1)
    store = open_store(load_settings(home))
    try:
        with store.db.session_scope() as session:
            project_id = session.scalar(select(Project.id).where(Project.name == project_name))
            found = catalog.resolve(session, store.settings, project_id, model, remote=False) if project_id else None
    except catalog.ModelNotAvailable:
        found = None
    except TuneryModelError as exc:
        typer.echo(f"error: {model}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if found is None:
        typer.echo(f"error: no fine-tuned model {model!r} in project {project_name!r} (see `tunery models list`)", err=True)
        raise typer.Exit(1)
    return found.path


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
    app.command("export")(export)
