"""Request and response models. Requests forbid unknown fields; responses are plain data.

Request text and metadata are checked for what the databases cannot store or a response
cannot carry: lone UTF-16 surrogates (not encodable), NUL characters in text (PostgreSQL
refuses them; JSON metadata may hold them), and in metadata NaN and Infinity (not JSON) and
nesting deeper than the response serializer follows.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from clowder_ml.db.models import Permission

MAX_METADATA_DEPTH = 64


def _check_str(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings must be valid Unicode (no lone surrogates)") from None


def _storable_text(value: str) -> str:
    _check_str(value)
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\x00) characters")
    return value


def _json_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata must be plain JSON: finite numbers, valid strings, bounded nesting."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
            if isinstance(item, dict):
                for k in item:
                    _check_str(k)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (NaN and Infinity are not JSON)")
        elif isinstance(item, str):
            _check_str(item)
    return value


Text = Annotated[str, AfterValidator(_storable_text)]
Metadata = Annotated[dict[str, Any], AfterValidator(_json_metadata)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# auth and users -------------------------------------------------------------------------

class TokenRequest(Strict):
    username: Text = Field(max_length=64)
    password: str = Field(max_length=1024)
    name: Text = Field(default="api", min_length=1, max_length=128)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class NewTokenRequest(Strict):
    name: Text = Field(min_length=1, max_length=128)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class LoginRequest(Strict):
    username: Text = Field(max_length=64)
    password: str = Field(max_length=1024)


class TokenOut(Out):
    id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class IssuedToken(BaseModel):
    token: str = Field(description="Shown once; send as 'Authorization: Bearer <token>'")
    id: str
    name: str
    expires_at: datetime | None


class UserCreate(Strict):
    username: Text = Field(max_length=64)
    password: str = Field(max_length=1024)
    is_admin: bool = False


class UserOut(Out):
    id: int
    username: str
    is_admin: bool
    created_at: datetime


class UnlockOut(BaseModel):
    username: str
    had_failures: bool


class AuditEventOut(Out):
    """One audit record (``services.audit``): never a secret, a token only by its id."""

    id: int
    at: datetime
    action: str
    outcome: str
    actor: str
    client: str | None
    target: str
    detail: dict[str, Any]
    request_id: str | None


class AuditPage(BaseModel):
    events: list[AuditEventOut]
    # Pass as ``before`` for the next (older) page; None: this is the last page.
    next_before: int | None


# datasets ------------------------------------------------------------------------------

class DatasetCreate(Strict):
    name: Text = Field(max_length=128)
    description: Text = Field(default="", max_length=10_000)
    metadata: Metadata = Field(default_factory=dict)


class DatasetUpdate(Strict):
    description: Text | None = Field(default=None, max_length=10_000)
    metadata: Metadata | None = None


class DatasetOut(BaseModel):
    id: str
    name: str
    owner: str
    description: str
    metadata: dict[str, Any]
    latest_version: int
    permission: Permission
    created_at: datetime
    updated_at: datetime


class ShareRequest(Strict):
    permission: Permission


class ShareOut(BaseModel):
    username: str
    permission: Permission


class VersionOut(Out):
    number: int
    message: str
    file_count: int
    total_bytes: int
    created_at: datetime


class FileOut(Out):
    path: str
    sha256: str
    size: int


class VersionDetail(VersionOut):
    files: list[FileOut]


class TreeNodeOut(Out):
    name: str
    path: str
    kind: str
    size: int
    files: int
    sha256: str | None = None


class TreeOut(BaseModel):
    version: int
    path: str
    entries: list[TreeNodeOut]


class PreviewOut(BaseModel):
    path: str
    format: str
    columns: list[dict[str, str]]
    row_count: int
    rows: list[Any]


class MetadataBody(Strict):
    metadata: Metadata


class UploadOut(BaseModel):
    id: str
    dataset_id: str
    path: str
    length: int
    offset: int
    state: str
    expires_at: datetime
    version: int | None
    error: str | None


class GcOut(BaseModel):
    blobs_removed: int
    uploads_expired: int
