"""OpenAI's error envelope for every error the server returns.

`{"error": {"message", "type", "param", "code"}}` with the right status: `APIError` raised by a
route; FastAPI's request validation (OpenAI answers 400, not 422, and names the field in
`param`); routing 404s and 405s ("Invalid URL (GET /v1/nope)", a 405's `Allow` naming every
method of the path); and any unexpected exception
(500 `server_error`, logged with its traceback; the server stays up).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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


class APIError(Exception):
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
        super().__init__(message)
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope(500, "The server had an error while processing your request.", "server_error")
