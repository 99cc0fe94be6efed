"""Limits on what a remote client can make the server hold: body size, request rate, storage.

`BodyLimit` (ASGI middleware) counts a request's body while the app reads it and answers 413 past
`max_request_bytes`, whether or not the client sent a Content-Length (a declared length over the
limit is refused before a byte is read; a chunked body is cut off as it arrives). The two routes
that stream multipart uploads lift it with `lift_body_limit` before reading: their file parts
have their own limits (`max_file_bytes`, the Upload's declared size).

`RateLimiter` is a token bucket per project, in this process: with several server processes on
one database each has its own buckets (documented; a shared limiter would need a shared store).

`storage_room` / `check_storage` are the project's quota of stored file bytes.
"""

from __future__ import annotations

import math
import threading
import time

from tunery.api.errors import APIError, quota_exceeded
from tunery.store.settings import human_bytes

_SCOPE_KEY = "tunery.body_limit"


def too_large_body(limit: int) -> APIError:
    return APIError(413, f"The request body is too large: the limit is {human_bytes(limit)}.", code="request_too_large")


class _Guard:
    """The body limit of one request; `limit = None` once a route lifts it."""

    def __init__(self, limit: int, declared: str | None) -> None:
        self.limit: int | None = limit
        self.declared = declared
        self.received = 0

    def check(self) -> None:
        if self.limit is None:
            return
        declared = self.declared
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise too_large_body(self.limit)
        if self.received > self.limit:
            raise too_large_body(self.limit)


class BodyLimit:
    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        guard = _Guard(self.limit, declared.decode("latin-1") if declared is not None else None)
        scope[_SCOPE_KEY] = guard

        async def limited_receive():
            guard.check()  # before reading: a declared length over the limit reads nothing
            message = await receive()
            if message["type"] == "http.request":
                guard.received += len(message.get("body", b""))
                guard.check()
            return message

        await self.app(scope, limited_receive, send)


def lift_body_limit(request) -> None:
    """For a route that bounds its own body (streamed multipart uploads)."""
    guard = request.scope.get(_SCOPE_KEY)
    if guard is not None:
        guard.limit = None


class RateLimiter:
    """Token buckets: each key may spend `burst` requests at once, refilled at `per_minute`/60 a second."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic time)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one request of `key`: 0.0 if allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def rate_limited(wait: float, per_minute: int) -> APIError:
    seconds = max(1, math.ceil(wait))
    return APIError(
        429,
        f"Rate limit reached for this project on requests per min (RPM): limit {per_minute}. Please try again in {seconds}s.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(seconds)},
    )


_limiter_lock = threading.Lock()


def check_rate(app, settings, project_id: str) -> None:
    """Spend one request of the project's bucket or raise the 429 (one limiter per app)."""
    if settings.rate_limit_per_minute <= 0:
        return
    with _limiter_lock:
        limiter = getattr(app.state, "rate_limiter", None)
        if limiter is None:
            limiter = app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    wait = limiter.take(project_id)
    if wait:
        raise rate_limited(wait, settings.rate_limit_per_minute)


def storage_room(store, session, project_id: str) -> int | None:
    """Bytes the project may still store (None: no quota)."""
    from tunery.store import files

    quota = store.settings.max_project_bytes
    if quota <= 0:
        return None
    return max(0, quota - files.project_bytes(session, project_id))


def storage_exceeded(store, adding: int | None = None) -> APIError:
    quota = human_bytes(store.settings.max_project_bytes)
    size = f" ({human_bytes(adding)})" if adding is not None else ""
    return quota_exceeded(
        f"This file{size} would exceed the project's storage quota of {quota}. Delete files you no longer need "
        "(DELETE /v1/files/{file_id}) or ask the operator to raise max_project_bytes."
    )


def check_storage(store, session, project_id: str, adding: int) -> None:
    room = storage_room(store, session, project_id)
    if room is not None and adding > room:
        raise storage_exceeded(store, adding)
