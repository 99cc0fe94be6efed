"""Check a job request and store it (`validating_files`); shared by the current and legacy APIs.

Bad parameters raise `JobParamError` (the API answers 400 with `param` naming the field). The
content of the files is checked later, off the request path, by the worker (`validate.py`): as
at OpenAI, a file with 3 examples makes a job that fails with `invalid_n_examples`.

Tunery extension: `max_steps` (an integer >= 1) is accepted beside OpenAI's hyperparameters to cap
a run (quick checks, tests); it is passed to the trainer, which schedules the run for it.

A project may have at most `max_active_jobs` unfinished jobs (any status but succeeded, failed or
cancelled; paused jobs count, they resume): one more is `JobParamError` with status 429 and code
`insufficient_quota`.
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tunery.jobs import queue, states
from tunery.store import catalog
from tunery.store import files as files_repo
from tunery.store.db import now
from tunery.store.jobs import Job
from tunery.store.settings import Settings, load_settings

MAX_SEED = 2_147_483_647
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
METHOD_TYPES = ("supervised", "dpo", "reinforcement")
SUPPORTED_METHODS = ("supervised", "dpo")
# name: (integer?, low, high); numbers are "auto" or within the bounds of OpenAI's API.
HYPERPARAMETERS = {
    "n_epochs": (True, 1, 50),
    "batch_size": (True, 1, 256),
    "learning_rate_multiplier": (False, 0, None),
    "max_steps": (True, 1, None),  # Tunery extension
}
# Those of one method on top of the shared ones: DPO's beta, 0 < beta <= 2 (OpenAI's bounds).
METHOD_HYPERPARAMETERS = {"dpo": {"beta": (False, 0, 2)}}
LEGACY_HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier", "prompt_loss_weight")


class JobParamError(Exception):
    def __init__(self, message: str, param: str | None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def _number(value: Any, name: str, param: str, integer: bool, low: float, high: float | None) -> int | float:
    kind = "an integer" if integer else "a number"
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and float(value) != int(value))
    if bad:
        raise JobParamError(f"Invalid value for '{param}': expected 'auto' or {kind}, got {value!r}.", param, "invalid_hyperparameters")
    if integer:
        value = int(value)
    if value < low or (not integer and value <= low) or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else (f"at least {low}" if integer else f"greater than {low}")
        raise JobParamError(f"Invalid value for '{param}': {name} must be {bound}, got {value!r}.", param, "invalid_hyperparameters")
    return value


def check_hyperparameters(given: Any, prefix: str, kind: str = "supervised") -> dict[str, Any]:
    """OpenAI's hyperparameters of method `kind` (+ max_steps): each "auto" or a number within bounds."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise JobParamError(f"Invalid value for '{prefix}': expected an object.", prefix)
    known = {**HYPERPARAMETERS, **METHOD_HYPERPARAMETERS.get(kind, {})}
    out: dict[str, Any] = {}
    for name, value in given.items():
        param = f"{prefix}.{name}"
        if name not in known:
            raise JobParamError(f"Unknown hyperparameter '{name}'; expected one of {', '.join(known)}.", param)
        if value is None or value == "auto":
            if name != "max_steps":
                out[name] = "auto"
            continue
        out[name] = _number(value, name, param, *known[name])
    return out


def check_method(method: Any, hyperparameters: Any) -> tuple[dict, dict]:
    """(method object as stored, requested hyperparameters), from `method` or the deprecated
    top-level `hyperparameters`."""
    top = check_hyperparameters(hyperparameters, "hyperparameters")
    if method is None:
        hp = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto", **top}
        return {"type": "supervised", "supervised": {"hyperparameters": hp}}, hp
    if not isinstance(method, dict):
        raise JobParamError("Invalid value for 'method': expected an object.", "method")
    kind = method.get("type")
    if kind not in METHOD_TYPES:
        raise JobParamError(f"Invalid value for 'method.type': expected one of {', '.join(METHOD_TYPES)}, got {kind!r}.", "method.type")
    if kind not in SUPPORTED_METHODS:
        raise JobParamError(f"Fine-tuning method '{kind}' is not supported by this server yet; use {' or '.join(repr(m) for m in SUPPORTED_METHODS)}.", "method.type",
                            "unsupported_method")
    body = method.get(kind) or {}
    if not isinstance(body, dict):
        raise JobParamError(f"Invalid value for 'method.{kind}': expected an object.", f"method.{kind}")
    given = check_hyperparameters(body.get("hyperparameters"), f"method.{kind}.hyperparameters", kind)
    if top and given and top != given:
        raise JobParamError("Give hyperparameters either in 'method' or in the deprecated top-level 'hyperparameters', not both.",
                            "hyperparameters")
    # Echoed as OpenAI does: every hyperparameter of the method, "auto" where not given.
    hp = {**dict.fromkeys(METHOD_HYPERPARAMETERS.get(kind, {}), "auto"), "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto", **top, **given}
    return {"type": kind, kind: {"hyperparameters": hp}}, hp


def check_suffix(suffix: Any, legacy: bool = False) -> str | None:
    """The naming rules of `tunery.models.naming` (letters, digits, '-', '_'; <= 64, legacy <= 40)."""
    from tunery.models.naming import validate_suffix

    if suffix is None:
        return None
    if not isinstance(suffix, str):
        raise JobParamError("Invalid value for 'suffix': expected a string.", "suffix")
    try:
        return validate_suffix(suffix, legacy=legacy) or None
    except ValueError as exc:
        raise JobParamError(f"Invalid value for 'suffix': {exc}.", "suffix") from None


def check_seed(seed: Any) -> int:
    if seed is None:
        return random.randint(0, MAX_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise JobParamError(f"Invalid value for 'seed': expected an integer between 0 and {MAX_SEED}, got {seed!r}.", "seed")
    return seed


def check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise JobParamError("Invalid value for 'metadata': expected an object of string keys and values.", "metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise JobParamError(f"Invalid value for 'metadata': at most {MAX_METADATA_PAIRS} pairs, got {len(metadata)}.", "metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise JobParamError(f"Invalid metadata key {key[:20]!r}…: keys can be at most {MAX_METADATA_KEY} characters.", f"metadata.{key}")
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE:
            raise JobParamError(f"Invalid value for 'metadata.{key}': expected a string of at most {MAX_METADATA_VALUE} characters.",
                                f"metadata.{key}")
    return dict(metadata)


def check_model(session: Session, project_id: str, model: Any, settings: Settings | None = None) -> str:
    """`model` if it names what the project may fine-tune (`tunery.store.catalog`'s remote rules): a
    base model the operator offers, or a fine-tuned model or checkpoint of the project to continue
    from. Anything else, a path or another project's model included, is the same 404."""
    if not isinstance(model, str) or not model.strip():
        raise JobParamError("Missing required parameter: 'model'.", "model")
    try:
        catalog.resolve(session, settings or load_settings(), project_id, model)
    except catalog.ModelNotAvailable as exc:
        raise JobParamError(str(exc), "model", "model_not_found", status=404) from None
    except catalog.ModelUnusable as exc:
        raise JobParamError(str(exc), "model", "model_unavailable", status=500) from None
    if not catalog.is_fine_tuned_name(model) and (":" in model or any(c.isspace() for c in model)):
        # a base model's name becomes a part of `ft:{base}:{org}:…`
        raise JobParamError(f"The model name '{model}' cannot contain ':' or spaces; add an alias for it "
                            "($TUNERY_MODEL_ALIASES) or register it under another name (`tunery models add`).", "model",
                            "invalid_model_name")
    return model


def check_file(session: Session, project_id: str, fid: Any, param: str) -> str:
    if not isinstance(fid, str) or not fid:
        raise JobParamError(f"Missing required parameter: '{param}'.", param)
    record = files_repo.get_file(session, project_id, fid)
    if record is None:
        raise JobParamError(f"invalid {param}: {fid}", param, "file_not_found")
    if record.purpose != "fine-tune":
        raise JobParamError(f"File {fid} has purpose '{record.purpose}', but {param} needs a file with purpose 'fine-tune'.",
                            param, "invalid_file_purpose")
    return fid


def check_active_jobs(session: Session, project_id: str, limit: int) -> None:
    if limit <= 0:
        return
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.project_id == project_id, Job.status.not_in(states.TERMINAL))
    )
    if active >= limit:
        raise JobParamError(f"This project already has {active} unfinished fine-tuning jobs, the most it may have "
                            f"(max_active_jobs = {limit}). Wait for one to finish or cancel one.", None, "insufficient_quota", 429)


def create_job(
    session: Session,
    project_id: str,
    *,
    model: Any,
    settings: Settings | None = None,
    training_file: Any,
    validation_file: Any = None,
    suffix: Any = None,
    seed: Any = None,
    metadata: Any = None,
    method: Any = None,
    hyperparameters: Any = None,
    legacy: bool = False,
    options: dict | None = None,
    max_active_jobs: int = 0,
) -> Job:
    """Check every parameter (first bad one raises `JobParamError`) and the project's quota of
    unfinished jobs (0: none), then store the job. `settings`: the server's (which models it
    offers); default `load_settings()`."""
    model = check_model(session, project_id, model, settings)
    training_file = check_file(session, project_id, training_file, "training_file")
    if validation_file is not None:
        validation_file = check_file(session, project_id, validation_file, "validation_file")
    suffix = check_suffix(suffix, legacy)
    seed = check_seed(seed)
    metadata = check_metadata(metadata)
    method, hp = check_method(method, hyperparameters)
    options = dict(options or {})
    if "max_steps" in hp:
        options["max_steps"] = hp["max_steps"]
    check_active_jobs(session, project_id, max_active_jobs)
    job = Job(
        id=queue.new_job_id(legacy),
        project_id=project_id,
        legacy=legacy,
        model=model,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        metadata_=metadata,
        method=method,
        hyperparameters=hp,
        options=options,
        status=states.VALIDATING_FILES,
        result_files=[],
        created_at=now(),
        updated_at=now(),
    )
    session.add(job)
    session.flush()
    queue.add_event(session, job.id, f"Created fine-tuning job: {job.id}")
    queue.add_event(session, job.id, f"Validating training file: {training_file}"
                    + (f" and validation file: {validation_file}" if validation_file else ""))
    return job
