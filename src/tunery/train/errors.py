"""The one error type the engine raises for problems a user can fix (or must be told about).

`code` is what the job runner reports as `error.code` (OpenAI style); `param` names the field or
file at fault. Anything else escaping the engine is reported as `internal_error`.
"""

from __future__ import annotations


class TrainError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "param": self.param}
