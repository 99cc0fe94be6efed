"""The error envelope and the list pages shared by every resource."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class RequestModel(BaseModel):
    """A request body, taken with the JSON types its schema documents, as OpenAI takes it: no
    `false` for an integer, no `0` for a boolean, no `"1"` for a number."""

    model_config = ConfigDict(strict=True)


class ErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)  # always sent, null or not

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ListPage(BaseModel, Generic[T]):
    """`{object: "list", data, has_more}` (fine-tuning jobs, events, checkpoints)."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


class CursorPage(ListPage[T], Generic[T]):
    """A list page that also names its first and last ids (files, uploads)."""

    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def of(cls, data: list, has_more: bool) -> "CursorPage":
        return cls(data=data, has_more=has_more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None)


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: bool = True
