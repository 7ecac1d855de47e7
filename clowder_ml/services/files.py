"""Adding, removing and reading dataset files outside tus: multipart posts, zip archives,
deletions, ranged reads and whole versions as a streamed zip.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from typing import IO

from clowder_ml.db.models import Dataset, DatasetVersion, User
from clowder_ml.db.session import Database
from clowder_ml.errors import PayloadTooLarge
from clowder_ml.services import datasets
from clowder_ml.services.archives import ZipLimits, unpack_zip
from clowder_ml.services.paths import normalize_path, normalize_prefix
from clowder_ml.settings import Settings
from clowder_ml.storage import BlobInfo, LocalBlobStore

CHUNK = 1 << 20


def store_stream(blobs: LocalBlobStore, src: IO[bytes], limit: int, name: str) -> BlobInfo:
    """Copy a readable stream into a blob, refusing more than ``limit`` bytes."""
    with blobs.writer() as w:
        while chunk := src.read(CHUNK):
            if w.size + len(chunk) > limit:
                raise PayloadTooLarge(
                    f"{name!r} is larger than {limit} bytes, the limit for simple uploads.",
                    "Use a resumable upload: `clowder-ml upload` or any tus client.")
            w.write(chunk)
        return w.commit()


def add_files(db: Database, blobs: LocalBlobStore, settings: Settings, actor: User,
              ds: Dataset, items: Iterable[tuple[str, IO[bytes]]], message: str = "",
              ) -> DatasetVersion:
    """Store every (path, stream) and commit them together as one new version."""
    adds: dict[str, BlobInfo] = {}
    for path, stream in items:
        p = normalize_path(path)
        adds[p] = store_stream(blobs, stream, settings.max_multipart_bytes, p)
    return datasets.commit_changes(db, ds.id, actor.id, adds, message=message or "add files")


def add_zip(db: Database, blobs: LocalBlobStore, settings: Settings, actor: User, ds: Dataset,
            archive: IO[bytes], prefix: str | None) -> DatasetVersion:
    limits = ZipLimits(settings.zip_max_total_bytes, settings.zip_max_ratio,
                       settings.zip_max_entries)
    adds = unpack_zip(archive, blobs, limits, prefix=normalize_prefix(prefix))
    return datasets.commit_changes(db, ds.id, actor.id, adds, message="unpack archive")


def remove_files(db: Database, actor: User, ds: Dataset, paths: Iterable[str]) -> DatasetVersion:
    return datasets.commit_changes(db, ds.id, actor.id, {},
                                   removes={normalize_path(p) for p in paths},
                                   message="remove files")


class _Sink:
    """A write-only, unseekable file object that hands written bytes to a generator."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def stream_zip(blobs: LocalBlobStore, entries: Iterable[tuple[str, str]]) -> Iterator[bytes]:
    """Yield a zip of (path, sha256) entries, built on the fly (stored, zip64-ready).

    Memory stays at one chunk: entries are written with data descriptors, never seeked.
    """
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path, digest in entries:
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as dst:
                for chunk in blobs.iter_chunks(digest):
                    dst.write(chunk)
                    if sink.pos and len(sink.parts) > 0:
                        yield sink.take()
            yield sink.take()
    yield sink.take()
