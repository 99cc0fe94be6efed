"""`tunery prepare FILE`: check, fix, split and count a training file (rich report, [Y/n] prompts).

Exit codes: 0 the prepared file is usable, 1 errors remain (or the file is unusable), 2 usage
errors (missing file, unknown extension, bad options or templates). With `--json`, stdout holds
only the JSON report; progress and questions go to stderr (and `--json` answers yes, like `-q`).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

HELP = """Check, fix, split and count a fine-tuning data file, and write `<name>_prepared*.jsonl`.

Reads .jsonl, .json, .csv, .tsv, .xlsx, .parquet and .txt. Prompt/completion data gets the 15
checks of OpenAI's legacy prepare_data tool (necessary fixes applied, recommended ones asked
[Y/n]; -q accepts all); chat and DPO data get the chat-format and DPO checks. Build examples
from any table with --prompt/--completion templates over its columns, e.g.

  tunery prepare reviews.jsonl --prompt "{review_title}\\n\\n{review_body}" --completion " {stars}" --where "language == 'en'" -q
"""


def prepare(
    file: Path = typer.Argument(..., help="The data file (.jsonl .json .csv .tsv .xlsx .parquet .txt).", show_default=False),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt template over the columns, e.g. \"{title}\\n\\n{body}\"."),
    completion: Optional[str] = typer.Option(None, "--completion", help="Completion template, e.g. \" {stars}\"."),
    system: Optional[str] = typer.Option(None, "--system", help="System message for every example (needs --to chat)."),
    to: Optional[str] = typer.Option(
        None, "--to", help="Write 'chat' or 'completion' examples (default: the input's shape; completion from templates)."
    ),
    where: Optional[str] = typer.Option(
        None, "--where", help="Keep rows matching a filter: language == 'en' and stars >= 4, label in ['a', 'b']."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", help="Base model whose tokenizer and chat template count tokens (default: the packaged model)."
    ),
    no_tokens: bool = typer.Option(False, "--no-tokens", help="Skip token statistics and cost estimates."),
    valid_fraction: Optional[float] = typer.Option(
        None, "--valid-fraction", help="Share of examples for validation (splits any data) (default: the legacy rule, classification only)."
    ),
    split: Optional[bool] = typer.Option(
        None, "--split/--no-split", help="Force or prevent the train/validation split (default: split classification data)."
    ),
    seed: int = typer.Option(42, "--seed", help="Seed of the shuffle and the split."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Where to write the outputs (default: next to the input)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Accept every recommended remedy without asking."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON on stdout (implies -q)."),
) -> None:
    from tunery.data.prepare import PrepareOptions, UsageError
    from tunery.data.prepare import prepare as run_prepare
    from tunery.data.readers import DataError

    err = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)
    out = _LazyConsole(highlight=False, soft_wrap=True)

    def fail(message: str, code: int) -> None:
        if as_json:
            print(json.dumps({"error": {"message": message, "exit_code": code}}))
        err.print(f"[bold red]error:[/] {_escape(message)}")
        raise typer.Exit(code)

    if to is not None and to not in ("chat", "completion"):
        fail(f"--to must be 'chat' or 'completion', not {to!r}", 2)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        fail(f"--out-dir {out_dir}: not a folder", 2)

    notes: list[str] = []
    counter = folder = None
    if not no_tokens:
        # Loaded before the first pass: memory freed after loading is reused by the passes.
        folder = _model_folder(model, err, notes, fail)
        if folder is not None:
            counter = _token_counter(folder, model, notes, fail)

    options = PrepareOptions(
        path=file,
        prompt=prompt,
        completion=completion,
        system=system,
        to=to,
        where=where,
        valid_fraction=valid_fraction,
        split=split,
        seed=seed,
        out_dir=out_dir,
    )
    decide, asked = _decider(quiet or as_json, err, notes)
    try:
        with _Progress(err.real, enabled=_is_terminal(err)) as progress:
            report = run_prepare(options, decide=decide, counter=counter, progress=progress.update)
    except UsageError as exc:
        fail(str(exc), 2)
    except DataError as exc:
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        fail(f"{exc.filename or file}: {exc.strerror or exc}", 1)

    code = 0 if report.usable else 1
    if report.tokens is not None and folder is not None:
        report.tokens["tokenizer"] = Path(folder).name
    if as_json:
        data = report.to_dict()
        data["notes"] = notes
        data["next_commands"] = _next_commands(report) if report.usable else []
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        _render(report, out, notes, asked)
    raise typer.Exit(code)


def _model_folder(model, err, notes: list[str], fail):
    """The chosen base model's local folder, or None (with a note) when it is not available."""
    from tunery.models.errors import TuneryModelError
    from tunery.models.resolve import resolve_model

    try:
        return resolve_model(model, on_convert=lambda what: err.print(f"[dim]converting {what} once (about 30 s)...[/]")).path
    except TuneryModelError as exc:
        if model:  # the user asked for this model: a usage error
            fail(f"--model {model}: {exc}", 2)
        notes.append(f"token statistics skipped: {exc}")
    return None


def _token_counter(folder, model, notes: list[str], fail):
    """The model's tokenizer and chat template (`TokenCounter`), or None with a note."""
    from tunery.data.tokens import TokenCounter

    try:
        return TokenCounter.from_folder(folder)
    except (OSError, ValueError) as exc:
        if model:
            fail(f"--model {model}: cannot read its tokenizer: {exc}", 2)
        notes.append(f"token statistics skipped: cannot read the tokenizer in {folder}: {exc}")
    return None


def _decider(accept_all: bool, err, notes: list[str]):
    """The [Y/n] question for each recommended remedy: rich prompt, -q (yes), or no terminal (yes)."""
    asked: list[str] = []
    if accept_all:
        return (lambda finding: True), asked
    if not _interactive():

        def default_yes(finding) -> bool:
            if not asked:
                notes.append("no terminal to ask on: accepted every recommended remedy (the [Y/n] default; -q says so)")
            asked.append(finding.code)
            return True

        return default_yes, asked
    from rich.prompt import Confirm

    def ask(finding) -> bool:
        asked.append(finding.code)
        err.print(f"[yellow]- {_escape(finding.message)}[/]")
        return Confirm.ask(f"  [bold][Recommended][/] {_escape(finding.data.get('remedy', 'fix it'))}", default=True, console=err.real)

    return ask, asked


class _LazyConsole:
    """A rich Console made on first use: a `--json` run prints nothing through it, and rich costs
    ~2 MB and 30 ms of imports at the moment the tokenizer load makes the run's peak memory."""

    def __init__(self, **options):
        self._options = options
        self._console = None

    @property
    def real(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def _is_terminal(console: _LazyConsole) -> bool:
    """`console.is_terminal`, without making the console when rich would say no anyway."""
    if not sys.stderr.isatty() and "TTY_COMPATIBLE" not in os.environ and "FORCE_COLOR" not in os.environ:
        return False
    return console.real.is_terminal


def _interactive() -> bool:
    """Whether there is a person at stdin to answer [Y/n] questions."""
    return sys.stdin.isatty()


class _Progress:
    """A rich progress bar on stderr by bytes read, one task per pass."""

    def __init__(self, console, enabled: bool):
        self.console = console
        self.enabled = enabled
        self.bar = None
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.bar.__enter__()
        return self

    def update(self, stage: str, done: int, total: int) -> None:
        if self.bar is None:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _show(text: str | None) -> str:
    return "" if text is None else text.replace("\n", "\\n")


_STYLE = {"error": "bold red", "warning": "yellow", "fix": "green", "info": "cyan"}
_TITLE = {"error": "Errors", "warning": "Warnings", "fix": "Fixed", "info": "Notes"}


def _render(report, out, notes: list[str], asked: list[str]) -> None:
    from rich.table import Table

    d = report.to_dict()
    c = d["counts"]
    head = f"[bold]{_escape(report.input)}[/]: {report.format.upper()}"
    if report.shape:
        head += f", {report.shape} examples"
        if report.target and report.target != report.shape:
            head += f" → written as {report.target}"
    if report.task:
        head += f", {report.task}"
    out.print(head)
    line = f"  {c['read']} read"
    if c["filtered"]:
        line += f" ({c['filtered']} more left out by --where)"
    if report.outputs:
        line += f", {c['examples']} written"
        if c["valid"]:
            line += f" ({c['train']} train / {c['valid']} validation"
            line += ", stratified by class)" if report.classification and report.task == "classification" else ")"
    out.print(line)

    shown_in_table = {"tokens_per_example", "trained_tokens_per_example"}
    for level in ("error", "warning", "fix", "info"):
        group = [f for f in report.findings if f.level.value == level and f.code not in shown_in_table]
        if not group:
            continue
        out.print(f"\n[{_STYLE[level]}]{_TITLE[level]} ({len(group)})[/]")
        for f in group:
            where = ""
            if f.line is not None:
                where = f"{report.unit} {f.line}"
                if f.count > 1 and len(f.lines) > 1:
                    where = f"{report.unit}s {', '.join(map(str, f.lines))}{'…' if f.count > len(f.lines) else ''}"
            if f.field:
                where = f"{where}, {f.field}" if where else f.field
            count = f" ×{f.count}" if f.count > 1 else ""
            remedy = ""
            if f.data.get("recommended"):
                remedy = " [green](fixed)[/]" if f.data.get("applied") else " [dim](declined)[/]"
            loc = f" [dim]({_escape(where)})[/]" if where else ""
            out.print(f"  [{_STYLE[level]}]{f.code}[/]{count}{loc}: {_escape(f.message)}{remedy}")
    for note in notes:
        out.print(f"[dim]note: {_escape(note)}[/]")

    tokens, est = report.tokens, report.estimates
    if tokens:
        s, t = tokens["tokens_per_example"], tokens["trained_tokens_per_example"]
        table = Table(title="Tokens per training example (the base model's tokenizer and chat template)", title_justify="left")
        for col in ("", "min", "median", "p95", "max", "total"):
            table.add_column(col, justify="right")
        table.add_row("all", *(f"{s[k]:,}" for k in ("min", "median", "p95", "max", "sum")))
        table.add_row("trained", *(f"{t[k]:,}" for k in ("min", "median", "p95", "max", "sum")))
        out.print()
        out.print(table)
        ctx = tokens["context_length"]
        if ctx:
            over = tokens["examples_over_context"]
            out.print(
                f"Context {ctx:,} tokens: {over:,} example{'s' if over != 1 else ''} over it"
                + (f" (truncated, {tokens['truncated_tokens']:,} tokens cut)" if over else "")
            )
    if est:
        out.print(
            f"Epochs (OpenAI's auto rule for {est['n_examples']:,} examples): [bold]{est['n_epochs']}[/]; billed tokens = "
            f"{est['tokens_per_epoch']:,} × {est['n_epochs']} = [bold]{est['billed_tokens']:,}[/]"
        )
        costs = ", ".join(f"{m} ${usd:,.2f}" for m, usd in est["cost_usd"].items())
        out.print(f"OpenAI would bill (published training prices): {costs}")
        speed = est["tokens_per_second"]
        basis = "measured for SmolLM2-135M LoRA on a 2-core CPU; larger models are slower" if est["tokens_per_second_is_default"] else "measured here"
        out.print(f"Local training: about {_duration(est['compute_seconds'])} at {speed:,.0f} tokens/s ({basis})")

    if not report.outputs:
        n_err = len(report.errors)
        out.print(f"\n[bold red]Not written:[/] {n_err} error{'s' if n_err != 1 else ''} to fix first (see above).")
        return
    out.print("\n[bold]Wrote[/] " + " and ".join(_escape(p) for p in report.outputs))
    if report.target == "completion":
        if report.separator:
            out.print(f"At inference, end every prompt with the separator `{_escape(_show(report.separator))}`.")
        if report.stop:
            out.print(f"Stop generating at `{_escape(_show(report.stop))}` (stop=[\"{_escape(_show(report.stop))}\"]).")
    out.print("\n[bold]Next:[/] upload the file(s) and start a job (a running `tunery serve`, port 8000 by default):")
    for cmd in _next_commands(report):
        out.print(f"  {_escape(cmd)}")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _next_commands(report) -> list[str]:
    """The exact commands that upload the outputs and create the job (current API and legacy)."""
    base = os.environ.get("TUNERY_BASE_URL", "http://localhost:8000/v1")
    train = report.outputs[0]
    valid = report.outputs[1] if len(report.outputs) > 1 else None
    q = shlex.quote
    cmds = [
        f"export OPENAI_BASE_URL={base} OPENAI_API_KEY=$TUNERY_API_KEY",
        f'curl -s $OPENAI_BASE_URL/files -H "Authorization: Bearer $OPENAI_API_KEY" -F purpose=fine-tune -F file=@{q(train)}',
    ]
    if valid:
        cmds.append(
            f'curl -s $OPENAI_BASE_URL/files -H "Authorization: Bearer $OPENAI_API_KEY" -F purpose=fine-tune -F file=@{q(valid)}'
        )
    sdk = (
        "python -c \"from openai import OpenAI; c = OpenAI(); "
        f"t = c.files.create(file=open({train!r}, 'rb'), purpose='fine-tune').id; "
    )
    if valid:
        sdk += f"v = c.files.create(file=open({valid!r}, 'rb'), purpose='fine-tune').id; "
    method = "{'type': 'dpo'}" if report.target == "dpo" else None
    sdk += "print(c.fine_tuning.jobs.create(model='gpt-4o-mini-2024-07-18', training_file=t"
    sdk += ", validation_file=v" if valid else ""
    sdk += f", method={method}" if method else ""
    sdk += ").id)\""
    cmds.append(sdk)
    if report.target == "completion":
        legacy = f"openai api fine_tunes.create -t {q(train)}"
        if valid:
            legacy += f" -v {q(valid)}"
        cls = report.classification if report.task == "classification" else None
        if valid and cls:
            legacy += " --compute_classification_metrics"
            if cls["n_classes"] == 2:
                legacy += f" --classification_positive_class {q(cls['positive_class'])}"
            else:
                legacy += f" --classification_n_classes {cls['n_classes']}"
        cmds.append(f"OPENAI_API_BASE={base} {legacy}   # the legacy openai==0.28.1 client")
    return cmds


def register(app: typer.Typer) -> None:
    app.command("prepare", help=HELP)(prepare)
