"""Schemas shared by every API area: time stamps, errors, list pages, query and path models."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from flask_openapi3 import Tag
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from knowpay.representations import Out, UtcDateTime  # noqa: F401 - re-exported for the API modules


T = TypeVar("T")

BEARER = [{"bearer": []}]
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer"}}


def _refuse_nul(value: object) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError("string_nul", "Text must not contain NUL characters")
    elif isinstance(value, list | tuple):
        for part in value:
            _refuse_nul(part)
    elif isinstance(value, dict):
        for key, part in value.items():
            _refuse_nul(key)
            _refuse_nul(part)


class Input(BaseModel):
    """Every request model (body, query, path): text never carries NUL characters."""

    # PostgreSQL cannot store or even compare text with NUL: refused here rather than a 500 there.
    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        _refuse_nul(value)
        return value


class Strict(Input):
    """Request bodies: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **_: object) -> Strict:
        # flask-openapi3 hands a body that is a JSON *string* here, which would accept a
        # double-encoded object; the API takes a JSON object and nothing else.
        raise ValidationError.from_exception_data(cls.__name__, [
            {"type": "model_type", "loc": (), "input": json_data, "ctx": {"class_name": cls.__name__}}])


class ErrorDetail(BaseModel):
    type: Literal["invalid_request", "authentication", "permission", "not_found", "conflict", "rate_limited",
                  "payment_declined", "risk_blocked", "internal"]
    code: str
    message: str
    param: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None


class ListQuery(Input):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class IdPath(Input):
    id: str = Field(..., max_length=64)


def errors(*statuses: int) -> dict:
    """The error responses of an operation; 400 always, since any request can fail validation."""
    return {status: ErrorOut for status in (400, *statuses)}


def tag(name: str) -> list[Tag]:
    return [Tag(name=name)]
