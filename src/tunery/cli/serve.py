"""`tunery serve` (the API server and its worker) and `tunery keys create|list|revoke`.

The `keys` commands are the ones that work on the database directly (admin actions on the machine
that holds it); every other command is a client of the HTTP API. `keys list` never shows a whole
key (only its hint `sk-tunery-abcd…wxyz`); `keys revoke` takes effect on a running server's next
request.
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


def _when(ts: int | None) -> str:
    import datetime

    return "-" if ts is None else datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@keys_app.command("list")
def keys_list(
    project: str = typer.Option(None, help="Only the keys of this project."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list (timestamps in Unix seconds)."),
    home: str = typer.Option(None, "--home", help="Tunery home (default $TUNERY_HOME or ~/.tunery)."),
) -> None:
    """List API keys: id, hint, project, created, last used (to the minute), revoked."""
    import dataclasses
    import json

    from tunery.store.keys import list_keys

    store = _open(_settings(home))
    with store.db.session_scope() as session:
        keys = list_keys(session, project)
    store.close()
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(k) for k in keys], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("id", "key", "project", "created", "last used", "revoked"):
        table.add_column(col, no_wrap=True)
    for k in keys:
        table.add_row(k.id, k.display, k.project, _when(k.created_at), _when(k.last_used_at), _when(k.revoked_at))
    Console(width=200).print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="The key's id (key_…), its hint or a prefix of either, or the key itself."),
    home: str = typer.Option(None, "--home", help="Tunery home (default $TUNERY_HOME or ~/.tunery)."),
) -> None:
    """Revoke an API key: a running server refuses it (401) from its next request."""
    from tunery.store.keys import KeyLookupError, revoke_key

    store = _open(_settings(home))
    try:
        with store.db.session_scope() as session:
            found, was_active = revoke_key(session, key)
            shown = f"{found.id} ({found.display})"
    except KeyLookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    typer.echo(f"revoked {shown}" if was_active else f"{shown} was already revoked")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
