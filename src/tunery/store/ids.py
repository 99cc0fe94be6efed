"""OpenAI-style object ids: a type prefix and 24 random base62 characters.

`new_id("file-")` → `file-3kQ…`. The prefix carries its own separator because OpenAI mixes them:
`file-`, `ftjob-`, `ftevent-`, `ft-` but `upload_`, `part_`, `ftckpt_`.
"""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def file_id() -> str:
    return new_id("file-")


def upload_id() -> str:
    return new_id("upload_")


def part_id() -> str:
    return new_id("part_")
