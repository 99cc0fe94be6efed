"""`tunery files …` and `tunery models …`: clients of the server's HTTP API (never the database).

The server is found with `--base-url` / `TUNERY_BASE_URL` (default http://127.0.0.1:8000/v1) and
the key with `--api-key` / `TUNERY_API_KEY` (or `OPENAI_API_KEY`). An API error prints the
server's message on one line (`error: … (param: …) [HTTP 400]`) and exits 1.

Shared helper for other client commands: `connect(typer_app)` adds the connection options to a
command group and `api()` returns the `Api` (`get/post/delete/request`, `stream_to`) they set up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import typer

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
SINGLE_REQUEST_LIMIT = 512 * 1024**2  # above this, `files create` sends the file through /uploads
PART_BYTES = 64 * 1024**2


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """A thin httpx client that turns the error envelope into `ApiError` with one clear line."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 600) -> None:
        self.base_url = (base_url or os.environ.get("TUNERY_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("TUNERY_API_KEY") or os.environ.get("OPENAI_API_KEY") or ""
        self.timeout = timeout

    def _send(self, method: str, path: str, stream: bool = False, **kwargs):
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            client = httpx.Client(timeout=self.timeout, headers=headers)
            request = client.build_request(method, self.base_url + path, **kwargs)
            response = client.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach {self.base_url}: {exc} (is `tunery serve` running?)") from None
        if response.status_code >= 400:
            response.read()
            client.close()
            raise ApiError(response.status_code, _error_line(response))
        if not stream:
            client.close()
        return response

    def request(self, method: str, path: str, **kwargs) -> Any:
        return self._send(method, path, **kwargs).json()

    def get(self, path: str, **kwargs) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> Any:
        return self.request("DELETE", path, **kwargs)

    def stream_to(self, path: str, sink) -> int:
        """GET `path` and write its body to the binary file `sink` chunk by chunk."""
        response = self._send("GET", path, stream=True)
        n = 0
        try:
            for chunk in response.iter_bytes():
                sink.write(chunk)
                n += len(chunk)
        finally:
            response.close()
        return n


def _error_line(response) -> str:
    try:
        err = response.json()["error"]
        param = f" (param: {err['param']})" if err.get("param") else ""
        return f"{err['message']}{param} [HTTP {response.status_code}]"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


_state: dict[str, Api] = {}


def connect(group: typer.Typer) -> None:
    """Give `group` the `--base-url` / `--api-key` options; commands then call `api()`."""

    @group.callback()
    def _connection(
        base_url: str = typer.Option(None, "--base-url", envvar="TUNERY_BASE_URL", help=f"API base URL [default: {DEFAULT_BASE_URL}]"),
        api_key: str = typer.Option(None, "--api-key", envvar=["TUNERY_API_KEY", "OPENAI_API_KEY"], help="API key (see `tunery keys create`)."),
    ) -> None:
        _state["api"] = Api(base_url, api_key)


def api() -> Api:
    return _state.get("api") or Api()


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def show(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2))


def _call(fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        fail(str(exc))


def _table(rows: list[dict], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from datetime import datetime

    def cell(row: dict, col: str) -> str:
        value = row.get(col)
        if value is None:
            return ""
        if col in ("created", "created_at") and isinstance(value, int):
            return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
        return str(value)

    table = Table(box=None, header_style="bold")
    for i, col in enumerate(columns):
        # Ids are what users copy: never cut them; the other columns fold instead.
        width = max([len(col)] + [len(cell(r, col)) for r in rows]) if i == 0 else None
        table.add_column(col, no_wrap=i == 0, min_width=width, overflow="fold")
    for row in rows:
        table.add_row(*[cell(row, c) for c in columns])
    Console().print(table)


def _progress(total: int, label: str):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True,
                    console=_stderr_console(), disable=total < 1024**2)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


class _Reader:
    """A file whose reads advance a progress bar (httpx streams multipart file parts by read())."""

    def __init__(self, f, progress, task) -> None:
        self._f, self._progress, self._task = f, progress, task
        self.name = f.name

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._progress.update(self._task, advance=len(data))
        return data


# -- files ---------------------------------------------------------------------------------------

files_app = typer.Typer(help="Upload, list, inspect and delete files (a client of the server's API).", no_args_is_help=True)
connect(files_app)


def _upload_in_parts(client: Api, path: Path, purpose: str, progress, task) -> dict:
    import hashlib

    size = path.stat().st_size
    up = client.post("/uploads", json={"filename": path.name, "purpose": purpose, "bytes": size, "mime_type": "application/jsonl"})
    md5 = hashlib.md5(usedforsecurity=False)
    part_ids = []
    try:
        with open(path, "rb") as f:
            while chunk := f.read(PART_BYTES):
                md5.update(chunk)
                part = client.post(f"/uploads/{up['id']}/parts", files={"data": (path.name, chunk)})
                part_ids.append(part["id"])
                progress.update(task, advance=len(chunk))
        done = client.post(f"/uploads/{up['id']}/complete", json={"part_ids": part_ids, "md5": md5.hexdigest()})
    except BaseException:
        try:
            client.post(f"/uploads/{up['id']}/cancel")
        except ApiError:
            pass
        raise
    return done["file"]


@files_app.command("create")
def files_create(
    path: Path = typer.Argument(..., help="The file to upload (JSONL for fine-tune)."),
    purpose: str = typer.Option("fine-tune", "--purpose", "-p", help="fine-tune, batch, user_data, evals, assistants, vision."),
    parts: bool = typer.Option(False, "--parts", help="Send it through the Uploads API in 64 MB parts (automatic above 512 MB)."),
) -> None:
    """Upload a file and print its File object (a fine-tune file shows its check: status, status_details)."""
    if not path.is_file():
        fail(f"{path}: no such file", 2)
    client = api()
    size = path.stat().st_size
    with _progress(size, f"uploading {path.name}") as progress:
        task = progress.add_task("upload", total=size)
        if parts or size > SINGLE_REQUEST_LIMIT:
            obj = _call(_upload_in_parts, client, path, purpose, progress, task)
        else:
            with open(path, "rb") as f:
                obj = _call(client.post, "/files", data={"purpose": purpose}, files={"file": (path.name, _Reader(f, progress, task))})
    show(obj)
    if obj.get("status") == "error":
        typer.echo(f"error: {path}: {obj.get('status_details')}", err=True)
        raise typer.Exit(1)


@files_app.command("list")
def files_list(
    purpose: Optional[str] = typer.Option(None, "--purpose", "-p", help="Only files of this purpose."),
    limit: int = typer.Option(100, "--limit", help="At most this many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw list object."),
) -> None:
    """List files, newest first."""
    params = {"limit": limit, **({"purpose": purpose} if purpose else {})}
    page = _call(api().get, "/files", params=params)
    if as_json:
        show(page)
    else:
        _table(page["data"], ["id", "filename", "purpose", "bytes", "status", "created_at"])


@files_app.command("get")
def files_get(file_id: str = typer.Argument(..., help="file-…")) -> None:
    """Print a File object."""
    show(_call(api().get, f"/files/{file_id}"))


@files_app.command("delete")
def files_delete(file_id: str = typer.Argument(..., help="file-…")) -> None:
    """Delete a file."""
    show(_call(api().delete, f"/files/{file_id}"))


@files_app.command("content")
def files_content(
    file_id: str = typer.Argument(..., help="file-…"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
) -> None:
    """Download a file's bytes (stdout or --output)."""
    import sys

    if output is None:
        _call(api().stream_to, f"/files/{file_id}/content", sys.stdout.buffer)
        return
    tmp = output.with_name(output.name + ".part")
    with open(tmp, "wb") as f:
        try:
            n = _call(api().stream_to, f"/files/{file_id}/content", f)
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
    tmp.replace(output)
    typer.echo(f"wrote {n} bytes to {output}", err=True)


# -- models --------------------------------------------------------------------------------------

models_app = typer.Typer(help="Base and fine-tuned models the server offers (a client of its API).", no_args_is_help=True)
connect(models_app)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Print the raw list object.")) -> None:
    """List base models (aliases) and this project's fine-tuned models and checkpoints."""
    page = _call(api().get, "/models")
    if as_json:
        show(page)
    else:
        _table(page["data"], ["id", "owned_by", "created"])


@models_app.command("get")
def models_get(model: str = typer.Argument(..., help="A model id, e.g. gpt-4o-mini or ft:…")) -> None:
    """Print a Model object."""
    show(_call(api().get, f"/models/{model}"))


@models_app.command("delete")
def models_delete(model: str = typer.Argument(..., help="A fine-tuned model id (ft:…).")) -> None:
    """Delete a fine-tuned model and its weights (base models cannot be deleted)."""
    show(_call(api().delete, f"/models/{model}"))


def register(app: typer.Typer) -> None:
    app.add_typer(files_app, name="files")
    existing = next((g for g in app.registered_groups if g.name == "models"), None)
    if existing is None:
        app.add_typer(models_app, name="models")
        return
    # Another module already owns `tunery models` (local models): add the API commands it lacks.
    names = {c.name or c.callback.__name__ for c in existing.typer_instance.registered_commands}
    for command in models_app.registered_commands:
        if command.name not in names:
            existing.typer_instance.registered_commands.append(command)
