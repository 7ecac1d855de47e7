"""Request and response models. Requests forbid unknown fields; responses are plain data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clowder_ml.db.models import Permission


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# auth and users -------------------------------------------------------------------------

class TokenRequest(Strict):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    name: str = Field(default="api", min_length=1, max_length=128)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class NewTokenRequest(Strict):
    name: str = Field(min_length=1, max_length=128)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class LoginRequest(Strict):
    username: str = Field(max_length=64)
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
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    is_admin: bool = False


class UserOut(Out):
    id: int
    username: str
    is_admin: bool
    created_at: datetime


# datasets ------------------------------------------------------------------------------

class DatasetCreate(Strict):
    name: str = Field(max_length=128)
    description: str = Field(default="", max_length=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DatasetUpdate(Strict):
    description: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = None


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
    metadata: dict[str, Any]


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
