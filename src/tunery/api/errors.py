"""OpenAI's error envelope for every error the server returns.

`{"error": {"message", "type", "param", "code"}}` with the right status: `APIError` raised by a
route; FastAPI's request validation (OpenAI answers 400, not 422, and names the field in
`param`); routing 404s and 405s ("Invalid URL (GET /v1/nope)", a 405's `Allow` naming every
method of the path); a full disk, of the data folder
or the database (507 `insufficient_storage`: nothing of the request was stored); and any
unexpected exception (500 `server_error`, logged with its traceback; the server stays up).

`APIError` is a Starlette `HTTPException` so that one raised while FastAPI reads a body (the body
limit of `tunery.api.limits`) reaches its handler instead of becoming "error parsing the body".
Limits answer as OpenAI does: 413 for a body too large, 429 with `Retry-After` for the request
rate (`type` "requests", `code` "rate_limit_exceeded") and 429 `insufficient_quota` for a project
quota, with `x-should-retry: false` so that the SDK does not retry what waiting will not fix.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tunery.store.blobs import DiskFull, is_disk_full

log = logging.getLogger("tunery.api")

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_exceeded",
}


class APIError(StarletteHTTPException):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(kind: str, oid: str, param: str = "id") -> APIError:
    """OpenAI's wording for an unknown id (also what another project's id gets)."""
    return APIError(404, f"No such {kind}: {oid}", param=param)


def quota_exceeded(message: str) -> APIError:
    """A project quota (stored bytes, unfinished jobs): waiting a few seconds will not help."""
    return APIError(429, message, code="insufficient_quota", type="insufficient_quota", headers={"x-should-retry": "false"})


DISK_FULL_MESSAGE = (
    "The server's disk is full: the request could not be stored and nothing of it was kept. "
    "Try again once the operator has freed space."
)


def envelope(status: int, message: str, type: str, param: str | None = None, code: str | None = None, headers=None):
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form", "cookie")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def _validation_message(err: dict, param: str | None) -> str:
    msg = err.get("msg", "Invalid value")
    if err.get("type") == "missing":
        return f"Missing required parameter: '{param}'." if param else "Missing required parameter."
    if err.get("type") in ("json_invalid", "model_attributes_type") and not param:
        return "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)"
    return f"Invalid value for '{param}': {msg}." if param else f"{msg}."


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """Every method of the path: Starlette's 405 names only those of the first route that matched
    the path, and a path such as /v1/files has one route per method."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError):
        return envelope(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _field(tuple(first.get("loc", ())))
        return envelope(400, _validation_message(first, param), "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        headers = exc.headers
        if exc.status_code in (404, 405) and exc.detail in ("Not Found", "Method Not Allowed"):
            message = f"Invalid URL ({request.method} {request.url.path})"
            if exc.status_code == 405:
                headers = {**(headers or {}), "Allow": _allowed_methods(app, request)}
        else:
            message = str(exc.detail)
        return envelope(exc.status_code, message, _TYPES.get(exc.status_code, "server_error"), headers=headers)

    @app.exception_handler(DiskFull)
    @app.exception_handler(OSError)
    @app.exception_handler(DBAPIError)
    async def _storage(request: Request, exc: Exception):
        # Registered for these types (not only under `Exception`) so that a full disk is answered
        # like any handled error, without Starlette re-raising it into the server's log.
        return _server_error(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return _server_error(request, exc)


def _server_error(request: Request, exc: Exception) -> JSONResponse:
    if is_disk_full(exc):  # the data folder's, or the database's "database or disk is full"
        log.error("disk full on %s %s: %s", request.method, request.url.path, exc)
        return envelope(507, DISK_FULL_MESSAGE, "server_error", code="insufficient_storage")
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope(500, "The server had an error while processing your request.", "server_error")
