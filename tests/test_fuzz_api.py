"""Fuzzing the real server with schemathesis (a bounded, deterministic run of a few minutes).

1. Against the server's own `/openapi.json`: every operation, positive and negative data, every
   check schemathesis has: no 5xx, every status documented, every body valid against the
   documented schema, schema-violating input rejected, `Allow` on 405, auth enforced, deleted
   objects gone. Except:
   - `positive_data_acceptance`: a schema-valid request may still get a 400 for what a schema
     cannot say: the state of an object (an upload already cancelled, a job that is not paused),
     a configured limit (`max_upload_bytes`), a prompt longer than the model's context. OpenAI
     answers these 400 too.
   - `max_response_time`: generation on a shared 2-core CI runner has no meaningful bound.
2. Against OpenAI's spec (`../shared/reference/openai-openapi/openapi.json`), for the operations
   Tunery implements (the paths and methods both documents have): positive data only, checking
   that no answer is a 5xx and that every documented answer matches OpenAI's schema. The legacy
   `/v1/fine-tunes` against the April 2023 spec, the same way.

What keeps it bounded (and what is therefore not fuzzed):
- `tunery serve --no-worker`: a created job stays queued; no training starts. Training is not in
  the request path (the worker picks jobs up), and it has its own tests.
- `tests/fuzz_hooks.py` caps every token count the fuzzer may choose (`max_tokens`,
  `max_completion_tokens`, an eval run's `sampling_params.max_completion_tokens`), so a chat,
  completion or eval run that the fuzzer makes valid generates a few tokens only; a request without
  `max_tokens` gets the cap too (the server's default is tested with its setting).
- A fixed number of examples per operation and phase, a fixed seed, deterministic generation.
Real objects (files, a queued job, a legacy fine-tune, an upload) are
created first and their ids offered to the fuzzer, so it reaches past "not found"; the file the
fuzzer may delete is a spare one.

The figures of the run (operations, test cases, failures) are printed (`pytest -s`) and written
to `$TUNERY_FUZZ_REPORT_DIR` when set. Rerun: `pytest -s tests/test_fuzz_api.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from api_support import SPEC_DIR, Server, ServerProcess, chat_examples, create_key, jsonl

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
PACKAGED = "SmolLM2-135M-Instruct"
ALIAS = "gpt-4o-mini"  # an OpenAI name: maps to the default local model
SEED = 14
OWN_EXAMPLES = 12  # per operation and phase, against /openapi.json
OPENAI_EXAMPLES = 8
RUN_TIMEOUT_S = 900
# Every check schemathesis has but positive_data_acceptance and max_response_time (see above).
OWN_CHECKS = (
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection", "missing_required_header", "unsupported_method",
    "allow_header_conformance", "use_after_free", "ensure_resource_availability", "ignored_auth", "object_level_authorization",
)  # a bound on a hung run, far above its usual length

pytestmark = pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed: pip install -e '.[dev]'")


def _upload(client: httpx.Client, name: str, records: list[dict]) -> str:
    r = client.post("/files", files={"file": (name, jsonl(records))}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A server of its own (no worker) with one object of each kind; `ids` names them."""
    home = tmp_path_factory.mktemp("fuzz-home")
    key = create_key(home)
    process = ServerProcess(home, args=("--no-worker",)).start()
    server = Server(process, key)
    try:
        with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=120) as c:
            legacy_records = [{"prompt": f"Review {i}: great ->", "completion": " positive\n"} for i in range(10)]
            ids = {
                "files": [_upload(c, "train.jsonl", chat_examples(10)), _upload(c, "legacy.jsonl", legacy_records)],
                "spare": [_upload(c, "spare.jsonl", chat_examples(10))],
            }
            job = c.post("/fine_tuning/jobs", json={"model": ALIAS, "training_file": ids["files"][0]})
            legacy = c.post("/fine-tunes", json={"model": "curie", "training_file": ids["files"][1]})
            upload = c.post("/uploads", json={"filename": "a.jsonl", "purpose": "fine-tune", "bytes": 64, "mime_type": "text/jsonl"})
            for r in (job, legacy, upload):
                assert r.status_code == 200, r.text
            ids.update(jobs=[job.json()["id"]], fine_tunes=[legacy.json()["id"]], uploads=[upload.json()["id"]],
                       models=[PACKAGED, ALIAS])
        yield server, ids
    finally:
        process.stop()
        assert "Traceback" not in process.output(), process.output()[-4000:]


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # str, int, float, bool: JSON's spelling is TOML's


def config(ids: dict, *, mode: str, examples: int, prefix: str = "/v1") -> str:
    """A schemathesis.toml: the run's settings and where the fuzzer may use the real ids."""
    bindings = {
        "body.model": ("models", 0.7), "path.model": ("models", 0.5),
        "body.training_file": ("files", 0.7), "body.validation_file": ("files", 0.3), "path.file_id": ("files", 0.7),
        "path.fine_tuning_job_id": ("jobs", 0.7), "path.fine_tune_id": ("fine_tunes", 0.7),
        "path.upload_id": ("uploads", 0.7),
    }
    lines = [
        f"hooks = {_toml(str(HOOKS))}",
        f"seed = {SEED}",
        "workers = 1",
        "request-timeout = 120",
        "[generation]",
        f"mode = {_toml(mode)}",
        "deterministic = true",
        f"max-examples = {examples}",
    ]
    lines.append("[parameters]")
    lines += [f"{_toml(k)} = {_toml({'dictionary': d, 'probability': p})}" for k, (d, p) in bindings.items()]
    for name, values in ids.items():
        lines += [f"[dictionaries.{name}]", f"values = {_toml(values)}"]
    # The file the fuzzer may delete is the spare one, so the others stay for the rest of the run.
    lines += ["[[operations]]", f'include-name = "DELETE {prefix}/files/{{file_id}}"',
              f"parameters = {_toml({'path.file_id': {'dictionary': 'spare', 'probability': 0.7}})}"]
    return "\n".join(lines) + "\n"


def run_schemathesis(server: Server, location: str, tmp: Path, name: str, toml: str, *args: str) -> dict:
    """`schemathesis run`; returns its JSON report (asserting the run completed)."""
    reports = Path(os.environ.get("TUNERY_FUZZ_REPORT_DIR", tmp / "reports"))
    reports.mkdir(parents=True, exist_ok=True)
    (tmp / f"{name}.toml").write_text(toml)
    report = reports / f"{name}.json"
    cmd = [str(SCHEMATHESIS), "--config-file", str(tmp / f"{name}.toml"), "run", location,
           "-H", f"Authorization: Bearer {server.key}", "--no-color", "--output-sanitize", "false",
           "--report", "json", "--report-json-path", str(report), *args]
    if "TUNERY_FUZZ_REPORT_DIR" in os.environ:  # every request and answer too, for a closer look
        cmd += ["--report", "har", "--report-har-path", str(reports / f"{name}.har")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp)
    (reports / f"{name}.txt").write_text(proc.stdout + proc.stderr)
    assert report.exists(), proc.stdout[-6000:] + proc.stderr[-3000:]
    result = json.loads(report.read_text())
    result["output"] = proc.stdout
    print(f"\n[{name}] {figures(result)}")
    assert result["complete"] and result["operations"]["errored"] == 0, proc.stdout[-6000:]
    return result


def figures(result: dict) -> str:
    ops, cases = result["operations"], result["test_cases"]
    failures = sum(f["count"] for f in result["failures"])
    return (f"operations {ops['tested']}/{ops['selected']}, test cases {cases['generated']}, failing cases "
            f"{cases['with_failures']}, failures {failures}, errors {len(result['errors'])}, {result['running_time']:.0f}s")


def failures_of(result: dict) -> str:
    out = result["output"]
    start = out.find("= FAILURES =")
    return out[start if start >= 0 else -8000:][:20000]


def test_server_answers_as_its_own_openapi_document(fuzzed, tmp_path):
    server, ids = fuzzed
    toml = config(ids, mode="all", examples=OWN_EXAMPLES)
    result = run_schemathesis(server, f"{server.base_url.removesuffix('/v1')}/openapi.json", tmp_path, "own", toml,
                              "--checks", ",".join(OWN_CHECKS))
    assert result["operations"]["tested"] == len(json_paths(server)), result["operations"]
    assert result["test_cases"]["generated"] > 20 * result["operations"]["tested"]
    assert result["failures"] == [] and result["errors"] == [], failures_of(result)
    assert server.process.alive()


def json_paths(server: Server) -> list[tuple[str, str]]:
    doc = httpx.get(f"{server.base_url.removesuffix('/v1')}/openapi.json").json()
    return [(m, p) for p, methods in doc["paths"].items() for m in methods]


def implemented(server: Server, spec: dict, prefix: str = "/v1") -> list[str]:
    """Operations of `spec` that Tunery serves too (the same path below /v1 and method)."""
    ours = {(m, p.removeprefix(prefix)) for m, p in json_paths(server)}
    return [f"{m.upper()} {p}" for p, methods in spec["paths"].items() for m in methods if (m, p) in ours]


def _include(names: list[str]) -> list[str]:
    args = []
    for name in names:
        args += ["--include-name", name]
    return args


def _nullable(schema: dict) -> None:
    schema["type"] = [schema["type"], "null"]


def _schemas(spec: dict) -> dict:
    return spec["components"]["schemas"]


LISTS = ("ListFilesResponse", "EvalList", "EvalRunList", "EvalRunOutputItemList")
# The Evals operations whose error answers the spec documents as a bare `Error` object.
BARE_ERRORS = (("delete", "/evals/{eval_id}", "404"), ("delete", "/evals/{eval_id}/runs/{run_id}", "404"),
               ("post", "/evals/{eval_id}/runs", "400"))


def _error_schema(spec: dict, method: str, path: str, status: str) -> dict:
    return spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


# Where OpenAI's spec contradicts itself, so no server can conform: each amendment names the
# contradiction, checks it is still there (remove the amendment once OpenAI fixes it) and fixes it.
AMENDMENTS = {
    "openapi.json": [
        ("CreateFileRequest accepts purpose 'evals'; the file object's purpose enum omits it",
         lambda s: "evals" in _schemas(s)["CreateFileRequest"]["properties"]["purpose"]["enum"]
         and "evals" not in _schemas(s)["OpenAIFile"]["properties"]["purpose"]["enum"],
         lambda s: _schemas(s)["OpenAIFile"]["properties"]["purpose"]["enum"].append("evals")),
        ("an empty list has no first or last id, yet the file and eval lists require both as strings",
         lambda s: all({"first_id", "last_id"} <= set(_schemas(s)[n]["required"])
                       and _schemas(s)[n]["properties"]["first_id"]["type"] == "string" for n in LISTS),
         lambda s: [_nullable(_schemas(s)[n]["properties"][k]) for n in LISTS for k in ("first_id", "last_id")]),
        ("three Evals error answers are documented as a bare Error, every other error as the "
         "{'error': ...} envelope (ErrorResponse) that the SDK reads and OpenAI sends",
         lambda s: all(_error_schema(s, *where) == {"$ref": "#/components/schemas/Error"} for where in BARE_ERRORS),
         lambda s: [_error_schema(s, *where).update({"$ref": "#/components/schemas/ErrorResponse"}) for where in BARE_ERRORS]),
        ("EvalRun requires `error` as an EvalApiError object, yet the spec's own examples of runs that did not "
         "fail show `\"error\": null`",
         lambda s: "error" in _schemas(s)["EvalRun"]["required"]
         and _schemas(s)["EvalRun"]["properties"]["error"] == {"$ref": "#/components/schemas/EvalApiError"},
         lambda s: _schemas(s)["EvalRun"]["properties"].update(error={"anyOf": [{"$ref": "#/components/schemas/EvalApiError"}, {"type": "null"}]})),
    ],
    "openapi-2023-04-legacy-fine-tunes.yaml": [],
}


def amended_spec(name: str, tmp: Path) -> Path:
    import yaml

    spec = yaml.safe_load((SPEC_DIR / name).read_text())  # JSON is YAML too
    for reason, still_there, fix in AMENDMENTS[name]:
        assert still_there(spec), f"OpenAI's spec no longer has this contradiction: drop the amendment: {reason}"
        fix(spec)
    out = tmp / f"amended-{Path(name).stem}.json"
    out.write_text(json.dumps(spec))
    return out


@pytest.mark.parametrize(
    "spec_name, selected",
    [
        ("openapi.json", lambda path: True),
        ("openapi-2023-04-legacy-fine-tunes.yaml", lambda path: path.startswith("/fine-tunes")),  # the rest is in the current spec
    ],
    ids=["current", "legacy-fine-tunes"],
)
def test_server_answers_as_openais_spec_documents(fuzzed, tmp_path, spec_name, selected):
    server, ids = fuzzed
    spec_path = amended_spec(spec_name, tmp_path)
    names = [n for n in implemented(server, json.loads(spec_path.read_text())) if selected(n.split(" ", 1)[1])]
    expected = 5 if spec_name.endswith(".yaml") else 36  # fine-tunes 5 | files 5, uploads 4, models 3, jobs 8, chat, completions, evals 12, graders 2
    assert len(names) == expected, names
    toml = config(ids, mode="positive", examples=OPENAI_EXAMPLES, prefix="")
    result = run_schemathesis(server, str(spec_path), tmp_path, f"openai-{Path(spec_name).stem}", toml, "--url", server.base_url,
                              "--checks", "not_a_server_error,response_schema_conformance", *_include(names))
    assert result["operations"]["tested"] == len(names), result["operations"]
    assert result["failures"] == [] and result["errors"] == [], failures_of(result)
    assert server.process.alive()
