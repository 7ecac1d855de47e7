"""Bring a Clowder dataset (or one file of it) in as a dataset version here.

The Clowder dataset gets one local mirror per user, ``clowder-<dataset id>``; each request
commits the dataset's files as they are now, so a job reads a pinned, immutable copy. Blobs
are content-addressed, so a file already here (in any dataset) is stored once; a file whose
Clowder id and version are the ones the mirror already holds is not even downloaded again
(the mirror's file metadata remembers them). Files this connector wrote back into Clowder
(``clowder-ml-*``: predictions, model zips) are not imported as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clowder_ml.clowder.export import WRITTEN_PREFIX
from clowder_ml.clowder.messages import ExtractionRequest
from clowder_ml.clowder.rest import ClowderApi, ClowderRefused
from clowder_ml.db.models import Dataset, DatasetVersion, User
from clowder_ml.errors import AlreadyExists, NotFound, ValidationFailed
from clowder_ml.services import datasets
from clowder_ml.services.paths import normalize_path
from clowder_ml.services.platform import Platform
from clowder_ml.storage import BlobInfo
from clowder_ml.tasks.outputs import PREDICTIONS_DIR

META_KEY = "clowder"  # the mirror file metadata that records the Clowder file


@dataclass
class Imported:
    dataset: Dataset
    version: DatasetVersion
    # The Clowder files the version holds: {"id", "name", "version_num", "path", "sha256"}
    sources: list[dict[str, Any]] = field(default_factory=list)
    downloaded: int = 0  # files fetched from Clowder this time (the rest were known)


def mirror_name(dataset_id: str) -> str:
    return f"clowder-{dataset_id.lower()}"


def _mirror(platform: Platform, user: User, request: ExtractionRequest) -> Dataset:
    name = mirror_name(request.dataset_id)
    with platform.db.session() as s:
        for _ in range(2):
            try:
                ds = datasets.resolve(s, user, f"{user.username}/{name}")
            except NotFound:
                try:
                    ds = datasets.create(
                        s, user, name, description=f"Clowder dataset {request.dataset_id}"
                        + (f" ({request.dataset_name})" if request.dataset_name else ""),
                        metadata={"clowder_dataset_id": request.dataset_id})
                except AlreadyExists:  # a concurrent request created it
                    continue
            s.expunge(ds)
            return ds
    raise RuntimeError("could not create the mirror dataset")  # pragma: no cover


def _path(entry: dict[str, Any], taken: set[str]) -> str:
    """A unique, valid path for a Clowder file (names may repeat across folders)."""
    name = str(entry.get("name") or entry["id"]).replace("\\", "/").split("/")[-1]
    try:
        path = normalize_path(name)
    except ValidationFailed:
        path = str(entry["id"])
    if path in taken:
        stem, dot, ext = path.rpartition(".")
        path = f"{stem}-{entry['id']}.{ext}" if dot and stem else f"{path}-{entry['id']}"
    taken.add(path)
    return path


def _known(platform: Platform, ds: Dataset) -> dict[str, tuple[str, int, BlobInfo]]:
    """Clowder file id -> (path, version_num, blob) of what the mirror's latest version
    holds."""
    out: dict[str, tuple[str, int, BlobInfo]] = {}
    with platform.db.session() as s:
        fresh = s.get(Dataset, ds.id)
        assert fresh is not None
        for row in datasets.files(s, fresh):
            meta = datasets.get_file_metadata(s, fresh, row.path).get(META_KEY) or {}
            if meta.get("file_id"):
                out[str(meta["file_id"])] = (row.path, int(meta.get("version_num") or 0),
                                             BlobInfo(row.sha256, row.size))
    return out


def import_request(platform: Platform, api: ClowderApi, user: User,
                   request: ExtractionRequest) -> Imported:
    """Commit the request's Clowder files (the dataset's, or the one file) as the mirror's
    next version (or reuse the latest when nothing changed)."""
    if request.resource_type == "file":
        entries = [api.file_summary(request.id)]
    else:
        entries = [e for e in api.dataset_files(request.dataset_id)
                   if not str(e.get("name", "")).startswith(WRITTEN_PREFIX)]
    if not entries:
        raise ClowderRefused(f"Clowder dataset {request.dataset_id} has no files to work on.",
                             "Upload the data to the dataset, then submit again.")
    ds = _mirror(platform, user, request)
    known = _known(platform, ds)
    adds: dict[str, BlobInfo] = {}
    sources: list[dict[str, Any]] = []
    taken: set[str] = set()
    downloaded = 0
    for entry in entries:
        fid, vnum = str(entry["id"]), int(entry.get("version_num") or 0)
        path = _path(entry, taken)
        if fid in known and known[fid][1] == vnum:
            blob = known[fid][2]
        else:
            with platform.blobs.writer() as w:
                api.download(fid, w, platform.settings.max_upload_bytes)
                blob = w.commit()
            downloaded += 1
        adds[path] = blob
        sources.append({"id": fid, "name": entry.get("name"), "version_num": vnum,
                        "path": path, "sha256": blob.sha256})
    # Files gone from Clowder leave the mirror too (predictions written here stay).
    removes = ({p for p, _v, _b in known.values()} - set(adds)) if request.resource_type \
        == "dataset" else set()
    removes = {p for p in removes if not p.startswith(PREDICTIONS_DIR)}
    version = datasets.commit_changes(platform.db, ds.id, user.id, adds, removes=removes,
                                      message=f"from Clowder dataset {request.dataset_id}")
    with platform.db.session() as s:
        fresh = s.get(Dataset, ds.id)
        assert fresh is not None
        for src in sources:
            datasets.set_file_metadata(s, fresh, src["path"], {META_KEY: {
                "file_id": src["id"], "version_num": src["version_num"],
                "dataset_id": request.dataset_id}})
        s.expunge(fresh)
    return Imported(fresh, version, sources, downloaded)


def sources_of(platform: Platform, dataset_id: str, number: int) -> list[dict[str, Any]]:
    """The Clowder files a mirror version holds (``{"id", "version_num", "path",
    "sha256"}``), for lineage; files that did not come from Clowder are left out."""
    out: list[dict[str, Any]] = []
    with platform.db.session() as s:
        ds = s.get(Dataset, dataset_id)
        if ds is None:
            return out
        for row in datasets.files(s, ds, number):
            meta = datasets.get_file_metadata(s, ds, row.path).get(META_KEY) or {}
            if meta.get("file_id"):
                out.append({"id": meta["file_id"], "version_num": meta.get("version_num"),
                            "path": row.path, "sha256": row.sha256})
    return out
