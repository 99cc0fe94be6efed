"""`tunery models add NAME SPEC` / `tunery models remove NAME`: the base models this machine's
server offers by name (written to `$TUNERY_HOME/models.json`, read by the server on each request).

Run by the operator on the server's machine: SPEC may be a local folder, a .gguf file or a cached
Hugging Face id; API clients then name only NAME. `tunery models list/get/delete` (the API client
commands of `cli/client.py`) join this group.
"""

from __future__ import annotations

import typer

models_app = typer.Typer(help="Base models the server offers (add/remove: local, on the server's machine) and the "
                         "models it lists (list/get/delete: a client of its API).", no_args_is_help=True)


def _settings(home: str | None):
    from tunery.store.settings import SettingsError, load_settings

    try:
        return load_settings(home)
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@models_app.command("add")
def add(
    name: str = typer.Argument(..., help="The name clients will use, e.g. team-llama (no ':' or spaces)."),
    spec: str = typer.Argument(..., help="Local weights: a Hugging Face folder, a .gguf file, a Hugging Face id in the local cache, or an alias."),
    home: str = typer.Option(None, "--home", help="Tunery home (default $TUNERY_HOME or ~/.tunery)."),
) -> None:
    """Register a base model under NAME (checked now: SPEC must resolve on this machine; a .gguf
    file is converted once)."""
    from pathlib import Path

    from tunery.models.errors import TuneryModelError
    from tunery.models.registered import check_name, load_registered, save_registered
    from tunery.models.resolve import resolve_model

    settings = _settings(home)
    try:
        check_name(name)
        table = load_registered(settings.models_file)
        # Keep what the operator meant, made absolute: the server may run from another folder.
        path = Path(spec).expanduser()
        stored = str(path.resolve()) if path.exists() else spec
        resolved = resolve_model(stored, on_convert=lambda what: typer.echo(what, err=True))
    except TuneryModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    table[name] = stored
    save_registered(settings.models_file, table)
    typer.echo(f"registered {name} -> {stored} ({resolved.source}, context {resolved.context_length}) in {settings.models_file}")


@models_app.command("remove")
def remove(
    name: str = typer.Argument(..., help="A name registered with `tunery models add`."),
    home: str = typer.Option(None, "--home", help="Tunery home (default $TUNERY_HOME or ~/.tunery)."),
) -> None:
    """Stop offering a registered base model (its fine-tunes stay, but cannot be served without it)."""
    from tunery.models.errors import TuneryModelError
    from tunery.models.registered import load_registered, save_registered

    settings = _settings(home)
    try:
        table = load_registered(settings.models_file)
    except TuneryModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if name not in table:
        typer.echo(f"error: no registered model {name!r} in {settings.models_file}", err=True)
        raise typer.Exit(1)
    del table[name]
    save_registered(settings.models_file, table)
    typer.echo(f"removed {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
