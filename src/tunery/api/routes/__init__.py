"""One router per resource. `ROUTERS` names the modules `create_app` mounts under /v1.

Each module `tunery.api.routes.<name>` exposes `router: fastapi.APIRouter` with paths relative to
/v1 (e.g. "/files"). A listed module that does not exist yet is skipped, so a resource lands by
adding its module; a new resource adds its name here.
"""

ROUTERS = ("files", "uploads", "models", "fine_tuning", "fine_tunes", "chat", "completions", "evaluations")
