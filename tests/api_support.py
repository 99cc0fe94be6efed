"""Integration helpers: the real `tunery serve` in a subprocess, SDK clients, the spec validator
and the legacy (`openai==0.28.1`) runner.

Fixtures (re-exported by `tests/conftest.py`):
- `api_server` (session): a server on a free port with a temp TUNERY_HOME; `.base_url`, `.key`.
- `openai_client`: `openai.OpenAI` on `api_server`.
- `spec`: `Spec` — `spec.validate("OpenAIFile", obj)` against the current spec,
  `spec.validate_legacy("FineTune", obj)` against the April 2023 one.
- `legacy`: `LegacyRunner` — `legacy.run(code)` runs a snippet with `.venv-legacy/bin/python`
  where `openai` is already pointed at `api_server`; returns its stdout, fails on a non-zero exit.
For a private server (restarts, other settings): `ServerProcess(home, env=...).start()`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUNERY = str(Path(sys.executable).with_name("tunery"))
LEGACY_PYTHON = ROOT / ".venv-legacy" / "bin" / "python"
SPEC_DIR = Path(os.environ.get("TUNERY_OPENAPI_DIR", ROOT.parent / "shared" / "reference" / "openai-openapi"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNERY_")}
    env.update(TUNERY_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    if "TUNERY_CACHE" in os.environ:  # share the converted packaged model
        env["TUNERY_CACHE"] = os.environ["TUNERY_CACHE"]
    return env


def create_key(home: Path, project: str = "default", **env: str) -> str:
    out = subprocess.run(
        [TUNERY, "keys", "create", "--project", project],
        env=server_env(home, **env),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


class ServerProcess:
    """`tunery serve` on a free port; `start()` waits until it answers, `stop()` sends SIGTERM."""

    def __init__(self, home: Path, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None, port: int | None = None):
        self.home = Path(home)
        self.port = port or free_port()
        self.args = args
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log = self.home / f"server-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [TUNERY, "serve", "--port", str(self.port), "--log-level", "warning", *self.args],
            env=server_env(self.home, **self.env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tunery serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                httpx.get(f"{self.base_url}/models", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tunery serve did not answer within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None


@dataclass
class Server:
    process: ServerProcess
    key: str

    @property
    def base_url(self) -> str:
        return self.process.base_url

    @property
    def home(self) -> Path:
        return self.process.home

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def new_key(self, project: str) -> str:
        return create_key(self.home, project)


def _nullable_to_anyof(node):
    """OpenAPI 3.0's `nullable: true` → JSON Schema's `anyOf [..., null]` (the spec mixes both)."""
    if isinstance(node, dict):
        node = {k: _nullable_to_anyof(v) for k, v in node.items()}
        if node.get("exclusiveMinimum") is True and "minimum" in node:  # OpenAPI 3.0's boolean form
            node["exclusiveMinimum"] = node.pop("minimum")
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_to_anyof(v) for v in node]
    return node


class Spec:
    """Validates JSON against a schema of OpenAI's spec, `$ref`s resolved with `referencing`."""

    def __init__(self, current: Path = SPEC_DIR / "openapi.json", legacy: Path = SPEC_DIR / "openapi-2023-04-legacy-fine-tunes.yaml"):
        self.current_path, self.legacy_path = current, legacy

    @cached_property
    def _registry(self):
        import yaml
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        current = _nullable_to_anyof(json.loads(self.current_path.read_text()))
        legacy = _nullable_to_anyof(yaml.safe_load(self.legacy_path.read_text()))
        return Registry().with_resources(
            [
                ("urn:openai:current", Resource(current, specification=DRAFT202012)),
                ("urn:openai:legacy", Resource(legacy, specification=DRAFT202012)),
            ]
        )

    def _validate(self, uri: str, name: str, instance) -> None:
        from jsonschema import Draft202012Validator

        schema = {"$ref": f"{uri}#/components/schemas/{name}"}
        Draft202012Validator(schema, registry=self._registry).validate(instance)

    def validate(self, name: str, instance) -> None:
        self._validate("urn:openai:current", name, instance)

    def validate_legacy(self, name: str, instance) -> None:
        self._validate("urn:openai:legacy", name, instance)

    def schema_names(self) -> set[str]:
        return set(json.loads(self.current_path.read_text())["components"]["schemas"])


class LegacyRunner:
    """Runs snippets with openai==0.28.1 (its own venv: it conflicts with the current SDK)."""

    def __init__(self, base_url: str, key: str):
        self.base_url, self.key = base_url, key

    def run(self, code: str, *, key: str | None = None, check: bool = True, timeout: float = 300) -> str:
        prelude = f"import openai\nopenai.api_base = {self.base_url!r}\nopenai.api_key = {key or self.key!r}\n"
        proc = subprocess.run(
            [str(LEGACY_PYTHON), "-c", prelude + textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"legacy snippet failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def chat_examples(n: int = 10) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You classify reviews."},
                {"role": "user", "content": f"Review {i}: great product"},
                {"role": "assistant", "content": "positive"},
            ]
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def api_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("tunery-home")
    key = create_key(home)
    process = ServerProcess(home).start()
    try:
        yield Server(process, key)
    finally:
        process.stop()


@pytest.fixture
def openai_client(api_server):
    import openai

    return openai.OpenAI(base_url=api_server.base_url, api_key=api_server.key, max_retries=0)


@pytest.fixture(scope="session")
def spec():
    return Spec()


@pytest.fixture
def legacy(api_server):
    if not LEGACY_PYTHON.exists():
        pytest.skip("openai==0.28.1 is not installed: run `make setup` (it creates .venv-legacy)")
    return LegacyRunner(api_server.base_url, api_server.key)


def wait_for_job(client, job_id: str, timeout: float = 300):
    """The fine-tuning job once it has ended (succeeded, failed or cancelled), through the SDK."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")
