"""`/v1/files` through the real server with the current `openai` SDK, httpx and openai==0.28.1."""

import json
import time

import httpx
import openai
import pytest
from api_support import ServerProcess, chat_examples, create_key, jsonl

GOOD = jsonl(chat_examples(12))


def wait_processed(client, fid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = client.files.retrieve(fid)
        if f.status != "uploaded":
            return f
        time.sleep(0.1)
    raise AssertionError(f"{fid} still uploaded after {timeout}s")


def test_create_retrieve_content_delete(openai_client, spec):
    f = openai_client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    raw = f.model_dump(exclude_unset=True)
    spec.validate("OpenAIFile", raw)
    assert (f.object, f.bytes, f.filename, f.purpose, f.status) == ("file", len(GOOD), "train.jsonl", "fine-tune", "processed")
    assert f.id.startswith("file-") and f.status_details is None
    got = openai_client.files.retrieve(f.id)
    assert got.model_dump() == f.model_dump()
    assert openai_client.files.content(f.id).content == GOOD
    deleted = openai_client.files.delete(f.id)
    spec.validate("DeleteFileResponse", deleted.model_dump())
    assert (deleted.id, deleted.deleted) == (f.id, True)
    with pytest.raises(openai.NotFoundError) as err:
        openai_client.files.retrieve(f.id)
    spec.validate("ErrorResponse", err.value.response.json())
    assert err.value.response.json()["error"]["message"] == f"No such File: {f.id}"
    with pytest.raises(openai.NotFoundError):
        openai_client.files.content(f.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.files.delete(f.id)


def test_bad_fine_tune_file_is_stored_with_status_error_naming_the_line(openai_client, spec):
    records = chat_examples(3) + [{"messages": [{"role": "user", "content": "no answer"}]}]
    f = openai_client.files.create(file=("bad.jsonl", jsonl(records)), purpose="fine-tune")
    spec.validate("OpenAIFile", f.model_dump(exclude_unset=True))
    assert f.status == "error"
    assert f.status_details == "Invalid file format. Line 4, messages: the example has no assistant message"
    broken = openai_client.files.create(file=("broken.jsonl", GOOD + b"{oops\n"), purpose="fine-tune")
    assert broken.status == "error"
    assert broken.status_details.startswith("Invalid file format. Line 13: invalid JSON (Expecting property name")


LEGACY_ROWS = [{"prompt": f"Review {i}: fine ->", "completion": f" {i % 5 + 1} stars\n"} for i in range(12)]
NO_COMPLETION = "the example has no `completion`: nothing to train on (`tunery prepare` removes such rows)"


@pytest.mark.parametrize(
    ("data", "details"),
    [
        (jsonl(LEGACY_ROWS[:5] + [{"prompt": "no answer ->"}] + LEGACY_ROWS[5:]), f"Line 6, completion: {NO_COMPLETION}"),
        (jsonl(LEGACY_ROWS[:2] + [{"prompt": ["a", "list"], "completion": " x"}]), "Line 3, prompt: `prompt` must be a string, not list"),
        (jsonl(LEGACY_ROWS[:3] + [{"prompt": "q ->", "completion": 4}]), "Line 4, completion: `completion` must be a string, not int"),
        (jsonl(LEGACY_ROWS[:1] + [{"prompt": "q ->", "completion": ""}]), "Line 2, completion: the example has an empty `completion`: nothing to train on (`tunery prepare` removes such rows)"),
        (jsonl(LEGACY_ROWS[:7]) + b'{"prompt": "q ->", "completion": " x"\n', "Line 8: invalid JSON (Expecting ',' delimiter at column 38)"),
        (jsonl(LEGACY_ROWS[:2]) + b"\n\n" + jsonl([[1, 2]]), "Line 5: the line must be a JSON object, not list"),
        (jsonl(LEGACY_ROWS[:2] + chat_examples(1)), "Line 3: a chat example in a file that starts with prompt/completion examples (line 1); use one format per file"),
        (jsonl([{"Prompt": "q", "Completion": " a"}]), "Line 1: unknown format: expected 'messages' (chat), 'prompt'/'completion' (prompt/completion) or 'input'/'preferred_output'/'non_preferred_output' (DPO)"),
        (b"\n \n", "The file has no examples: expected one JSON object per line"),
        (jsonl(LEGACY_ROWS[:2]) + "{\"prompt\": \"caf\u00e9\", \"completion\": \" x\"}\n".encode("latin-1"), "Line 3: the line is not valid UTF-8 (byte 16 of the line); save the file as UTF-8"),
    ],
    ids=["missing-completion", "list-prompt", "number-completion", "empty-completion", "bad-json", "not-an-object", "mixed", "unknown-keys", "empty", "latin-1"],
)
def test_broken_legacy_files_are_marked_error_naming_the_line_and_field(openai_client, spec, data, details):
    f = openai_client.files.create(file=("legacy.jsonl", data), purpose="fine-tune")
    spec.validate("OpenAIFile", f.model_dump(exclude_unset=True))
    assert (f.status, f.status_details) == ("error", f"Invalid file format. {details}")
    assert openai_client.files.retrieve(f.id).status_details == f.status_details
    assert openai_client.files.content(f.id).content == data  # stored as uploaded: nothing is lost


def test_good_legacy_files_are_processed(openai_client):
    for rows in (LEGACY_ROWS, [{"prompt": "", "completion": " once upon a time"}, {"completion": " the end"}], [{**r, "id": i} for i, r in enumerate(LEGACY_ROWS)]):
        f = openai_client.files.create(file=("legacy.jsonl", jsonl(rows)), purpose="fine-tune")
        assert (f.status, f.status_details) == ("processed", None)


def test_big_broken_legacy_file_is_checked_after_the_answer(openai_client):
    rows = [{"prompt": "x" * 4000 + " ->", "completion": " y\n"}] * 1200  # ~4.8 MB: over the inline-check size
    data = jsonl(rows + [{"prompt": "last ->", "completion": None}])
    f = openai_client.files.create(file=("big.jsonl", data), purpose="fine-tune")
    done = wait_processed(openai_client, f.id)
    assert (done.status, done.status_details) == ("error", f"Invalid file format. Line 1201, completion: {NO_COMPLETION}")


def test_files_of_other_purposes_are_not_checked(openai_client):
    f = openai_client.files.create(file=("notes.txt", b"not jsonl at all"), purpose="user_data")
    assert (f.status, f.purpose) == ("processed", "user_data")


def test_big_file_is_checked_after_the_answer(openai_client):
    record = {"messages": [{"role": "user", "content": "x" * 4000}, {"role": "assistant", "content": "y"}]}
    data = jsonl([record] * 1200)  # ~4.9 MB: over the inline-check size
    f = openai_client.files.create(file=("big.jsonl", data), purpose="fine-tune")
    assert f.bytes == len(data)
    assert wait_processed(openai_client, f.id).status == "processed"
    assert openai_client.files.content(f.id).content == data


def test_list_filters_orders_and_pages(api_server, spec):
    key = api_server.new_key("listing")  # a fresh project: only these files
    client = openai.OpenAI(base_url=api_server.base_url, api_key=key, max_retries=0)
    ids = []
    for i in range(5):
        purpose = "batch" if i == 2 else "fine-tune"
        ids.append(client.files.create(file=(f"f{i}.jsonl", GOOD), purpose=purpose).id)
        time.sleep(1.05 if i < 4 else 0)  # distinct created_at seconds: an unambiguous order
    page = client.files.list(limit=2)
    spec.validate("ListFilesResponse", page.model_dump(exclude_unset=True))
    assert [f.id for f in page.data] == [ids[4], ids[3]] and page.has_more
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]  # auto-paging follows `after`
    assert [f.id for f in client.files.list(order="asc", after=ids[0])] == ids[1:]
    assert [f.id for f in client.files.list(purpose="batch")] == [ids[2]]
    body = httpx.get(f"{api_server.base_url}/files", params={"limit": 3, "order": "asc"}, headers=api_server.headers(key)).json()
    assert (body["object"], body["first_id"], body["last_id"], body["has_more"]) == ("list", ids[0], ids[2], True)


@pytest.mark.parametrize(
    ("fields", "files", "message", "param"),
    [
        ({}, {"file": ("a.jsonl", GOOD)}, "Missing required parameter: 'purpose'.", "purpose"),
        ({"purpose": "fine-tune"}, {}, "Missing required parameter: 'file'.", "file"),
        ({"purpose": "training"}, {"file": ("a.jsonl", GOOD)}, "'training' is not one of", "purpose"),
        ({"purpose": "fine-tune", "expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
         {"file": ("a.jsonl", GOOD)}, "expires_after.seconds must be between 3600 and 2592000.", "expires_after.seconds"),
    ],
)
def test_bad_create_requests(api_server, spec, fields, files, message, param):
    r = httpx.post(f"{api_server.base_url}/files", data=fields, files=files or {"other": ("x", b"1")}, headers=api_server.headers())
    assert r.status_code == 400
    spec.validate("ErrorResponse", r.json())
    assert r.json()["error"]["message"].startswith(message)
    assert (r.json()["error"]["param"], r.json()["error"]["type"]) == (param, "invalid_request_error")


def test_not_multipart_and_malformed_multipart(api_server):
    r = httpx.post(f"{api_server.base_url}/files", json={"purpose": "fine-tune"}, headers=api_server.headers())
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]["message"]
    r = httpx.post(
        f"{api_server.base_url}/files",
        content=b"--xyz\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--xyz\r\ngarbage",
        headers={**api_server.headers(), "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("The multipart body could not be parsed")


def test_expires_after_sets_expires_at(openai_client, spec):
    f = openai_client.files.create(
        file=("e.jsonl", GOOD), purpose="fine-tune", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    spec.validate("OpenAIFile", f.model_dump(exclude_unset=True))
    assert f.expires_at - f.created_at in (3600, 3601)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("small-limits")
    env = {"TUNERY_MAX_FILE_BYTES": "2000", "TUNERY_MAX_UPLOAD_BYTES": "5000"}
    key = create_key(home, **env)
    server = ServerProcess(home, env=env, args=("--no-worker",)).start()
    yield server, key
    server.stop()


def test_oversized_file_is_refused_and_nothing_is_kept(small_server, spec):
    server, key = small_server
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("big.jsonl", b"x" * 5000), purpose="fine-tune")
    body = err.value.response.json()
    spec.validate("ErrorResponse", body)
    assert body["error"]["code"] == "file_too_large" and body["error"]["param"] == "file"
    assert "the limit is 1.95 KB" in body["error"]["message"]

    # No Content-Length (chunked): the limit is enforced while the body streams in.
    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        for _ in range(10):
            yield b"y" * 1000
        yield b"\r\n--b--\r\n"

    r = httpx.post(f"{server.base_url}/files", content=chunks(),
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "file_too_large"
    assert client.files.list().data == []
    assert list((server.home / "data" / "files").iterdir()) == []
    ok = client.files.create(file=("ok.jsonl", jsonl(chat_examples(2))), purpose="fine-tune")
    assert ok.status == "processed"


def test_legacy_client_uploads_waits_lists_and_downloads(legacy, api_server, tmp_path):
    path = tmp_path / "legacy.jsonl"
    path.write_bytes(jsonl([{"prompt": f"q{i} ->", "completion": f" a{i}\n"} for i in range(10)]))
    out = legacy.run(f"""
        import json
        f = openai.File.create(file=open({str(path)!r}, "rb"), purpose="fine-tune")
        assert f.status == "processed", f
        done = openai.File.wait_for_processing(f.id)  # polls `status`; returns it
        listed = [x.id for x in openai.File.list().data]
        content = openai.File.download(f.id)
        try:
            openai.File.retrieve("file-nope")
        except openai.error.InvalidRequestError as e:
            missing = [e.http_status, e.param, str(e)]
        print(json.dumps({{"id": f.id, "status": done, "listed": f.id in listed, "bytes": len(content), "missing": missing}}))
    """)
    got = json.loads(out.strip().splitlines()[-1])
    assert (got["status"], got["listed"], got["bytes"]) == ("processed", True, path.stat().st_size)
    assert got["missing"] == [404, "file_id", "No such File: file-nope"]


def test_legacy_client_sees_a_broken_legacy_file_as_error(legacy, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(jsonl(LEGACY_ROWS[:3] + [{"prompt": "q ->"}] + LEGACY_ROWS[3:]))
    out = legacy.run(f"""
        import json
        f = openai.File.create(file=open({str(path)!r}, "rb"), purpose="fine-tune")
        done = openai.File.wait_for_processing(f.id)
        got = openai.File.retrieve(f.id)
        print(json.dumps({{"created": f.status, "done": done, "details": got.status_details}}))
    """)
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"created": "error", "done": "error", "details": f"Invalid file format. Line 4, completion: {NO_COMPLETION}"}


def test_checks_left_unfinished_resume_when_the_app_starts(tmp_path):
    """A server stopped between upload and check: the next start checks the file."""
    from fastapi.testclient import TestClient

    from tunery.api.app import create_app
    from tunery.store import files as repo
    from tunery.store.context import open_store
    from tunery.store.keys import create_key as make_key
    from tunery.store.keys import project_for_key
    from tunery.store.settings import load_settings

    settings = load_settings(tmp_path)
    store = open_store(settings)
    with store.db.session_scope() as s:
        key = make_key(s)
        project = project_for_key(s, key)
        for fid, data in (("file-good", GOOD), ("file-bad", b'{"prompt": 1, "completion": "x"}\n')):
            store.blobs.write_bytes(repo.blob_key(fid), data)
            repo.add_file(s, project.id, fid, f"{fid}.jsonl", "fine-tune", len(data))
    store.close()
    with TestClient(create_app(settings, worker=False)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = {f: client.get(f"/v1/files/{f}", headers=headers).json()["status"] for f in ("file-good", "file-bad")}
            if "uploaded" not in status.values():
                break
            time.sleep(0.05)
        assert status == {"file-good": "processed", "file-bad": "error"}
        assert client.get("/v1/files/file-bad", headers=headers).json()["status_details"] == "Invalid file format. Line 1, prompt: `prompt` must be a string, not int"
