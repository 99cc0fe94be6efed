"""Entry point of the `tunery` command.

Each command lives in its own module under `tunery.cli` and is registered here. Heavy imports
(torch, transformers) stay inside the command functions so that `tunery --help` is instant.
"""

from __future__ import annotations

import typer

from tunery import __version__
from tunery.cli import chat, client, eval, jobs, models, prepare, serve, train

app = typer.Typer(
    name="tunery",
    help="Tunery: self-hosted fine-tuning that speaks the OpenAI fine-tuning API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunery {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Tunery: self-hosted fine-tuning that speaks the OpenAI fine-tuning API."""


# Each command module exposes `register(app)`. Plain imports: a missing module fails at start.
for _module in (prepare, models, train, serve, client, chat, eval, jobs):  # models before client: client adds to its group
    _module.register(app)
