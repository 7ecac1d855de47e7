"""Content-addressed blob store.

Contract:
- A blob is named by the sha256 of its bytes and never changes once visible.
- Writes go to a temporary file in the same file system, are fsynced, then renamed into
  place, so a reader sees either nothing or the whole blob; the same bytes are stored once.
- Bytes are streamed in both directions; no method holds a whole blob in memory.
- Disk-full and other write errors raise ``StorageFull``/``StorageError`` and leave nothing
  behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from clowder_ml.errors import NotFound, StorageError, StorageFull

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int


def storage_error(exc: OSError, what: str) -> StorageError | StorageFull:
    """Translate an OS error into a platform error with a useful hint."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(
            f"No space left while {what}.",
            "Free disk space in the data folder or ask the operator for a larger volume.",
        )
    return StorageError(f"Storage failed while {what}: {exc.strerror or exc}.",
                        "The operator should check the data folder's disk and permissions.")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore(Protocol):
    def writer(self) -> BlobWriter: ...
    def put_stream(self, chunks: Iterable[bytes]) -> BlobInfo: ...
    def adopt(self, path: Path, sha256: str) -> BlobInfo: ...
    def open(self, sha256: str) -> BinaryIO: ...
    def path(self, sha256: str) -> Path: ...
    def exists(self, sha256: str) -> bool: ...
    def collect(self, referenced: set[str], grace_seconds: float) -> int: ...


class BlobWriter:
    """Streams bytes into a temp file while hashing; ``commit`` makes them a blob.

    Use as a context manager: leaving without ``commit`` (or on error) deletes the temp file.
    """

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._tmp = store.tmp_dir / f"blob-{uuid.uuid4().hex}.tmp"
        self._hash = hashlib.sha256()
        self.size = 0
        try:
            self._fh: BinaryIO | None = open(self._tmp, "xb")  # noqa: SIM115
        except OSError as exc:
            raise storage_error(exc, "creating a temporary file") from exc

    def write(self, data: bytes) -> None:
        assert self._fh is not None, "writer already closed"
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            raise storage_error(exc, "writing a file") from exc
        self._hash.update(data)
        self.size += len(data)

    def commit(self) -> BlobInfo:
        assert self._fh is not None, "writer already closed"
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
            digest = self._hash.hexdigest()
            return self._store._place(self._tmp, digest, self.size)
        except OSError as exc:
            self.abort()
            raise storage_error(exc, "saving a file") from exc

    def abort(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self.abort()


class LocalBlobStore:
    """Blobs under ``root/ab/cd/<sha256>``; temp files under ``tmp_dir`` (same file system)."""

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        root.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise NotFound("No such blob.")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound("The file's content is missing from storage.") from exc

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put_stream(self, chunks: Iterable[bytes]) -> BlobInfo:
        with self.writer() as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()

    def put_bytes(self, data: bytes) -> BlobInfo:
        return self.put_stream([data])

    def adopt(self, path: Path, sha256: str) -> BlobInfo:
        """Move a complete, already-verified file (same file system) into the store.

        The caller vouches that ``sha256`` is the file's digest (tus uploads hash as they go).
        """
        try:
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            size = path.stat().st_size
            return self._place(path, sha256, size)
        except OSError as exc:
            raise storage_error(exc, "saving an upload") from exc

    def _place(self, tmp: Path, sha256: str, size: int) -> BlobInfo:
        dest = self.path(sha256)
        if dest.exists():
            # Same content already stored: keep the old one, drop the duplicate.
            tmp.unlink()
            # Refresh mtime so a concurrent collector's grace period protects it again.
            with contextlib.suppress(OSError):
                os.utime(dest)
            return BlobInfo(sha256, size)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return BlobInfo(sha256, size)

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError as exc:
            raise NotFound("The file's content is missing from storage.") from exc

    def iter_chunks(self, sha256: str, start: int = 0, end: int | None = None,
                    chunk: int = COPY_CHUNK) -> Iterator[bytes]:
        """Yield bytes ``[start, end)`` of a blob in chunks."""
        with self.open(sha256) as fh:
            fh.seek(start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                n = chunk if remaining is None else min(chunk, remaining)
                data = fh.read(n)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data

    def iter_digests(self) -> Iterator[tuple[str, float]]:
        """All stored digests with their modification time."""
        for p in self.root.glob("??/??/*"):
            if SHA256_RE.match(p.name):
                with contextlib.suppress(FileNotFoundError):
                    yield p.name, p.stat().st_mtime

    def collect(self, referenced: set[str], grace_seconds: float) -> int:
        """Delete blobs not in ``referenced`` and older than the grace period; return count.

        The grace period protects blobs written by requests that have not committed yet.
        Stale temp files older than the grace period are removed as well.
        """
        now = time.time()
        removed = 0
        for digest, mtime in list(self.iter_digests()):
            if digest not in referenced and now - mtime > grace_seconds:
                with contextlib.suppress(FileNotFoundError):
                    self.path(digest).unlink()
                    removed += 1
        for tmp in self.tmp_dir.glob("*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if now - tmp.stat().st_mtime > grace_seconds:
                    tmp.unlink()
        return removed
