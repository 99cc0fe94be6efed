"""`tunery serve` (the API server and its worker) and `tunery keys create` (an API key).

`keys create` is the one command that writes to the database directly (an admin action on the
machine that holds it); every other command is a client of the HTTP API.
"""

from __future__ import annotations

import ipaddress
import sys

import typer


def _settings(home, **overrides):
    from tunery.store.settings import SettingsError, load_settings

    try:
        return load_settings(home, **overrides)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _open(settings):
    from tunery.store.context import open_store

    try:
        return open_store(settings)
    except Exception as exc:  # a bad URL or an unreachable database: one line, no traceback
        typer.echo(f"error: cannot open the database {settings.database_url}: {exc}", err=True)
        raise typer.Exit(1) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = typer.Option(None, help="Address to listen on (default 127.0.0.1: this machine only)."),
    port: int = typer.Option(None, help="Port to listen on (default 8000)."),
    home: str = typer.Option(None, "--home", help="Tunery home (default $TUNERY_HOME or ~/.tunery)."),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Run the job worker in this process."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Start the OpenAI-compatible API (files, uploads, fine-tuning jobs, models, chat and
    completions) and the worker.

    Models are served in bf16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX), else in fp32;
    TUNERY_SERVE_DTYPE=float32|bfloat16 overrides. TUNERY_SERVE_CACHE_MB bounds the memory of
    hot-loaded fine-tunes (default 4096)."""
    import uvicorn

    from tunery.api.app import create_app
    from tunery.serve.registry import serving_dtype
    from tunery.store.keys import count_keys, create_key

    settings = _settings(home, host=host, port=port)
    try:
        serving_dtype()
    except ValueError as exc:  # found now, not at the first chat request
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    store = _open(settings)
    with store.db.session_scope() as session:
        new_key = create_key(session) if count_keys(session) == 0 else None
    store.close()
    if new_key:
        typer.echo("No API key existed, so one was created for project 'default' (shown only this once):", err=True)
        typer.echo(new_key)
        typer.echo(f"  export TUNERY_API_KEY={new_key}", err=True)
    if not _loopback(settings.host):
        typer.echo(f"warning: listening on {settings.host}: the API is reachable from other machines", err=True)
    typer.echo(f"Tunery API on http://{settings.host}:{settings.port}/v1 (home {settings.home})", err=True)
    sys.stdout.flush()
    uvicorn.run(create_app(settings, worker=worker), host=settings.host, port=settings.port, log_level=log_level)


keys_app = typer.Typer(help="API keys (written to the local database).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    project: str = typer.Option("default", help="Project the key opens (created if new)."),
    home: str = typer.Option(None, "--home", help="Tunery home (default $TUNERY_HOME or ~/.tunery)."),
) -> None:
    """Create an API key and print only the key on stdout."""
    from tunery.store.keys import create_key

    if not project.strip():
        typer.echo("error: --project must not be empty", err=True)
        raise typer.Exit(2)
    store = _open(_settings(home))
    with store.db.session_scope() as session:
        key = create_key(session, project.strip())
    store.close()
    typer.echo(key)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
