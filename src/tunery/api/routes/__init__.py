"""One router per resource. `ROUTERS` lists the modules `create_app` mounts under /v1.

Each module `tunery.api.routes.<name>` exposes `router: fastapi.APIRouter` with paths relative to
/v1 (e.g. "/files"). A new resource adds its module here: imported plainly, so a module that is
missing or broken fails the server's start instead of silently dropping its routes.
"""

from tunery.api.routes import (
    chat,
    completions,
    evals,
    files,
    fine_tunes,
    fine_tuning,
    graders,
    models,
    uploads,
)

ROUTERS = (files, uploads, models, fine_tuning, fine_tunes, chat, completions, evals, graders)
