"""`/v1/uploads` through the real server: parts, ordered completion, md5, cancel, limits."""

import hashlib

import httpx
import openai
import pytest
from api_support import ServerProcess, chat_examples, create_key, jsonl

DATA = jsonl(chat_examples(40))


def new_upload(client, data=DATA, purpose="fine-tune"):
    return client.uploads.create(bytes=len(data), filename="train.jsonl", mime_type="text/jsonl", purpose=purpose)


def test_parts_completed_in_the_given_order_become_a_checked_file(openai_client, spec):
    up = new_upload(openai_client)
    spec.validate("Upload", up.model_dump(exclude_unset=True))
    assert (up.status, up.bytes, up.expires_at - up.created_at) == ("pending", len(DATA), 3600)
    third = len(DATA) // 3
    chunks = [DATA[:third], DATA[third : 2 * third], DATA[2 * third :]]
    parts = [openai_client.uploads.parts.create(up.id, data=c) for c in chunks]
    for p in parts:
        spec.validate("UploadPart", p.model_dump(exclude_unset=True))
        assert (p.object, p.upload_id) == ("upload.part", up.id) and p.id.startswith("part_")
    done = openai_client.uploads.complete(up.id, part_ids=[p.id for p in parts], md5=hashlib.md5(DATA).hexdigest())
    spec.validate("Upload", done.model_dump(exclude_unset=True))
    assert done.status == "completed"
    assert (done.file.filename, done.file.bytes, done.file.purpose, done.file.status) == ("train.jsonl", len(DATA), "fine-tune", "processed")
    assert openai_client.files.content(done.file.id).content == DATA
    with pytest.raises(openai.BadRequestError, match="is completed"):
        openai_client.uploads.parts.create(up.id, data=b"more")


def test_order_of_part_ids_decides_the_content(openai_client):
    data = b"AAAA" + b"BBBB"
    up = new_upload(openai_client, data, purpose="batch")
    a = openai_client.uploads.parts.create(up.id, data=b"AAAA")
    b = openai_client.uploads.parts.create(up.id, data=b"BBBB")
    done = openai_client.uploads.complete(up.id, part_ids=[b.id, a.id])
    assert openai_client.files.content(done.file.id).content == b"BBBBAAAA"


def test_sdk_chunked_upload_helper(openai_client, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(DATA)
    done = openai_client.uploads.upload_file_chunked(file=path, mime_type="text/jsonl", purpose="fine-tune", part_size=1000)
    assert done.status == "completed" and done.file.bytes == len(DATA)
    assert openai_client.files.content(done.file.id).content == DATA


def test_md5_mismatch_is_refused_and_the_upload_stays_pending(openai_client, spec):
    up = new_upload(openai_client)
    p = openai_client.uploads.parts.create(up.id, data=DATA)
    with pytest.raises(openai.BadRequestError) as err:
        openai_client.uploads.complete(up.id, part_ids=[p.id], md5="0" * 32)
    spec.validate("ErrorResponse", err.value.response.json())
    assert err.value.response.json()["error"]["code"] == "md5_mismatch"
    assert openai_client.uploads.complete(up.id, part_ids=[p.id]).status == "completed"


@pytest.mark.parametrize("case", ["unknown part", "duplicate part", "short", "too many bytes"])
def test_bad_completions_and_parts(openai_client, case):
    up = new_upload(openai_client)
    p = openai_client.uploads.parts.create(up.id, data=DATA[:100])
    with pytest.raises(openai.BadRequestError) as err:
        if case == "unknown part":
            openai_client.uploads.complete(up.id, part_ids=[p.id, "part_nope"])
        elif case == "duplicate part":
            openai_client.uploads.complete(up.id, part_ids=[p.id, p.id])
        elif case == "short":
            openai_client.uploads.complete(up.id, part_ids=[p.id])
        else:
            openai_client.uploads.parts.create(up.id, data=DATA)  # 100 + len(DATA) > declared
    body = err.value.response.json()["error"]
    expected = {
        "unknown part": f"No such part in Upload {up.id}: part_nope",
        "duplicate part": "part_ids lists a part more than once.",
        "short": f"The parts hold 100 bytes, but the Upload was created with bytes={len(DATA)}.",
        "too many bytes": f"The parts would exceed the {len(DATA) - 100} bytes left of the size declared when the Upload was created.",
    }[case]
    assert body["message"] == expected
    assert body["param"] == ("data" if case == "too many bytes" else "part_ids")


def test_cancel_then_nothing_more(openai_client, spec, api_server):
    up = new_upload(openai_client)
    openai_client.uploads.parts.create(up.id, data=DATA[:10])
    cancelled = openai_client.uploads.cancel(up.id)
    spec.validate("Upload", cancelled.model_dump(exclude_unset=True))
    assert cancelled.status == "cancelled" and cancelled.file is None
    assert not (api_server.home / "data" / "uploads" / up.id).exists()
    with pytest.raises(openai.BadRequestError, match=f"Upload {up.id} is cancelled"):
        openai_client.uploads.cancel(up.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.uploads.cancel("upload_nope")


def test_create_validation(api_server, spec):
    r = httpx.post(f"{api_server.base_url}/uploads", headers=api_server.headers(),
                   json={"filename": "a.jsonl", "purpose": "nonsense", "bytes": 3, "mime_type": "text/jsonl"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    spec.validate("ErrorResponse", r.json())
    r = httpx.post(f"{api_server.base_url}/uploads", content=b"{not json",
                   headers={**api_server.headers(), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    spec.validate("ErrorResponse", r.json())


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("upload-limits")
    env = {"TUNERY_MAX_UPLOAD_BYTES": "5000"}
    key = create_key(home, **env)
    server = ServerProcess(home, env=env, args=("--no-worker",)).start()
    yield openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    server.stop()


def test_total_size_limit(small_server, spec):
    with pytest.raises(openai.BadRequestError) as err:
        small_server.uploads.create(bytes=5001, filename="big.jsonl", mime_type="text/jsonl", purpose="fine-tune")
    body = err.value.response.json()
    spec.validate("ErrorResponse", body)
    assert body["error"] == {
        "message": "The upload is too large: 5001 bytes declared, the limit is 4.88 KB.",
        "type": "invalid_request_error",
        "param": "bytes",
        "code": "file_too_large",
    }
    ok = small_server.uploads.create(bytes=5000, filename="ok.jsonl", mime_type="text/jsonl", purpose="batch")
    assert ok.status == "pending"


def test_expired_upload_refuses_parts_and_its_parts_are_swept_on_start(tmp_path):
    from fastapi.testclient import TestClient

    from tunery.api.app import create_app
    from tunery.store import uploads
    from tunery.store.keys import create_key as make_key
    from tunery.store.settings import load_settings

    settings = load_settings(tmp_path)
    with TestClient(create_app(settings, worker=False)) as client:
        with client.app.state.store.db.session_scope() as s:
            headers = {"Authorization": f"Bearer {make_key(s)}"}
        up = client.post("/v1/uploads", headers=headers, json={"filename": "a", "purpose": "batch", "bytes": 8, "mime_type": "text/plain"}).json()
        client.post(f"/v1/uploads/{up['id']}/parts", headers=headers, files={"data": ("d", b"1234")})
        assert (tmp_path / "data" / "uploads" / up["id"]).is_dir()
        with client.app.state.store.db.session_scope() as s:
            s.get(uploads.Upload, up["id"]).expires_at -= uploads.UPLOAD_TTL
        r = client.post(f"/v1/uploads/{up['id']}/parts", headers=headers, files={"data": ("d", b"5678")})
        assert (r.status_code, r.json()["error"]["message"]) == (400, f"Upload {up['id']} is expired: it no longer accepts changes.")
        assert client.get("/v1/files", headers=headers).json()["data"] == []
    with TestClient(create_app(settings, worker=False)):
        assert not (tmp_path / "data" / "uploads" / up["id"]).exists()
