"""A module the server or the CLI needs is imported plainly: if it is missing, starting fails with
an ImportError naming it, instead of silently dropping routes, commands, tables or checks (which
is how the legacy upload check once went missing without a failing test)."""

import subprocess
import sys

import pytest

START_APP = "from tunery.api.app import create_app; create_app()"
CREATE_TABLES = "from tunery.store.db import Database; Database('sqlite://').create_all()"


@pytest.mark.parametrize(
    ("start", "missing"),
    [
        (START_APP, "tunery.api.routes.evals"),
        (START_APP, "tunery.api.routes.graders"),
        (START_APP, "tunery.jobs.worker"),
        (START_APP, "tunery.store.validation"),
        (START_APP, "tunery.jobs.models"),
        ("import tunery.cli.main", "tunery.cli.eval"),
        (CREATE_TABLES, "tunery.store.uploads"),
    ],
)
def test_a_missing_module_fails_the_start(start, missing):
    # `None` in sys.modules makes importing the module raise ModuleNotFoundError, as a deleted file would.
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        f"try:\n    {start}\n"
        "except ImportError as exc:\n    print('ImportError', exc.name)\n"
        "else:\n    print('started')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == f"ImportError {missing}", proc.stdout + proc.stderr


def test_every_router_and_command_is_mounted():
    from tunery.api.app import create_app
    from tunery.cli.main import app as cli

    paths = set(create_app().openapi()["paths"])
    for path in ("/v1/files", "/v1/uploads", "/v1/models", "/v1/fine_tuning/jobs", "/v1/fine-tunes", "/v1/chat/completions",
                 "/v1/completions", "/v1/evals", "/v1/evals/{eval_id}/runs", "/v1/fine_tuning/alpha/graders/run"):
        assert path in paths, path
    names = {c.name for c in cli.registered_commands} | {g.name for g in cli.registered_groups}
    assert {"prepare", "train", "serve", "files", "jobs", "chat", "eval"} <= names, names
