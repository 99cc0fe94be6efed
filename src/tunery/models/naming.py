"""Fine-tuned model names, as OpenAI writes them.

Current: `ft:{base}:{org}:{suffix}:{id}` (empty suffix -> `ft:base:org::id`; id = job id without
`ftjob-`), checkpoints append `:ckpt-step-N`. Legacy /v1/fine-tunes: `{base}:ft-{org}-{timestamp}`
or `{base}:ft-{org}:{suffix}-{timestamp}`, timestamp `YYYY-MM-DD-HH-MM-SS` (UTC).

Suffix rule chosen: letters, digits, `-` and `_` only (`:` would break parsing; OpenAI's docs
allow this set), at most 64 characters (40 for the legacy API).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

SUFFIX_MAX = 64
LEGACY_SUFFIX_MAX = 40
_SUFFIX_CHARS = re.compile(r"^[A-Za-z0-9_-]*$")
_CKPT = ":ckpt-step-"
_FT = re.compile(r"^ft:(?P<base>[^:]+):(?P<org>[^:]*):(?P<suffix>[^:]*):(?P<id>[^:]+)(?::ckpt-step-(?P<step>\d+))?$")
_LEGACY = re.compile(
    r"^(?P<base>[^:]+):ft-(?P<org>[^:]+?)(?::(?P<suffix>[^:]*))?-(?P<id>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})$"
)
_LEGACY_TIME = "%Y-%m-%d-%H-%M-%S"


@dataclass(frozen=True)
class ModelName:
    """The parts of a fine-tuned model name; `id` is the job id part (a timestamp for legacy names)."""

    base: str
    org: str
    suffix: str
    id: str
    step: int | None = None
    legacy: bool = False


def validate_suffix(suffix: str | None, *, legacy: bool = False) -> str:
    """Return the suffix ("" for None) or raise ValueError with a one-line reason."""
    suffix = suffix or ""
    limit = LEGACY_SUFFIX_MAX if legacy else SUFFIX_MAX
    if len(suffix) > limit:
        raise ValueError(f"suffix must be at most {limit} characters, got {len(suffix)}")
    if not _SUFFIX_CHARS.match(suffix):
        bad = next(c for c in suffix if not _SUFFIX_CHARS.match(c))
        raise ValueError(f"suffix may contain only letters, digits, '-' and '_'; got {bad!r} in {suffix!r}")
    return suffix


def _check_part(what: str, value: str) -> None:
    if not value or ":" in value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be non-empty with no ':' or spaces, got {value!r}")


def fine_tuned_model_name(base: str, org: str, suffix: str | None, job_id: str) -> str:
    """`ft:{base}:{org}:{suffix}:{id}` for a job, e.g. `ft:gpt-4o-mini:acme::abc123`."""
    job = job_id.removeprefix("ftjob-")
    for what, value in (("base model", base), ("organization", org), ("job id", job)):
        _check_part(what, value)
    return f"ft:{base}:{org}:{validate_suffix(suffix)}:{job}"


def checkpoint_model_name(name: str, step: int) -> str:
    """The model name of a checkpoint of the fine-tuned model `name`: `name:ckpt-step-N`."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}")
    parsed = parse_model_name(name)
    if parsed is None or parsed.legacy or parsed.step is not None:
        raise ValueError(f"not a fine-tuned model name (ft:base:org:suffix:id): {name!r}")
    return f"{name}{_CKPT}{step}"


def legacy_fine_tuned_model_name(base: str, org: str, suffix: str | None, created_at: int) -> str:
    """Legacy `/v1/fine-tunes` name, e.g. `curie:ft-acme:my-model-2021-03-03-21-44-20`."""
    _check_part("base model", base)
    _check_part("organization", org)
    suffix = validate_suffix(suffix, legacy=True)
    stamp = datetime.fromtimestamp(created_at, tz=timezone.utc).strftime(_LEGACY_TIME)
    return f"{base}:ft-{org}:{suffix}-{stamp}" if suffix else f"{base}:ft-{org}-{stamp}"


def parse_model_name(name: str) -> ModelName | None:
    """The parts of a current or legacy fine-tuned model name; None for any other name."""
    if match := _FT.match(name):
        step = match["step"]
        return ModelName(match["base"], match["org"], match["suffix"], match["id"], int(step) if step else None)
    if match := _LEGACY.match(name):
        return ModelName(match["base"], match["org"], match["suffix"] or "", match["id"], legacy=True)
    return None
