"""Datasets, their sharing, versions, files, previews and metadata."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request, status
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session

from clowder_ml.api.deps import AuditDep, PlatformDep, UserDep
from clowder_ml.api.fields import (
    DatasetRefPath,
    FilePathPath,
    FolderQuery,
    UsernamePath,
)
from clowder_ml.api.responses import (
    CREATES,
    READS_DATASET,
    SHARES,
    UPLOADS_FILES,
    WRITES_DATASET,
    errors,
)
from clowder_ml.api.schemas import (
    ArchiveForm,
    DatasetCreate,
    DatasetOut,
    DatasetUpdate,
    FileOut,
    FilesForm,
    MetadataBody,
    PreviewOut,
    ShareOut,
    ShareRequest,
    TreeNodeOut,
    TreeOut,
    VersionDetail,
    VersionOut,
)
from clowder_ml.db.models import Dataset, Permission, User
from clowder_ml.errors import (
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    StorageError,
    UnsafeArchive,
    UnsupportedFormat,
)
from clowder_ml.services import audit, datasets, files, preview, users

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])
VersionQ = Annotated[int | None, Query(ge=1, le=datasets.MAX_VERSION,
                                       description="Version number; latest if omitted")]
VersionP = Annotated[int, Path(ge=1, le=datasets.MAX_VERSION, description="Version number")]
# A change to what the dataset holds: its commit can wait (503) or fail on disk.
CHANGES_FILES = (*WRITES_DATASET, StorageError)


def _out(s: Session, user: User, ds: Dataset) -> DatasetOut:
    perm = datasets.permission_of(s, user, ds)
    assert perm is not None
    return DatasetOut(id=ds.id, name=ds.name, owner=ds.owner.username,
                      description=ds.description, metadata=ds.metadata_,
                      latest_version=ds.latest_version, permission=perm,
                      created_at=ds.created_at, updated_at=ds.updated_at)


@router.get("", response_model=list[DatasetOut])
def list_datasets(user: UserDep, platform: PlatformDep) -> list[DatasetOut]:
    with platform.db.session() as s:
        return [_out(s, user, ds) for ds in datasets.list_visible(s, user)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetOut,
             responses=errors(*CREATES))
def create_dataset(body: DatasetCreate, user: UserDep, platform: PlatformDep) -> DatasetOut:
    with platform.db.session() as s:
        ds = datasets.create(s, user, body.name, body.description, body.metadata)
        return _out(s, user, ds)


@router.get("/{ref}", response_model=DatasetOut, responses=errors(*READS_DATASET))
def get_dataset(ref: DatasetRefPath, user: UserDep, platform: PlatformDep) -> DatasetOut:
    with platform.db.session() as s:
        return _out(s, user, datasets.resolve(s, user, ref))


@router.patch("/{ref}", response_model=DatasetOut,
              responses=errors(*READS_DATASET, PermissionDenied))
def update_dataset(ref: DatasetRefPath, body: DatasetUpdate, user: UserDep, platform: PlatformDep,
                   ) -> DatasetOut:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref, Permission.WRITE)
        return _out(s, user, datasets.update_info(s, ds, body.description, body.metadata))


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT,
               responses=errors(*READS_DATASET, PermissionDenied))
def delete_dataset(ref: DatasetRefPath, user: UserDep, platform: PlatformDep) -> None:
    with platform.db.session() as s:
        datasets.remove(s, user, datasets.resolve(s, user, ref))


# sharing -------------------------------------------------------------------------------

@router.get("/{ref}/shares", response_model=list[ShareOut], responses=errors(*READS_DATASET))
def list_shares(ref: DatasetRefPath, user: UserDep, platform: PlatformDep) -> list[ShareOut]:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        return [ShareOut(username=sh.user.username, permission=Permission(sh.permission))
                for sh in datasets.shares(s, ds)]


@router.put("/{ref}/shares/{username}", response_model=ShareOut,
            responses=errors(*READS_DATASET, *SHARES))
def share(ref: DatasetRefPath, username: UsernamePath, body: ShareRequest, user: UserDep,
          platform: PlatformDep, ctx: AuditDep) -> ShareOut:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        datasets.share(s, user, ds, users.get_user_by_name(s, username), body.permission)
        audit.record_share(s, ctx, user, f"dataset:{ds.id}", username, body.permission.value)
        return ShareOut(username=username, permission=body.permission)


@router.delete("/{ref}/shares/{username}", status_code=status.HTTP_204_NO_CONTENT,
               responses=errors(*READS_DATASET, *SHARES))
def unshare(ref: DatasetRefPath, username: UsernamePath, user: UserDep, platform: PlatformDep,
            ctx: AuditDep) -> None:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        datasets.unshare(s, user, ds, users.get_user_by_name(s, username))
        audit.record_share(s, ctx, user, f"dataset:{ds.id}", username, None)


# versions ------------------------------------------------------------------------------

@router.get("/{ref}/versions", response_model=list[VersionOut],
            responses=errors(*READS_DATASET))
def list_versions(ref: DatasetRefPath, user: UserDep, platform: PlatformDep) -> list[VersionOut]:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        return [VersionOut.model_validate(v) for v in datasets.list_versions(s, ds)]


@router.get("/{ref}/versions/{number}", response_model=VersionDetail,
            responses=errors(*READS_DATASET))
def get_version(ref: DatasetRefPath, number: VersionP, user: UserDep, platform: PlatformDep,
                ) -> VersionDetail:
    """A version with its manifest (path -> sha256, size)."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        v = datasets.get_version(s, ds, number)
        assert v is not None
        entries = [FileOut.model_validate(f) for f in datasets.files(s, ds, number)]
        return VersionDetail(**VersionOut.model_validate(v).model_dump(), files=entries)


@router.get("/{ref}/versions/{number}/archive", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {
                "schema": {"type": "string", "format": "binary"}}}},
                       **errors(*READS_DATASET)})
def download_version(ref: DatasetRefPath, number: VersionP, user: UserDep, platform: PlatformDep,
                     ) -> StreamingResponse:
    """The whole version as a zip, streamed as it is built."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        entries = [(f.path, f.sha256) for f in datasets.files(s, ds, number)]
        if not entries:
            datasets.get_version(s, ds, number)
        name = f"{ds.name}-v{number}.zip"
    return StreamingResponse(files.stream_zip(platform.blobs, entries),
                             media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


# files ---------------------------------------------------------------------------------

@router.get("/{ref}/files", response_model=list[FileOut], responses=errors(*READS_DATASET))
def list_files(ref: DatasetRefPath, user: UserDep, platform: PlatformDep,
               version: VersionQ = None, prefix: FolderQuery = "") -> list[FileOut]:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        return [FileOut.model_validate(f) for f in datasets.files(s, ds, version, prefix)]


@router.get("/{ref}/tree", response_model=TreeOut, responses=errors(*READS_DATASET))
def tree(ref: DatasetRefPath, user: UserDep, platform: PlatformDep, version: VersionQ = None,
         path: FolderQuery = "") -> TreeOut:
    """The folder ``path`` (root by default): its sub-folders and files."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        nodes = datasets.tree(s, ds, version, path)
        return TreeOut(version=version or ds.latest_version, path=path.strip("/"),
                       entries=[TreeNodeOut.model_validate(n) for n in nodes])


def _check_body_size(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + (1 << 20):
        raise PayloadTooLarge(f"Request larger than {limit} bytes, the simple-upload limit.",
                              "Use a resumable upload: `clowder-ml upload` or any tus client.")


@router.post("/{ref}/files", status_code=status.HTTP_201_CREATED, response_model=VersionOut,
             responses=errors(*UPLOADS_FILES, StorageError))
def add_files(ref: DatasetRefPath, request: Request, user: UserDep, platform: PlatformDep,
              form: Annotated[FilesForm, Form(media_type="multipart/form-data")],
              ) -> VersionOut:
    """Small files by multipart POST; all of them land in one new version."""
    _check_body_size(request, platform.settings.max_multipart_bytes)
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref, Permission.WRITE)
    items = [(path, f.file) for path, f in form.targets()]
    v = files.add_files(platform.db, platform.blobs, platform.settings, user, ds, items)
    return VersionOut.model_validate(v)


@router.post("/{ref}/archive", status_code=status.HTTP_201_CREATED, response_model=VersionOut,
             responses=errors(*UPLOADS_FILES, StorageError, UnsafeArchive))
def add_archive(ref: DatasetRefPath, request: Request, user: UserDep, platform: PlatformDep,
                form: Annotated[ArchiveForm, Form(media_type="multipart/form-data")],
                ) -> VersionOut:
    """Unpack a zip into the dataset (refusing traversal, links and bombs)."""
    _check_body_size(request, platform.settings.max_multipart_bytes)
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref, Permission.WRITE)
    v = files.add_zip(platform.db, platform.blobs, platform.settings, user, ds, form.file.file,
                      form.prefix)
    return VersionOut.model_validate(v)


@router.get("/{ref}/files/{path:path}", response_class=FileResponse,
            responses={200: {"content": {"*/*": {
                "schema": {"type": "string", "format": "binary"}}}},
                       **errors(*READS_DATASET)})
def download_file(ref: DatasetRefPath, path: FilePathPath, user: UserDep, platform: PlatformDep,
                  version: VersionQ = None) -> FileResponse:
    """Download one file; supports HTTP Range requests."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        f = datasets.get_file(s, ds, path, version)
    blob = platform.blobs.path(f.sha256)
    if not blob.is_file():
        raise NotFound("The file's content is missing from storage.")
    return FileResponse(blob, filename=PurePosixPath(f.path).name,
                        headers={"ETag": f'"{f.sha256}"', "X-Content-SHA256": f.sha256})


@router.delete("/{ref}/files/{path:path}", response_model=VersionOut,
               responses=errors(*CHANGES_FILES))
def delete_file(ref: DatasetRefPath, path: FilePathPath, user: UserDep, platform: PlatformDep,
                ) -> VersionOut:
    """Remove a file; the result is a new version (older versions keep it)."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref, Permission.WRITE)
    return VersionOut.model_validate(files.remove_files(platform.db, user, ds, [path]))


@router.get("/{ref}/preview/{path:path}", response_model=PreviewOut,
            responses=errors(*READS_DATASET, UnsupportedFormat))
def preview_file(ref: DatasetRefPath, path: FilePathPath, user: UserDep, platform: PlatformDep,
                 version: VersionQ = None,
                 rows: Annotated[int, Query(ge=0, le=preview.MAX_ROWS)] = 20) -> PreviewOut:
    """Schema, row count and first rows of a CSV, TSV, JSONL or Parquet file."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        f = datasets.get_file(s, ds, path, version)
    result = preview.preview(platform.blobs.path(f.sha256), f.path, f.sha256, rows)
    return PreviewOut(path=f.path, **result)


@router.get("/{ref}/file-metadata/{path:path}", response_model=MetadataBody,
            responses=errors(*READS_DATASET))
def get_file_metadata(ref: DatasetRefPath, path: FilePathPath, user: UserDep, platform: PlatformDep,
                      ) -> MetadataBody:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        return MetadataBody(metadata=datasets.get_file_metadata(s, ds, path))


@router.put("/{ref}/file-metadata/{path:path}", response_model=MetadataBody,
            responses=errors(*READS_DATASET, PermissionDenied))
def put_file_metadata(ref: DatasetRefPath, path: FilePathPath, body: MetadataBody, user: UserDep,
                      platform: PlatformDep) -> MetadataBody:
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref, Permission.WRITE)
        return MetadataBody(metadata=datasets.set_file_metadata(s, ds, path, body.metadata))
