"""`tunery files …` / `tunery models …` as a user runs them, against the real server."""

import json
import subprocess

from api_support import TUNERY, chat_examples, free_port, jsonl


def tunery(api_server, *args, key=None, base_url=None):
    env = {"PATH": "/usr/bin:/bin", "TUNERY_BASE_URL": base_url or api_server.base_url, "TUNERY_API_KEY": key or api_server.key}
    return subprocess.run([TUNERY, *args], env=env, capture_output=True, text=True, timeout=120)


def test_files_round_trip(api_server, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(chat_examples(10)))
    created = tunery(api_server, "files", "create", str(path))
    assert created.returncode == 0, created.stderr
    f = json.loads(created.stdout)
    assert (f["filename"], f["status"], f["bytes"]) == ("train.jsonl", "processed", path.stat().st_size)
    assert json.loads(tunery(api_server, "files", "get", f["id"]).stdout)["id"] == f["id"]
    assert f["id"] in tunery(api_server, "files", "list").stdout
    listed = json.loads(tunery(api_server, "files", "list", "--json", "--purpose", "fine-tune").stdout)
    assert f["id"] in [x["id"] for x in listed["data"]]
    assert tunery(api_server, "files", "content", f["id"]).stdout.encode() == path.read_bytes()
    out = tmp_path / "copy.jsonl"
    assert tunery(api_server, "files", "content", f["id"], "-o", str(out)).returncode == 0
    assert out.read_bytes() == path.read_bytes()
    assert json.loads(tunery(api_server, "files", "delete", f["id"]).stdout) == {"id": f["id"], "object": "file", "deleted": True}
    gone = tunery(api_server, "files", "get", f["id"])
    assert (gone.returncode, gone.stderr) == (1, f"error: No such File: {f['id']} (param: file_id) [HTTP 404]\n")


def test_files_create_in_parts_through_uploads(api_server, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(jsonl(chat_examples(50)))
    created = tunery(api_server, "files", "create", str(path), "--parts")
    assert created.returncode == 0, created.stderr
    f = json.loads(created.stdout)
    assert (f["status"], f["bytes"]) == ("processed", path.stat().st_size)
    assert tunery(api_server, "files", "content", f["id"]).stdout.encode() == path.read_bytes()


def test_bad_file_exits_1_naming_the_line(api_server, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    r = tunery(api_server, "files", "create", str(path))
    assert r.returncode == 1
    assert r.stderr.strip().endswith("Invalid file format. Line 2, completion: the example has no `completion`: nothing to train on (`tunery prepare` removes such rows)")
    assert json.loads(r.stdout)["status"] == "error"
    missing = tunery(api_server, "files", "create", str(tmp_path / "nope.jsonl"))
    assert (missing.returncode, missing.stderr.strip()) == (2, f"error: {tmp_path / 'nope.jsonl'}: no such file")


def test_models_commands(api_server):
    listed = json.loads(tunery(api_server, "models", "list", "--json").stdout)
    assert "curie" in [m["id"] for m in listed["data"]]
    assert json.loads(tunery(api_server, "models", "get", "curie").stdout)["id"] == "curie"
    r = tunery(api_server, "models", "delete", "curie")
    assert r.returncode == 1 and "[HTTP 403]" in r.stderr


def test_auth_and_connection_errors_are_one_line(api_server):
    r = tunery(api_server, "files", "list", key="sk-wrong")
    assert (r.returncode, r.stderr.count("\n"), "[HTTP 401]" in r.stderr) == (1, 1, True)
    down = tunery(api_server, "files", "list", base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert down.returncode == 1 and "is `tunery serve` running?" in down.stderr and "Traceback" not in down.stderr
