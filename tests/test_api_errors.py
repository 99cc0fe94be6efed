"""Every error is OpenAI's envelope: unknown routes and methods, validation, server errors."""

import httpx
import pytest
from fastapi.testclient import TestClient

from tunery.api.app import create_app
from tunery.store.keys import create_key
from tunery.store.settings import load_settings


def test_unknown_route_and_method(api_server, spec):
    for method, path, status in (
        ("GET", "/v1/nope", 404),
        ("GET", "/nope", 404),
        ("PUT", "/v1/files", 405),
        ("POST", "/v1/models", 405),
    ):
        r = httpx.request(method, f"http://127.0.0.1:{api_server.process.port}{path}", headers=api_server.headers())
        assert r.status_code == status
        spec.validate("ErrorResponse", r.json())
        assert r.json()["error"] == {
            "message": f"Invalid URL ({method} {path})", "type": "invalid_request_error", "param": None, "code": None
        }


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "param", "message"),
    [
        ("GET", "/files", {"params": {"limit": "many"}}, "limit", "Invalid value for 'limit': Input should be a valid integer"),
        ("GET", "/files", {"params": {"order": "sideways"}}, "order", "Invalid value for 'order': Input should be 'asc' or 'desc'."),
        ("POST", "/uploads", {"json": {"filename": "a", "purpose": "batch", "mime_type": "x"}}, "bytes", "Missing required parameter: 'bytes'."),
        ("POST", "/uploads", {"json": {"filename": "a", "purpose": "batch", "bytes": 1, "mime_type": "x",
                                       "expires_after": {"anchor": "created_at", "seconds": 5}}},
         "expires_after.seconds", "Invalid value for 'expires_after.seconds'"),
        ("POST", "/uploads/upload_x/complete", {"json": {"part_ids": "p"}}, "part_ids", "Invalid value for 'part_ids'"),
    ],
)
def test_validation_errors_are_400_naming_the_field(api_server, spec, method, path, kwargs, param, message):
    r = httpx.request(method, api_server.base_url + path, headers=api_server.headers(), **kwargs)
    assert r.status_code == 400
    spec.validate("ErrorResponse", r.json())
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["message"].startswith(message)


def test_unexpected_exception_is_a_500_envelope_and_the_server_stays_up(api_server, openai_client, spec):
    f = openai_client.files.create(file=("x.jsonl", b'{"prompt": "a", "completion": "b"}\n'), purpose="fine-tune")
    (api_server.home / "data" / "files" / f.id).unlink()  # the blob vanished under the server
    r = httpx.get(f"{api_server.base_url}/files/{f.id}/content", headers=api_server.headers())
    assert r.status_code == 500
    spec.validate("ErrorResponse", r.json())
    assert r.json()["error"] == {
        "message": "The server had an error while processing your request.", "type": "server_error", "param": None, "code": None
    }
    assert openai_client.files.retrieve(f.id).id == f.id


def test_handler_envelope_in_process(tmp_path):
    app = create_app(load_settings(tmp_path), worker=False)

    @app.get("/v1/boom")
    def boom():
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/v1/boom")
        assert (r.status_code, r.json()["error"]["type"]) == (500, "server_error")
        assert "kaboom" not in r.text  # internals stay in the log
        with app.state.store.db.session_scope() as s:
            key = create_key(s)
        r = client.get("/v1/files/file-none", headers={"Authorization": f"Bearer {key}"})
        assert r.json() == {"error": {"message": "No such File: file-none", "type": "invalid_request_error", "param": "file_id", "code": None}}
