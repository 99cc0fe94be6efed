"""Where Tunery keeps its things and how the server listens.

Precedence, highest first: explicit overrides (CLI flags) > environment variables >
`$TUNERY_HOME/config.toml` > defaults. The config file is optional; its top-level keys mirror the
fields below (`database_url`, `data_dir`, `host`, `port`, `max_upload_bytes`, `max_file_bytes`, and
the request limits and quotas of `LIMITS`) and any other table (e.g. `[worker]`) is kept verbatim in `Settings.extra` for the module that owns it.

Environment: TUNERY_HOME (default ~/.tunery), TUNERY_DATABASE_URL (default a SQLite file in the
home), TUNERY_DATA_DIR (default $TUNERY_HOME/data), TUNERY_HOST, TUNERY_PORT,
TUNERY_MAX_UPLOAD_BYTES (Uploads API total, default 8 GB), TUNERY_MAX_FILE_BYTES (one
`POST /files`, default 512 MB), TUNERY_MAX_EVAL_BYTES (the example lines one evaluation may hold
in memory, default 64 MB), and `TUNERY_<NAME>` for each limit in `LIMITS`.

Limits a remote client must not control (each answered in OpenAI's error envelope; 0 turns a
quota or the rate limit off): the size of a JSON body, the shape of a multipart form, the tokens
generated when a request names no `max_tokens`, a generation's wall-clock deadline, and per
project the bytes of stored files, the unfinished jobs and the request rate.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

GB = 1024**3
MB = 1024**2

_ENV = {
    "database_url": "TUNERY_DATABASE_URL",
    "data_dir": "TUNERY_DATA_DIR",
    "host": "TUNERY_HOST",
    "port": "TUNERY_PORT",
    "max_upload_bytes": "TUNERY_MAX_UPLOAD_BYTES",
    "max_file_bytes": "TUNERY_MAX_FILE_BYTES",
    "max_eval_bytes": "TUNERY_MAX_EVAL_BYTES",
}

# -- Model names (`tunery.store.catalog`): which local model an OpenAI model name means. --------
# The pattern is a regular expression matched against the whole name (default: every OpenAI chat or
# completion model name, `tunery.models.aliases.DEFAULT_OPENAI_PATTERN`; "off" turns the rule off);
# the target is a model spec, alias or registered name ("default": the packaged model).
_ENV.update({
    "openai_models_pattern": "TUNERY_OPENAI_MODELS_PATTERN",
    "openai_models_target": "TUNERY_OPENAI_MODELS_TARGET",
})
# name: default. Why these defaults: README, Configuration.
LIMITS: dict[str, int | float] = {
    "max_request_bytes": 16 * MB,  # a JSON body (multipart uploads have their own limits above)
    "max_form_parts": 16,  # parts of one multipart form (POST /files sends 2 to 4)
    "max_form_header_bytes": 4096,  # the headers of one part of a multipart form
    "default_max_tokens": 2048,  # generated when a request gives no max_tokens (OpenAI: the context)
    "max_generation_seconds": 300.0,  # then the generation ends with finish_reason "length"
    "max_project_bytes": 100 * GB,  # stored files per project (OpenAI's per-organization figure)
    "max_active_jobs": 50,  # unfinished jobs per project (validating, queued, running, paused)
    "rate_limit_per_minute": 3000,  # requests per project, refilled continuously
    "rate_limit_burst": 500,  # requests a project may make at once
}
_ENV.update({name: f"TUNERY_{name.upper()}" for name in LIMITS})


# Limits that cannot be switched off (0 would refuse every request); the quotas and the rate can.
_POSITIVE = ("max_request_bytes", "max_form_parts", "max_form_header_bytes", "default_max_tokens", "max_generation_seconds",
             "rate_limit_burst")


class SettingsError(ValueError):
    """A bad value in the environment or the config file (the message names where)."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_bytes: int = 8 * GB
    max_file_bytes: int = 512 * MB
    max_eval_bytes: int = 64 * MB
    # -- model names (see the block above `_ENV.update`) --
    openai_models_pattern: str | None = None  # None: the default pattern; "": the rule is off
    openai_models_target: str = "default"
    max_request_bytes: int = int(LIMITS["max_request_bytes"])
    max_form_parts: int = int(LIMITS["max_form_parts"])
    max_form_header_bytes: int = int(LIMITS["max_form_header_bytes"])
    default_max_tokens: int = int(LIMITS["default_max_tokens"])
    max_generation_seconds: float = float(LIMITS["max_generation_seconds"])
    max_project_bytes: int = int(LIMITS["max_project_bytes"])
    max_active_jobs: int = int(LIMITS["max_active_jobs"])
    rate_limit_per_minute: int = int(LIMITS["rate_limit_per_minute"])
    rate_limit_burst: int = int(LIMITS["rate_limit_burst"])
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"

    @property
    def models_file(self) -> Path:
        """Base models registered by `tunery models add` (`tunery.models.registered`)."""
        return self.home / "models.json"


def default_home() -> Path:
    return Path(os.environ.get("TUNERY_HOME") or Path.home() / ".tunery").expanduser()


def load_settings(home: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings for `home` (default: TUNERY_HOME or ~/.tunery); `overrides` win."""
    home = Path(home).expanduser() if home is not None else default_home()
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    config = home / "config.toml"
    if config.is_file():
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config}: {exc}") from exc
        for key, value in data.items():
            (values if key in _ENV else extra)[key] = value
    for key, env in _ENV.items():
        if os.environ.get(env):
            values[key] = os.environ[env]
    values.update({k: v for k, v in overrides.items() if v is not None})

    def _int(key: str, default: int) -> int:
        raw = values.get(key, default)
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise SettingsError(f"{key} must be an integer, got {raw!r}") from None

    def _limit(key: str) -> int | float:
        default = LIMITS[key]
        raw = values.get(key, default)
        try:
            value = float(raw) if isinstance(default, float) else int(raw)
        except (TypeError, ValueError):
            kind = "a number" if isinstance(default, float) else "an integer"
            raise SettingsError(f"{key} must be {kind}, got {raw!r}") from None
        if value < 0 or (value == 0 and key in _POSITIVE):
            raise SettingsError(f"{key} must be {'positive' if key in _POSITIVE else 'at least 0'}, got {raw!r}")
        return value

    data_dir = Path(values.get("data_dir") or home / "data").expanduser()
    url = values.get("database_url") or f"sqlite:///{home / 'tunery.db'}"
    return Settings(
        home=home,
        database_url=str(url),
        data_dir=data_dir,
        host=str(values.get("host", "127.0.0.1")),
        port=_int("port", 8000),
        max_upload_bytes=_int("max_upload_bytes", 8 * GB),
        max_file_bytes=_int("max_file_bytes", 512 * MB),
        max_eval_bytes=_int("max_eval_bytes", 64 * MB),
        openai_models_pattern=_pattern(values.get("openai_models_pattern")),
        openai_models_target=str(values.get("openai_models_target") or "default").strip(),
        **{key: _limit(key) for key in LIMITS},
        extra=extra,
    )


def _pattern(raw: Any) -> str | None:
    """The OpenAI model name pattern: None (the default), "" (off), or a checked regular expression."""
    if raw is None:
        return None
    text = str(raw).strip()
    if text.lower() in ("", "off", "none"):
        return ""
    import re

    try:
        re.compile(text)
    except re.error as exc:
        raise SettingsError(f"openai_models_pattern is not a valid regular expression ({exc}): {text!r}") from None
    return text


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    known = {f.name for f in fields(Settings)}
    return replace(settings, **{k: v for k, v in changes.items() if k in known and v is not None})


def human_bytes(n: int) -> str:
    """1536 → "1.5 KB"; for messages about limits."""
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1024
    return f"{n} bytes"
