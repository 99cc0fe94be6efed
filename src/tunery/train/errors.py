"""The one error type the engine raises for problems a user can fix (or must be told about).

`code` is what the job runner reports as `error.code` (OpenAI style); `param` names the field or
file at fault. Anything else escaping the engine is reported as `internal_error`.
"""

from __future__ import annotations

import errno


class TrainError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "param": self.param}


DISK_FULL_MESSAGE = "No space left on device while writing the run's outputs (a checkpoint, the weights or the logs)"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, however it surfaces: an OSError, or the text of torch's or safetensors' writers."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text
