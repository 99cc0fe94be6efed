"""The spec validator can fail, and every route we serve for files/uploads/models is in the spec."""

import json

import jsonschema
import pytest
from api_support import SPEC_DIR

from tunery.api.app import create_app
from tunery.api.protocol.files import FileObject
from tunery.store.settings import load_settings

FILE = {"id": "file-abc", "object": "file", "bytes": 3, "created_at": 1, "filename": "a.jsonl", "purpose": "fine-tune", "status": "processed"}


def test_validator_rejects_what_the_spec_rejects(spec):
    spec.validate("OpenAIFile", FILE)
    for bad in ({**FILE, "status": "done"}, {k: v for k, v in FILE.items() if k != "status"}, {**FILE, "expires_at": None}):
        with pytest.raises(jsonschema.ValidationError):
            spec.validate("OpenAIFile", bad)
    with pytest.raises(jsonschema.ValidationError):
        spec.validate("ErrorResponse", {"error": {"message": "x", "type": "y"}})  # param and code are required
    spec.validate("Upload", {"id": "upload_a", "object": "upload", "bytes": 1, "created_at": 1, "expires_at": 2,
                             "filename": "a", "purpose": "batch", "status": "pending", "file": None})
    spec.validate_legacy("OpenAIFile", {**FILE, "status_details": None})


def test_file_object_never_sends_nulls_the_spec_forbids(spec):
    obj = FileObject(**FILE).model_dump()
    assert "expires_at" not in obj and "status_details" not in obj
    spec.validate("OpenAIFile", obj)


def test_our_routes_exist_in_the_spec(tmp_path):
    paths = json.loads((SPEC_DIR / "openapi.json").read_text())["paths"]
    app = create_app(load_settings(tmp_path), worker=False)
    ours = []
    for path, methods in app.openapi()["paths"].items():  # what the app serves
        if not path.startswith(("/v1/files", "/v1/uploads", "/v1/models")):
            continue
        spec_path = path[3:]
        for method in methods:
            ours.append((method, spec_path))
            assert spec_path in paths, spec_path
            assert method in paths[spec_path], (method, spec_path)
    assert len(ours) == 12
