"""`python -m tunery.models [SPEC]`: resolve a base model (converting a GGUF once) and print its folder."""

from __future__ import annotations

import argparse
import sys

from tunery.models.errors import TuneryModelError
from tunery.models.resolve import resolve_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tunery.models",
        description="Resolve a base model spec to a local Hugging Face folder (never downloads) and print its path.",
    )
    parser.add_argument(
        "spec",
        nargs="?",
        default=None,
        help="alias (gpt-4o-mini ...), packaged name, local folder, .gguf file or Hugging Face id "
        "in the local cache; default: the packaged SmolLM2-135M-Instruct",
    )
    args = parser.parse_args(argv)

    from rich.console import Console

    err = Console(stderr=True)
    status = None

    def on_convert(message: str) -> None:
        nonlocal status
        status = err.status(message)
        status.start()

    try:
        resolved = resolve_model(args.spec, on_convert=on_convert)
    except TuneryModelError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 1
    finally:
        if status is not None:
            status.stop()
    err.print(
        f"{resolved.name} ({resolved.source}, context {resolved.context_length})", highlight=False, soft_wrap=True
    )
    print(resolved.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
