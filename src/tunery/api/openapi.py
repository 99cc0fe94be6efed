"""The OpenAPI document at `/openapi.json`, made to say what the server really answers.

FastAPI documents each route's response model and what a route declares itself (`responses=`
for a status only it answers, `openapi_extra=` for a body it parses by hand). This module adds
what every route shares and FastAPI cannot see:
- Bearer auth (`Authorization: Bearer <key>`) on every operation;
- the error envelope (`ErrorResponse`) on the statuses every operation can answer: 400 (bad
  input: OpenAI answers 400 where FastAPI documents 422, which this server never sends), 401, 429,
  404 where a path or a body names an object or a model, 413 where there is a request body;
- and it drops FastAPI's `HTTPValidationError`/`ValidationError` schemas, which nothing returns.
`tests/test_fuzz_api.py` holds the document to the server's answers with schemathesis.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from tunery.api.protocol.common import ErrorResponse

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}

SHARED_ERRORS = {
    "400": "Invalid request: a parameter is missing, of the wrong type or out of range (`param` names it).",
    "401": "No API key, or one this server does not know.",
    "429": "Too many requests: retry after `Retry-After` seconds.",
}
NOT_FOUND = "No such object in the caller's project, or no such model."
TOO_LARGE = "The request body is larger than this server accepts."


def error_response(description: str) -> dict:
    """A route's own error status, for `responses=`: `{403: error_response("...")}` (JSON even
    where the route's own answer is HTML or a file)."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _add_errors(operation: dict) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    statuses = dict(SHARED_ERRORS)
    if any(p.get("in") == "path" for p in operation.get("parameters", ())) or "requestBody" in operation:
        statuses["404"] = NOT_FOUND
    if "requestBody" in operation:
        statuses["413"] = TOO_LARGE
    for status, description in statuses.items():
        responses.setdefault(status, error_response(description))
    operation["security"] = [{"bearer": []}]


def document(app: FastAPI) -> dict:
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    # The envelope and the streamed events: no route returns them as its response model.
    models = sorted({ErrorResponse, *_STREAMED}, key=lambda m: m.__name__)
    _, defs = models_json_schema([(m, "serialization") for m in models], ref_template="#/components/schemas/{model}")
    for name, schema in defs.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "description": "A key from `tunery keys create`."}}
    for methods in doc.get("paths", {}).values():
        for operation in methods.values():
            _add_errors(operation)
    return doc


def install(app: FastAPI) -> None:
    """Serve `document(app)` (built once, on the first request) at `/openapi.json`."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi


def multipart_body(schema: dict) -> dict:
    """`openapi_extra=` of a route that streams `multipart/form-data` itself (`tunery.api.multipart`)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


_STREAMED: set[type[BaseModel]] = set()  # the events of every `event_stream()`, added to the components


def event_stream(event: type[BaseModel]) -> dict:
    """The other 200 of a route that streams server-sent events when asked (`stream: true`), for
    `responses={200: event_stream(Chunk)}`: each event's `data` is a `Chunk`, an `ErrorResponse`
    (generation failed mid-stream) or the final `[DONE]`. Schemathesis checks every event."""
    _STREAMED.add(event)
    data = {"anyOf": [
        {"const": "[DONE]"},
        {"contentMediaType": "application/json", "contentSchema": {"$ref": f"#/components/schemas/{event.__name__}"}},
        {"contentMediaType": "application/json", "contentSchema": ERROR_REF},
    ]}
    return {"content": {"text/event-stream": {"schema": {"type": "object", "required": ["data"], "properties": {"data": data}}}}}


NOT_MULTIPART = error_response("The body is not `multipart/form-data`.")
