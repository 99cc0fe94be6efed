"""`Authorization: Bearer <key>` → the caller's project.

Routes take `project: Project = Depends(current_project)` and pass `project.id` to every store
lookup, so an id from another project is "not found" (404), never "forbidden": ids of other
projects' objects are not even confirmed to exist.

The key is looked up on every request (no cache), so `tunery keys revoke` takes effect on the next
request of a running server; how it is compared: `tunery.store.keys`. A valid key then spends one
request of its project's rate limit (`tunery.api.limits`: 429 with `Retry-After`).
"""

from __future__ import annotations

from fastapi import Request

from tunery.api.errors import APIError
from tunery.api.limits import check_rate
from tunery.store.context import Store
from tunery.store.keys import Project, check_key, note_use


def get_store(request: Request) -> Store:
    return request.app.state.store


def current_project(request: Request) -> Project:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise APIError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). Create one with `tunery keys create`.",
        )
    store = get_store(request)
    with store.db.session_scope() as session:
        found = check_key(session, key)
    if found is None:
        shown = f"{key[:8]}…{key[-4:]}" if len(key) > 12 else "****"
        raise APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
    key_id, project = found
    note_use(store.db, key_id)
    check_rate(request.app, store.settings, project.id)
    return project
