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

from fastapi import UploadFile
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, StrictBool

from clowder_ml.api.fields import (
    FILE_PATH_OR_EMPTY_PATTERN,
    MAX_PATH,
    NO_NUL_PATTERN,
    DatasetName,
    FolderField,
    NewPassword,
    Username,
)
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


def plain_json(value: Any) -> Any:
    """``value`` unchanged if it is plain JSON: finite numbers, valid strings (keys too),
    nesting at most ``MAX_METADATA_DEPTH`` deep; else ValueError saying which rule failed."""
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


# The schema states the NUL rule as a pattern; the validator enforces it with a plainer
# message (and refuses lone surrogates, which no JSON Schema can express).
Text = Annotated[str, AfterValidator(_storable_text),
                 Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
Metadata = Annotated[dict[str, Any], AfterValidator(plain_json)]


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
    username: Username
    password: NewPassword
    is_admin: StrictBool = False  # JSON's true or false, not 0/1/"yes" (pydantic's lax mode)


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
    name: DatasetName
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


# Each item of a multipart file array is a file part (format binary), as clients send it.
_FILE_PARTS: dict[str, JsonValue] = {"items": {
    "type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}}


class FilesForm(Strict):
    """Small files by multipart (``POST /datasets/{ref}/files``). As with ``cp``: one file
    lands at ``path`` (or ``prefix``/its file name); several land in the folder ``path``
    (or ``prefix``), each under its file name."""

    file: list[UploadFile] = Field(min_length=1, description="One or more files",
                                   json_schema_extra=_FILE_PARTS)
    # Not nullable: a form field cannot say null; empty means "not given".
    path: str = Field(default="", pattern=FILE_PATH_OR_EMPTY_PATTERN, max_length=MAX_PATH,
                      description="One file: its path; several: their folder")
    prefix: FolderField = Field(default="", description="Folder for the files (without path)")

    def targets(self) -> list[tuple[str, UploadFile]]:
        """Where each file lands in the dataset (see the class doc)."""
        if self.path and len(self.file) == 1:
            return [(self.path, self.file[0])]
        folder = (self.path or self.prefix).strip("/")
        return [((f"{folder}/" if folder else "") + (f.filename or ""), f) for f in self.file]


class ArchiveForm(Strict):
    """A zip to unpack into a dataset (``POST /datasets/{ref}/archive``)."""

    file: UploadFile = Field(
        description="A .zip archive; anything else is refused (422 unsafe_archive)",
        json_schema_extra={"format": "binary", "contentMediaType": "application/zip"})
    prefix: FolderField = Field(default="", description="Folder to unpack into")


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
