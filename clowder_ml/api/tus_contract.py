"""The tus 1.0 operations (``routers.uploads``) as the OpenAPI document describes them.

tus is a header protocol (https://tus.io/protocols/resumable-upload): what a request says
is in ``Tus-Resumable``, ``Upload-Length``, ``Upload-Offset``, ``Upload-Metadata`` and
``Upload-Checksum``, what an answer says in the same headers. The document lists them all,
so a generated client sees every operation on ``/api/v1/uploads``; clients should still
speak tus through a tus library (tus-js-client, tuspy, the SDK). Some of its rules no JSON
Schema can state (``Upload-Metadata`` holds base64 of UTF-8 text; a missing
``Tus-Resumable`` is 412 by the protocol), so the fuzzers leave the ``tus`` tag out and
``tests/test_uploads_tus.py`` holds these operations to the protocol instead.
"""

from __future__ import annotations

from typing import Any

from clowder_ml.api.responses import READS_DATASET, errors
from clowder_ml.errors import (
    BadRequest,
    ChecksumMismatch,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PreconditionFailed,
    StorageError,
    StorageFull,
    UnsafeArchive,
    UnsupportedFormat,
    UnsupportedMediaType,
    UploadExpired,
    UploadFinalizing,
    UploadOffsetMismatch,
)
from clowder_ml.services.uploads import (
    CHECKSUM_ALGORITHMS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    UploadLocked,
)

TAGS = ["uploads", "tus"]


def _header(name: str, description: str, schema: dict[str, Any], *,
            required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": schema}


_INT = {"type": "integer", "minimum": 0}
_ALGORITHMS = "|".join(sorted(CHECKSUM_ALGORITHMS))
TUS_RESUMABLE = _header("Tus-Resumable", "The protocol version; any other answers 412",
                        {"type": "string", "enum": [TUS_VERSION]}, required=True)
UPLOAD_CHECKSUM = _header(
    "Upload-Checksum", "ALGORITHM BASE64-DIGEST of this request's bytes; a mismatch answers "
    "460 and stores nothing", {"type": "string",
                               "pattern": f"^({_ALGORITHMS}) [A-Za-z0-9+/]+={{0,2}}$"})
_OFFSET_BODY = {"content": {OFFSET_CONTENT_TYPE: {"schema": {"type": "string",
                                                              "format": "binary"}}}}


def _out(name: str, description: str, schema: dict[str, Any], *,
         required: bool = True) -> dict[str, Any]:
    return {name: {"description": description, "required": required, "schema": schema}}


_STATE = {"type": "string", "enum": ["receiving", "finalizing", "completed", "failed"]}
UPLOAD_HEADERS: dict[str, Any] = {
    **_out("Upload-Offset", "Bytes the server has", _INT),
    **_out("Upload-Length", "The upload's declared size", _INT),
    **_out("Upload-Expires", "When an unfinished upload is dropped (RFC 9110 date)",
           {"type": "string"}),
    **_out("X-Upload-State", "receiving, finalizing (every byte kept, being added to the "
           "dataset), completed or failed", _STATE),
}
# Once the last byte is in, the upload becomes a dataset version: its refusals are the
# dataset's (and the content's: a zip to unpack, the declared sha256).
_COMMIT = (*READS_DATASET, PermissionDenied, UnsafeArchive, UnsupportedFormat,
           ChecksumMismatch, StorageError)

OPTIONS: dict[str, Any] = {
    "tags": TAGS,
    "responses": {204: {"description": "What this server's tus supports", "headers": {
        **_out("Tus-Version", "Protocol versions", {"type": "string"}),
        **_out("Tus-Extension", "Extensions", {"type": "string"}),
        **_out("Tus-Max-Size", "The largest upload in bytes", _INT),
        **_out("Tus-Checksum-Algorithm", "Checksum algorithms", {"type": "string"})}}},
}

CREATE: dict[str, Any] = {
    "tags": TAGS,
    "responses": {
        201: {"description": "Created; the Location is the upload's URL (with "
                             "creation-with-upload, the body's bytes are in)",
              "headers": {**_out("Location", "The upload's URL", {"type": "string"}),
                          **UPLOAD_HEADERS}},
        **errors(*_COMMIT, BadRequest, PayloadTooLarge, StorageFull, PreconditionFailed,
                 UploadLocked)},
    "openapi_extra": {
        "parameters": [
            TUS_RESUMABLE,
            _header("Upload-Length", "The upload's size in bytes", _INT, required=True),
            _header("Upload-Metadata", "Comma-separated 'KEY BASE64' pairs: dataset (name or "
                    "id), path (in the dataset), sha256 (hex digest of the whole file); or "
                    "unpack=true and prefix (a folder) to unpack a zip",
                    {"type": "string"}, required=True),
            UPLOAD_CHECKSUM],
        "requestBody": {"required": False, **_OFFSET_BODY,
                        "description": "creation-with-upload: the first bytes"}},
}

HEAD: dict[str, Any] = {
    "tags": TAGS,
    "responses": {200: {"description": "The upload's offset and state (no body)",
                        "headers": UPLOAD_HEADERS},
                  **errors(NotFound, UploadExpired, PreconditionFailed)},
    "openapi_extra": {"parameters": [TUS_RESUMABLE]},
}

PATCH: dict[str, Any] = {
    "tags": TAGS,
    "responses": {
        204: {"description": "Bytes appended at Upload-Offset; with the last one, the file "
                             "is in the dataset", "headers": {
                  **UPLOAD_HEADERS,
                  **_out("X-Dataset-Version", "The dataset version the upload made, once "
                         "complete", _INT, required=False)}},
        **errors(*_COMMIT, BadRequest, UploadOffsetMismatch, UploadExpired,
                 PreconditionFailed, UnsupportedMediaType, UploadLocked, UploadFinalizing,
                 PayloadTooLarge, StorageFull)},
    "openapi_extra": {
        "parameters": [TUS_RESUMABLE,
                       _header("Upload-Offset", "Where these bytes go: the server's offset",
                               _INT, required=True),
                       UPLOAD_CHECKSUM,
                       _header("Upload-Sha256", "clowder-ml extension: the whole file's "
                               "sha256 (hex), e.g. with the last PATCH by a client that "
                               "hashes while it sends; checked when the last byte arrives "
                               "(a mismatch answers 460 and adds nothing)",
                               {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"})],
        "requestBody": {"required": True, **_OFFSET_BODY}},
}

DELETE: dict[str, Any] = {
    "tags": TAGS,
    "responses": errors(NotFound, PreconditionFailed, UploadLocked),
    "openapi_extra": {"parameters": [TUS_RESUMABLE]},
}
