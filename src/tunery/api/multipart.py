"""Streaming `multipart/form-data`: file parts go straight to a sink as they arrive.

Starlette's `request.form()` reads the whole body (spooling files to temp files) before the route
runs, so a size limit could only be checked afterwards. Here the body is parsed chunk by chunk
from `request.stream()`: the file part is written to the sink (a blob writer that raises
`BlobTooLarge` past its limit) and the request stops being read the moment it is too large.

The form's shape is bounded too (settings `max_form_parts`, `max_form_header_bytes`): more parts
than that is a 400, a part whose headers are larger is a 413, and a text field over 64 KB a 400.
python-multipart also caps one header line and the header count of a part; its errors for those
get the same 413.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tunery.api.errors import APIError
from tunery.api.limits import lift_body_limit
from tunery.store.settings import human_bytes

MAX_FIELD_BYTES = 64 * 1024


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...


class FormStream:
    """Text fields (`fields`) and, for the file part, its `filename` and the sink it went to."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.sink: Sink | None = None


async def read_form(request: Request, file_field: str, open_sink: Callable[[str], Sink]) -> FormStream:
    """Parse the body; `open_sink(filename)` is called once when the `file_field` part starts."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise APIError(
            415 if ctype and ctype != b"multipart/form-data" else 400,
            "The request must be multipart/form-data with a 'file' part and a 'purpose' field.",
        )
    settings = request.app.state.store.settings
    max_parts, max_header = settings.max_form_parts, settings.max_form_header_bytes
    lift_body_limit(request)  # the JSON body limit: this form's limits are the ones here and the sink's
    form = FormStream()
    state: dict = {"headers": {}, "field": b"", "value": b"", "name": None, "buf": None, "target": None, "end": False,
                   "parts": 0, "header_bytes": 0}

    def headers_too_large() -> APIError:
        return APIError(413, f"The headers of a part of the multipart body are too large: the limit is {human_bytes(max_header)}.",
                        code="request_too_large")

    def on_part_begin() -> None:
        state["parts"] += 1
        if state["parts"] > max_parts:
            raise APIError(400, f"The multipart body has too many parts: at most {max_parts} are accepted.")
        state.update(headers={}, name=None, buf=None, target=None, header_bytes=0)

    def count_header(n: int) -> None:
        state["header_bytes"] += n
        if state["header_bytes"] > max_header:
            raise headers_too_large()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        count_header(end - start)
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        count_header(end - start)
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field:  # with or without a filename: some clients send raw bytes
            if form.sink is not None:
                raise APIError(400, f"Only one '{file_field}' part is allowed.", param=file_field)
            form.filename = disp.get(b"filename", b"").decode("utf-8", "replace") or "file"
            form.sink = state["target"] = open_sink(form.filename)
        else:
            state["buf"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["target"] is not None:
            state["target"].write(data[start:end])
        elif state["buf"] is not None:
            state["buf"] += data[start:end]
            if len(state["buf"]) > MAX_FIELD_BYTES:
                raise APIError(400, f"The form field '{state['name']}' is too long.", param=state["name"])

    def on_part_end() -> None:
        if state["buf"] is not None and state["name"]:
            form.fields[state["name"]] = state["buf"].decode("utf-8", "replace")

    def on_end() -> None:
        state["end"] = True

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        if str(exc).startswith("Maximum header"):  # python-multipart's own caps on a part's headers
            raise headers_too_large() from None
        raise APIError(400, f"The multipart body could not be parsed: {exc}.") from None
    if not state["end"]:  # a truncated body would otherwise pass as a shorter file
        raise APIError(400, "The multipart body could not be parsed: it ends before its closing boundary.")
    return form
