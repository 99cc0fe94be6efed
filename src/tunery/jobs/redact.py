"""What a client may read of a job: its events and its error, with no server path in them.

Events and `job.error` are served by the API to anyone with a key of the project, but their text
comes from the trainer, the model loaders and Python's own exceptions, which name files freely
("No such file or directory: '/srv/tunery/jobs/…/config.json'"). Every event and error is stored
through `tunery.jobs.queue`, which passes its text through `hide_paths` first: an absolute path
becomes its last component (`/srv/tunery/jobs/ftjob-1/out/checkpoints/step-3` → `step-3`), so a
message keeps its meaning and loses the server's layout. The full text stays in the job's
`train.log` and the server log, for the operator.
"""

from __future__ import annotations

import re
from typing import Any

# An absolute POSIX path: a `/` that does not follow a word character, another `/`, `:` or `.`
# (so `3/10`, `tokens/s`, `https://…` and `HuggingFaceTB/SmolLM2` are left alone), then one or more
# components of characters that do not end a path in prose or quoting.
_STOP = r"\s/'\"`<>|,;()\[\]{}"
_PATH = re.compile(rf"(?<![\w/:.~-])~?/(?:[^{_STOP}]+/)*[^{_STOP}]+/?")


def _last_component(match: re.Match) -> str:
    parts = [p for p in match.group(0).split("/") if p and p != "~"]
    return parts[-1] if parts else ""


def hide_paths(text: str) -> str:
    """`text` with every absolute path replaced by its last component."""
    return _PATH.sub(_last_component, text) if "/" in text else text


def hide_paths_in(value: Any) -> Any:
    """The same for every string inside a JSON-like value (an event's `data`, a job's `error`)."""
    if isinstance(value, str):
        return hide_paths(value)
    if isinstance(value, dict):
        return {k: hide_paths_in(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [hide_paths_in(v) for v in value]
    return value
