"""Schemas shared by every API area: time stamps, errors, list pages, query and path models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from flask_openapi3 import Tag
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from knowpay.domain.clock import isoformat

UtcDateTime = Annotated[datetime, PlainSerializer(isoformat, return_type=str)]

T = TypeVar("T")

BEARER = [{"bearer": []}]
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer"}}


class Strict(BaseModel):
    """Request bodies: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ErrorDetail(BaseModel):
    type: str
    code: str
    message: str
    param: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None


class ListQuery(BaseModel):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None


class IdPath(BaseModel):
    id: str = Field(..., max_length=64)


def errors(*statuses: int) -> dict:
    return {status: ErrorOut for status in statuses}


def tag(name: str) -> list[Tag]:
    return [Tag(name=name)]
