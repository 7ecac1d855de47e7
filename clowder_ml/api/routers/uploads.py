"""tus 1.0 resumable uploads at /api/v1/uploads/ (plus a JSON status view).

Extensions: creation, creation-with-upload, termination, checksum, expiration.
Upload-Metadata keys: ``dataset`` (name or id), ``path``, ``sha256``; optional
``unpack=true`` (+ ``prefix``) to unpack a zip into the dataset.

When the last byte arrives but the dataset cannot take it yet (busy past its lock wait, a
passing database or disk failure) the PATCH answers 503 with ``Retry-After``: the bytes are
kept, HEAD answers the full offset with ``X-Upload-State: finalizing``, the server retries
by itself, and an empty PATCH at the full offset retries at once.
"""

from __future__ import annotations

from email.utils import format_datetime

from anyio import to_thread
from fastapi import APIRouter, Request, Response, status

from clowder_ml.api import tus_contract
from clowder_ml.api.deps import PlatformDep, UserDep
from clowder_ml.api.fields import IdPath
from clowder_ml.api.responses import NAMES_RESOURCE, errors
from clowder_ml.api.schemas import UploadOut
from clowder_ml.errors import PreconditionFailed, UploadFinalizing
from clowder_ml.services.uploads import (
    CHECKSUM_ALGORITHMS,
    OFFSET_CONTENT_TYPE,
    TUS_EXTENSIONS,
    TUS_VERSION,
    UploadStatus,
    parse_int_header,
    parse_metadata,
)

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"])


def _require_tus(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise PreconditionFailed(f"This server speaks tus {TUS_VERSION}.",
                                 f"Send the header 'Tus-Resumable: {TUS_VERSION}'.")


def _headers(st: UploadStatus) -> dict[str, str]:
    return {
        "Upload-Offset": str(st.offset),
        "Upload-Length": str(st.length),
        "Upload-Expires": format_datetime(st.expires_at, usegmt=True),
        "Cache-Control": "no-store",
        # receiving | finalizing (all bytes kept, being added) | completed | failed
        "X-Upload-State": str(st.state),
    }


def _location(upload_id: str) -> str:
    return f"/api/v1/uploads/{upload_id}"


@router.options("/", status_code=status.HTTP_204_NO_CONTENT, **tus_contract.OPTIONS)
def tus_options(platform: PlatformDep) -> Response:
    """What this server's tus supports (no credentials needed)."""
    return Response(status_code=204, headers={
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(platform.settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    })


@router.post("/", status_code=status.HTTP_201_CREATED, **tus_contract.CREATE)
async def tus_create(request: Request, user: UserDep, platform: PlatformDep) -> Response:
    """Create an upload; a body with Content-Type offset+octet-stream is its first chunk."""
    _require_tus(request)
    length = parse_int_header("Upload-Length", request.headers.get("upload-length"))
    meta = parse_metadata(request.headers.get("upload-metadata"))
    st = await to_thread.run_sync(platform.uploads.create, user, length, meta)
    ctype = request.headers.get("content-type")
    if ctype and ctype.split(";")[0].strip() == OFFSET_CONTENT_TYPE:
        try:
            st = await platform.uploads.append(user, st.id, 0, ctype, request.stream(),
                                               request.headers.get("upload-checksum"))
        except UploadFinalizing:
            # Created and every byte received, only not in the dataset yet: the client
            # needs the Location to follow it, which a 503 would not give.
            st = await to_thread.run_sync(platform.uploads.head_any, st.id)
    return Response(status_code=201, headers={"Location": _location(st.id), **_headers(st)})


@router.head("/{upload_id}", **tus_contract.HEAD)
def tus_head(upload_id: IdPath, request: Request, user: UserDep, platform: PlatformDep,
             ) -> Response:
    """The upload's offset (where to resume) and state."""
    _require_tus(request)
    st = platform.uploads.head(user, upload_id)
    return Response(status_code=200, headers=_headers(st))


@router.patch("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, **tus_contract.PATCH)
async def tus_patch(upload_id: IdPath, request: Request, user: UserDep, platform: PlatformDep,
                    ) -> Response:
    """Append the body's bytes at ``Upload-Offset``."""
    _require_tus(request)
    offset = parse_int_header("Upload-Offset", request.headers.get("upload-offset"))
    st = await platform.uploads.append(user, upload_id, offset,
                                       request.headers.get("content-type"), request.stream(),
                                       request.headers.get("upload-checksum"),
                                       request.headers.get("upload-sha256"))
    headers = _headers(st)
    if st.version is not None:
        headers["X-Dataset-Version"] = str(st.version)
    return Response(status_code=204, headers=headers)


@router.delete("/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, **tus_contract.DELETE)
def tus_delete(upload_id: IdPath, request: Request, user: UserDep, platform: PlatformDep,
               ) -> Response:
    """Stop an upload and drop what it received (tus termination)."""
    _require_tus(request)
    platform.uploads.terminate(user, upload_id)
    return Response(status_code=204)


@router.get("/{upload_id}", response_model=UploadOut, responses=errors(*NAMES_RESOURCE))
def upload_status(upload_id: IdPath, user: UserDep, platform: PlatformDep) -> UploadOut:
    """JSON view of an upload: state, offset, the dataset version it created, or its error."""
    st = platform.uploads.status(user, upload_id)
    return UploadOut(id=st.id, dataset_id=st.dataset_id, path=st.path, length=st.length,
                     offset=st.offset, state=st.state, expires_at=st.expires_at,
                     version=st.version, error=st.error)
