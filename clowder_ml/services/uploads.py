"""Resumable uploads (tus 1.0: core, creation, creation-with-upload, termination, checksum,
expiration) into datasets.

Contract:
- The bytes of upload ``U`` accumulate in ``uploads/U.part``. The file's size *is* the offset:
  every byte in it was received in order, so after the client or the server dies the upload
  resumes from whatever reached the file.
- Each PATCH takes an exclusive ``flock`` on the part file, so two requests (even from two
  server processes) never append at once; the loser gets 423 and tus clients retry.
- The sha256 is computed as bytes arrive; after a server restart the received prefix is
  re-hashed once.
- The whole file's sha256 may be declared at creation (metadata ``sha256``) or with a PATCH
  (``Upload-Sha256``, a clowder-ml extension: the SDK hashes while it sends and declares the
  digest with the last PATCH); it is recorded before that PATCH's bytes are taken.
- When the last byte arrives, the digest is compared with the declared ``sha256``. A mismatch
  fails the upload and deletes the bytes: nothing reaches the dataset. A match makes the
  upload ``finalizing``: its bytes are complete and kept until they are committed.
- Finalizing links the file into the blob store (a hard link, no copy; zip uploads are
  unpacked safely instead) and commits a new dataset version in the same transaction that
  marks the upload ``completed``; only then is the part file removed. A failure that says
  the content is wrong (bad zip, dataset deleted) fails the upload and drops the bytes. Any
  other failure (the dataset stayed busy past its lock wait, the database or the disk
  hiccuped) keeps the upload ``finalizing``: the request gets 503 with Retry-After, a
  background loop retries with backoff, ``recover()`` retries at start-up, and an empty
  PATCH at the full offset retries at once. HEAD answers the full offset meanwhile and
  ``X-Upload-State`` says which state the upload is in.
- A finished-but-unfinalized upload (server killed between the last byte and the commit) is
  finalized by ``recover()`` at start-up.
- Everything that finalizes an upload holds the part file's ``flock``, so one upload is
  never committed twice, even by two server processes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import queue
import secrets
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from clowder_ml.db.models import (
    DatasetVersion,
    Permission,
    Upload,
    UploadState,
    User,
    utcnow,
)
from clowder_ml.db.session import Database
from clowder_ml.errors import (
    BadRequest,
    ChecksumMismatch,
    ClowderMLError,
    NotFound,
    PayloadTooLarge,
    StorageFull,
    UnsafeArchive,
    UnsupportedFormat,
    UnsupportedMediaType,
    UploadExpired,
    UploadFinalizing,
    UploadOffsetMismatch,
    ValidationFailed,
)
from clowder_ml.services import datasets
from clowder_ml.services.archives import ZipLimits, unpack_zip
from clowder_ml.services.paths import normalize_path, normalize_prefix
from clowder_ml.services.retry_loop import RetryLoop
from clowder_ml.settings import Settings
from clowder_ml.storage import BlobInfo, LocalBlobStore
from clowder_ml.storage.blobstore import SHA256_RE, storage_error

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUM_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
WRITE_BATCH = 2 << 20  # bytes gathered before they are handed to the writer thread
WRITE_QUEUE = 2  # batches that may wait for the writer (bounds memory per PATCH)
IOV_MAX = 1024  # buffers per pwritev call (Linux's limit)
TRUE_WORDS = {"1", "true", "yes", "on"}
# Failures that say a complete upload can never be committed: its content is wrong (digest,
# zip) or its target is gone. Any other failure is passing and the upload waits for a retry.
DEFINITIVE_ERRORS: tuple[type[ClowderMLError], ...] = (
    ChecksumMismatch, UnsafeArchive, UnsupportedFormat, ValidationFailed, BadRequest, NotFound,
    PayloadTooLarge)
NO_HARD_LINK = {errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}

log = logging.getLogger("clowder_ml.uploads")


class UploadLocked(ClowderMLError):
    code = "upload_locked"
    status = 423


def parse_metadata(header: str | None) -> dict[str, str]:
    """Parse tus ``Upload-Metadata`` (``key base64value`` pairs separated by commas)."""
    out: dict[str, str] = {}
    if not header:
        return out
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        if not key or key in out:
            raise BadRequest(f"Bad Upload-Metadata: empty or repeated key {key!r}.")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BadRequest(f"Bad Upload-Metadata: value of {key!r} is not base64 UTF-8.",
                             "Encode each value with base64, as tus clients do.") from exc
    return out


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    algo, _, b64 = header.strip().partition(" ")
    if algo not in CHECKSUM_ALGORITHMS:
        raise BadRequest(f"Unsupported checksum algorithm {algo!r}.",
                         f"Use one of: {', '.join(CHECKSUM_ALGORITHMS)}.")
    try:
        return algo, base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise BadRequest("Upload-Checksum value is not base64.") from exc


def parse_sha256_header(header: str | None) -> str | None:
    """``Upload-Sha256``: the whole file's sha256 (64 hex digits), declared with the PATCH
    that completes an upload (the SDK computes it while sending)."""
    if header is None:
        return None
    value = header.strip().lower()
    if not SHA256_RE.match(value):
        raise BadRequest("Upload-Sha256 must be 64 hex digits (the whole file's sha256).")
    return value


def parse_int_header(name: str, value: str | None) -> int:
    if value is None or not value.strip().isdigit():
        raise BadRequest(f"Missing or invalid {name} header (a non-negative integer).")
    return int(value)


@dataclass
class UploadStatus:
    id: str
    dataset_id: str
    path: str
    length: int
    offset: int
    state: str
    expires_at: Any
    version: int | None
    error: str | None
    metadata: dict[str, Any]


class _HashState:
    """Running sha256 of a part file's first ``offset`` bytes (kept between PATCHes)."""

    def __init__(self, offset: int, h: Any) -> None:
        self.offset = offset
        self.h = h


def _pwrite_all(fd: int, parts: list[bytes], offset: int) -> None:
    """Write ``parts`` back to back at ``offset`` (no joining copy), retrying short writes."""
    views = [memoryview(p) for p in parts]
    i = 0
    while i < len(views):
        n = os.pwritev(fd, views[i:i + IOV_MAX], offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        offset += n
        while i < len(views) and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]


def _drop_cache(fd: int, start: int, length: int) -> None:
    """Start writing a range of the part file to disk and forget the pages already written.

    Received bytes are not read again while an upload is in progress (the digest is computed
    as they arrive), so caching them only pushes everything else out of memory and makes
    every new page a fresh allocation. Dirty pages are merely queued for writeback here (the
    fsync before acknowledging an offset still decides durability); clean ones are dropped.
    ``length`` 0 means up to the end of the file. Advice only: errors are ignored.
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)


class _PartWriter:
    """Appends one PATCH's batches to the part file while the request keeps reading the body.

    Two worker threads form a pipeline: the writer writes each batch at the end of the file
    (and queues it for writeback), then the hasher adds it to the running sha256 (and the
    checksum extension's digest) and advances ``state.offset``. Only written batches are
    hashed, so ``state`` always describes a prefix of the file. The first write failure
    stops the writer (later batches are dropped) and is kept in ``error``; a short write may
    leave the file longer than ``state.offset``, and the next PATCH then re-hashes it.
    """

    def __init__(self, fd: int, state: _HashState, chunk_hash: Any) -> None:
        self.fd = fd
        self.state = state
        self.chunk_hash = chunk_hash
        self.error: BaseException | None = None
        self._end = state.offset  # where the next batch is written
        self._kicked = state.offset  # writeback was already started below this offset
        self._to_write: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=WRITE_QUEUE)
        self._to_hash: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=WRITE_QUEUE)
        hasher = threading.Thread(target=self._hash_loop, name="upload-hasher", daemon=True)
        writer = threading.Thread(target=self._write_loop, name="upload-writer", daemon=True)
        hasher.start()
        try:
            writer.start()
        except BaseException:
            self._to_hash.put(None)
            raise
        self._threads = [writer, hasher]

    async def put(self, parts: list[bytes]) -> None:
        """Queue a batch (waiting while the queue is full); raise the writer's error."""
        if self.error is not None:
            raise self.error
        try:
            self._to_write.put_nowait(parts)
        except queue.Full:
            await anyio.to_thread.run_sync(self._to_write.put, parts)

    async def close(self, last: list[bytes]) -> None:
        """Write and hash ``last`` and everything queued, then stop. Waits even when the
        request is cancelled: the part file's lock must outlive every write."""
        with anyio.CancelScope(shield=True):
            if last:
                await anyio.to_thread.run_sync(self._to_write.put, last)
            await anyio.to_thread.run_sync(self._to_write.put, None)
            for t in self._threads:
                await anyio.to_thread.run_sync(t.join)

    def _write_loop(self) -> None:
        try:
            while (parts := self._to_write.get()) is not None:
                if self.error is None:
                    try:
                        self._write(parts)
                    except BaseException as exc:
                        self.error = exc
                    else:
                        self._to_hash.put(parts)
        finally:
            self._to_hash.put(None)

    def _write(self, parts: list[bytes]) -> None:
        try:
            _pwrite_all(self.fd, parts, self._end)
        except OSError as exc:
            raise storage_error(exc, "receiving an upload") from exc
        self._end += sum(len(p) for p in parts)
        # Queue the new bytes for writeback and drop the earlier ones already on disk.
        _drop_cache(self.fd, self._kicked, self._end - self._kicked)
        self._kicked = max(self._kicked, self._end - 2 * WRITE_BATCH)

    def _hash_loop(self) -> None:
        # Drains the queue even after a failure, so the writer never blocks on it. A failure
        # mid-batch leaves ``state.offset`` below the file's size: the next PATCH re-hashes.
        st = self.state
        failed = False
        while (parts := self._to_hash.get()) is not None:
            if failed:
                continue
            try:
                for p in parts:
                    st.h.update(p)
                    if self.chunk_hash is not None:
                        self.chunk_hash.update(p)
                st.offset += sum(len(p) for p in parts)
            except BaseException as exc:
                failed = True
                self.error = self.error or exc


class _UploadGone(Exception):
    """The upload was completed or deleted by someone else while this commit ran."""


class UploadService:
    def __init__(self, settings: Settings, db: Database, blobs: LocalBlobStore) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.dir = settings.uploads_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._hashes: dict[str, _HashState] = {}
        # Retries the commit of uploads left finalizing by a passing failure.
        self.retries = RetryLoop(self.retry_finalizing, name="upload-finalizer")

    def close(self) -> None:
        """Stop the background retries (at server shutdown); pending uploads stay
        finalizing and ``recover()`` picks them up at the next start."""
        self.retries.close()

    # helpers -------------------------------------------------------------------------

    def part(self, upload_id: str) -> Path:
        return self.dir / f"{upload_id}.part"

    def _zip_limits(self) -> ZipLimits:
        st = self.settings
        return ZipLimits(st.zip_max_total_bytes, st.zip_max_ratio, st.zip_max_entries)

    def _received(self, upload_id: str) -> int:
        try:
            return self.part(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def _load(self, user: User, upload_id: str) -> Upload:
        """The user's upload or NotFound (uploads are private to their creator)."""
        with self.db.session() as s:
            up = s.get(Upload, upload_id)
            if up is None or (up.owner_id != user.id):
                raise NotFound("No such upload.", "Start a new upload.")
            s.expunge(up)
            return up

    def _status(self, up: Upload) -> UploadStatus:
        complete = up.state in (UploadState.COMPLETED, UploadState.FINALIZING)
        offset = up.length if complete else min(self._received(up.id), up.length)
        return UploadStatus(up.id, up.dataset_id, up.path, up.length, offset, up.state,
                            up.expires_at, up.version, up.error, dict(up.metadata_))

    # creation ------------------------------------------------------------------------

    def create(self, user: User, length: int, metadata: dict[str, str]) -> UploadStatus:
        """Register a new upload into ``metadata['dataset']`` at ``metadata['path']``."""
        if length > self.settings.max_upload_bytes:
            raise PayloadTooLarge(f"Upload of {length} bytes exceeds the limit of "
                                  f"{self.settings.max_upload_bytes} bytes.")
        ref = metadata.get("dataset")
        if not ref:
            raise ValidationFailed("Upload-Metadata must name the target 'dataset'.",
                                   "Add metadata dataset=<name or id>.")
        unpack = metadata.get("unpack", "").lower() in TRUE_WORDS
        if unpack:
            # A zip is unpacked under the folder 'prefix' (the dataset root by default).
            path = normalize_prefix(metadata.get("prefix"))
        else:
            path_meta = metadata.get("path") or metadata.get("filename")
            if not path_meta:
                raise ValidationFailed("Upload-Metadata must give the file's 'path'.",
                                       "Add metadata path=<folder/file.ext>.")
            path = normalize_path(path_meta)
        sha = metadata.get("sha256", "").lower() or None
        if sha is not None and not SHA256_RE.match(sha):
            raise ValidationFailed("Upload-Metadata 'sha256' must be 64 hex digits.")
        free = shutil.disk_usage(self.dir).free
        if length > free:
            raise StorageFull(f"Not enough disk space for {length} bytes ({free} free).",
                              "Free space in the data folder or upload a smaller file.")
        with self.db.session() as s:
            ds = datasets.resolve(s, user, ref, Permission.WRITE)
            up = Upload(
                id=secrets.token_hex(16), owner_id=user.id, dataset_id=ds.id, path=path,
                sha256=sha or "", length=length, unpack=unpack,
                metadata_={k: v for k, v in metadata.items()
                           if k not in ("dataset", "path", "sha256", "unpack", "prefix")},
                expires_at=utcnow() + timedelta(hours=self.settings.upload_expiry_hours),
            )
            try:
                self.part(up.id).touch(exist_ok=False)
            except OSError as exc:
                raise storage_error(exc, "starting an upload") from exc
            s.add(up)
            s.flush()
            s.expunge(up)
        self._hashes[up.id] = _HashState(0, hashlib.sha256())
        return self._status(up)

    def status(self, user: User, upload_id: str) -> UploadStatus:
        """State of any of the user's uploads, including failed and completed ones."""
        return self._status(self._load(user, upload_id))

    def head(self, user: User, upload_id: str) -> UploadStatus:
        up = self._load(user, upload_id)
        self._check_usable(up, allow_completed=True)
        return self._status(up)

    def _check_usable(self, up: Upload, *, allow_completed: bool = False) -> None:
        if up.state == UploadState.FAILED:
            raise UploadExpired(f"This upload failed: {up.error}", "Start a new upload.")
        if up.state == UploadState.COMPLETED and not allow_completed:
            raise UploadOffsetMismatch("This upload is already complete.")
        if up.state == UploadState.RECEIVING and up.expires_at <= utcnow():
            raise UploadExpired("This upload expired before it was finished.",
                                "Start a new upload.")

    # appending -----------------------------------------------------------------------

    async def append(self, user: User, upload_id: str, offset: int, content_type: str | None,
                     body: AsyncIterator[bytes], checksum_header: str | None,
                     sha256_header: str | None = None) -> UploadStatus:
        """Append a PATCH body at ``offset``; finalize when the upload is complete.

        ``sha256_header`` (``Upload-Sha256``) is the whole file's digest, recorded as if
        declared at creation (a different one declared before answers 460) and checked when
        the last byte arrives."""
        if (content_type or "").split(";")[0].strip().lower() != OFFSET_CONTENT_TYPE:
            raise UnsupportedMediaType(f"PATCH needs Content-Type: {OFFSET_CONTENT_TYPE}.")
        checksum = parse_checksum(checksum_header)
        declared = parse_sha256_header(sha256_header)
        up = await anyio.to_thread.run_sync(self._load, user, upload_id)
        if up.state in (UploadState.FINALIZING, UploadState.COMPLETED):
            return await self._finish_again(up, offset, body)
        self._check_usable(up)
        fh = await anyio.to_thread.run_sync(self._open_locked, upload_id)
        try:
            current = os.fstat(fh.fileno()).st_size
            if offset != current:
                raise UploadOffsetMismatch(
                    f"Upload-Offset {offset} does not match the {current} bytes received.",
                    "Ask the server for the offset (HEAD) and resume from there.")
            if declared:
                await anyio.to_thread.run_sync(self._declare, upload_id, declared)
            state = self._hashes.get(upload_id)
            if state is None or state.offset != current:
                state = await anyio.to_thread.run_sync(self._rehash, fh, current)
                self._hashes[upload_id] = state
            start_hash = state.h.copy()
            chunk_hash = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
            try:
                await self._receive(fh, state, body, up.length, chunk_hash)
            except BaseException:
                # With a checksum the chunk is all-or-nothing; without, every byte that
                # reached the file is good and stays (the client resumes after it).
                if checksum:
                    await anyio.to_thread.run_sync(self._truncate, fh, state, current,
                                                   start_hash)
                else:
                    await anyio.to_thread.run_sync(self._sync, fh, up.id, state.offset)
                raise
            if checksum and chunk_hash is not None and chunk_hash.digest() != checksum[1]:
                await anyio.to_thread.run_sync(self._truncate, fh, state, current, start_hash)
                raise ChecksumMismatch("The chunk's checksum does not match its bytes.",
                                       "Resend the chunk.")
            await anyio.to_thread.run_sync(self._sync, fh, up.id, state.offset)
            if state.offset == up.length:
                await anyio.to_thread.run_sync(self._finalize, up.id, state.h.hexdigest())
        finally:
            fh.close()  # releases the flock
        return await anyio.to_thread.run_sync(self.head_any, upload_id)

    async def _finish_again(self, up: Upload, offset: int, body: AsyncIterator[bytes],
                            ) -> UploadStatus:
        """A PATCH to an upload whose bytes all arrived. It may send nothing more. Empty at
        the full offset it is a harmless repeat of the last PATCH (a client retrying after
        a 503): a finalizing upload retries its commit now, a completed one just answers."""
        hint = ("Nothing is missing. An empty PATCH at the full offset retries adding the "
                "file to the dataset now; the server also retries by itself.")
        if offset != up.length:
            raise UploadOffsetMismatch(
                f"Upload-Offset {offset}: all {up.length} bytes were already received.", hint)
        async for chunk in body:
            if chunk:
                raise UploadOffsetMismatch("Every byte of this upload was already received.",
                                           hint)
        if up.state == UploadState.COMPLETED:
            return self._status(up)
        fh = await anyio.to_thread.run_sync(self._open_locked, up.id)
        try:
            await anyio.to_thread.run_sync(self._commit_pending, up.id)
        finally:
            fh.close()
        return await anyio.to_thread.run_sync(self.head_any, up.id)

    def head_any(self, upload_id: str) -> UploadStatus:
        with self.db.session() as s:
            up = s.get(Upload, upload_id)
            if up is None:
                raise NotFound("No such upload.")
            s.expunge(up)
        return self._status(up)

    def _open_locked(self, upload_id: str) -> BinaryIO:
        try:
            fh = open(self.part(upload_id), "r+b")  # noqa: SIM115
        except FileNotFoundError as exc:
            raise NotFound("The upload's data is gone.", "Start a new upload.") from exc
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise UploadLocked("Another request is writing to this upload.",
                               "Retry in a moment.") from exc
        fh.seek(0, os.SEEK_END)
        return fh

    @staticmethod
    def _rehash(fh: BinaryIO, upto: int) -> _HashState:
        h = hashlib.sha256()
        fh.seek(0)
        left = upto
        while left > 0:
            data = fh.read(min(8 << 20, left))
            if not data:
                break
            h.update(data)
            left -= len(data)
        fh.seek(0, os.SEEK_END)
        return _HashState(upto, h)

    async def _receive(self, fh: BinaryIO, state: _HashState, body: AsyncIterator[bytes],
                       length: int, chunk_hash: Any) -> None:
        """Read the body and hand it in batches to a writer thread, so receiving, writing and
        hashing overlap. Returns (or raises) only after every received byte is written."""
        writer = _PartWriter(fh.fileno(), state, chunk_hash)
        buf: list[bytes] = []
        size = 0
        received = state.offset
        try:
            async for chunk in body:
                if not chunk:
                    continue
                if received + len(chunk) > length:
                    raise PayloadTooLarge(
                        f"The request sends more than the declared Upload-Length ({length}).")
                buf.append(chunk)
                size += len(chunk)
                received += len(chunk)
                if size >= WRITE_BATCH:
                    parts, buf, size = buf, [], 0
                    await writer.put(parts)
        finally:
            # Keep whatever arrived even if the client went away mid-request; never return
            # (and so never release the flock) while the writer may still write.
            await writer.close(buf)
        if writer.error is not None:
            raise writer.error

    def _truncate(self, fh: BinaryIO, state: _HashState, to: int, h: Any) -> None:
        fh.flush()
        fh.truncate(to)
        fh.seek(0, os.SEEK_END)
        state.offset, state.h = to, h

    def _sync(self, fh: BinaryIO, upload_id: str, offset: int) -> None:
        try:
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:
            raise storage_error(exc, "saving an upload") from exc
        _drop_cache(fh.fileno(), 0, 0)  # all on disk now: free the cached pages
        with self.db.session() as s:
            up = s.get(Upload, upload_id)
            if up is not None:
                up.offset = offset

    # finishing -----------------------------------------------------------------------

    def _declare(self, upload_id: str, declared: str) -> None:
        """Record the whole file's sha256 sent with a PATCH (before its bytes are taken, so
        a server killed before the check still checks it at start-up)."""
        with self.db.session() as s:
            row = s.get(Upload, upload_id)
            if row is None:
                return
            if row.sha256 and row.sha256 != declared:
                raise ChecksumMismatch(
                    f"Upload-Sha256 {declared} differs from the sha256 {row.sha256} declared "
                    "for this upload.", "Declare the file's digest once, or the same both "
                    "times; nothing of this request was stored.")
            row.sha256 = declared

    def _finalize(self, upload_id: str, digest: str) -> None:
        """Check a complete upload's digest against the sha256 declared for it (at creation
        or with a PATCH), then commit it. The caller holds the part file's lock.
        Idempotent: only an upload still receiving is checked."""
        wrong: str | None = None
        with self.db.session() as s:
            row = s.get(Upload, upload_id)
            if row is None or row.state != UploadState.RECEIVING:
                return
            if row.sha256 and digest != row.sha256:
                wrong = row.sha256
                row.state, row.error = UploadState.FAILED.value, (
                    f"sha256 mismatch: declared {wrong}, received {digest}")
            else:
                # From here the bytes are complete and verified: they are kept until
                # committed, whatever fails in between.
                row.state, row.offset = UploadState.FINALIZING.value, row.length
                if not row.unpack:  # a zip's entries carry their own digests
                    row.sha256 = digest
            s.flush()
            s.expunge(row)
        self._hashes.pop(upload_id, None)
        if wrong is not None:
            with contextlib.suppress(FileNotFoundError):
                self.part(upload_id).unlink()
            raise ChecksumMismatch(
                f"The uploaded bytes hash to {digest}, not the declared sha256 {wrong}.",
                "The file changed or was corrupted in transit; nothing was added to the "
                "dataset. Upload it again.")
        self._commit_upload(row)

    def _commit_pending(self, upload_id: str) -> None:
        """Commit a finalizing upload (the caller holds the part file's lock)."""
        with self.db.session() as s:
            row = s.get(Upload, upload_id)
            if row is None or row.state != UploadState.FINALIZING:
                return
            s.expunge(row)
        self._commit_upload(row)

    def _commit_upload(self, up: Upload) -> None:
        """Add a finalizing upload to its dataset; remove the part file once committed.

        A definitive failure fails the upload and drops its bytes (and is raised); any other
        keeps it finalizing for the retries and raises ``UploadFinalizing`` (503).
        """
        part = self.part(up.id)
        try:
            adds = self._blobs_for(up, part)
            datasets.commit_changes(self.db, up.dataset_id, up.owner_id, adds,
                                    message=f"upload {up.path or 'archive'}",
                                    also=lambda s, v: self._mark_completed(s, up.id, v))
        except _UploadGone:
            return  # completed by another process, or terminated: its part is theirs
        except DEFINITIVE_ERRORS as exc:
            self._fail(up.id, exc.message)
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise
        except Exception as exc:
            reason = exc.message if isinstance(exc, ClowderMLError) else (
                f"{type(exc).__name__}: {exc}")
            log.warning("upload kept for a retry of its commit", extra={
                "upload_id": up.id, "dataset_id": up.dataset_id, "reason": reason})
            self._note_pending(up.id, reason)
            self.retries.poke()
            raise UploadFinalizing(
                f"All {up.length} bytes arrived and are kept, but adding them to the "
                f"dataset failed for now ({reason}).",
                "Nothing needs to be sent again: the server retries by itself. HEAD or GET "
                "this upload to see when it is completed.") from exc
        with contextlib.suppress(FileNotFoundError):
            part.unlink()

    def _blobs_for(self, up: Upload, part: Path) -> dict[str, BlobInfo]:
        """The blobs a finalizing upload adds, made from its part file, which stays."""
        if up.unpack:
            if not part.exists():
                raise NotFound("The upload's bytes are gone.", "Upload the archive again.")
            return unpack_zip(part, self.blobs, self._zip_limits(), prefix=up.path)
        if not part.exists():
            # A crash after an earlier attempt linked the blob but before it was committed
            # and the part removed cannot happen (removal follows the commit); a blob
            # already stored under the digest is still good.
            if self.blobs.exists(up.sha256):
                return {up.path: BlobInfo(up.sha256, self.blobs.size(up.sha256))}
            raise NotFound("The upload's bytes are gone.", "Upload the file again.")
        link = self.blobs.tmp_dir / f"upload-{up.id}-{secrets.token_hex(4)}.tmp"
        try:
            os.link(part, link)
        except OSError as exc:
            if exc.errno not in NO_HARD_LINK:
                raise storage_error(exc, "adding an upload to the store") from exc
            with open(part, "rb") as src:  # a file system without hard links: copy
                blob = self.blobs.put_stream(iter(lambda: src.read(8 << 20), b""))
            if blob.sha256 != up.sha256:
                raise ChecksumMismatch("The upload's bytes changed on the server's disk.",
                                       "Upload the file again.") from exc
            return {up.path: blob}
        try:
            # A fresh mtime: the blob collector's grace period protects the new blob until
            # the commit references it, however long ago the last byte arrived.
            os.utime(link)
        except OSError as exc:
            link.unlink(missing_ok=True)
            raise storage_error(exc, "adding an upload to the store") from exc
        return {up.path: self.blobs.adopt(link, up.sha256)}

    @staticmethod
    def _mark_completed(s: Session, upload_id: str, version: DatasetVersion) -> None:
        """In the commit's transaction: the upload is completed with this version."""
        res = s.execute(update(Upload).where(
            Upload.id == upload_id, Upload.state == UploadState.FINALIZING.value).values(
            state=UploadState.COMPLETED.value, offset=Upload.length, version=version.number,
            error=None))
        if res.rowcount != 1:  # type: ignore[attr-defined]
            raise _UploadGone(upload_id)

    def _note_pending(self, upload_id: str, reason: str) -> None:
        """Record why a finalizing upload waits (GET shows it); best effort."""
        with contextlib.suppress(Exception), self.db.session() as s:
            s.execute(update(Upload).where(
                Upload.id == upload_id, Upload.state == UploadState.FINALIZING.value,
            ).values(error=f"waiting to be added to the dataset: {reason}"[:2000]))

    def _fail(self, upload_id: str, reason: str) -> None:
        with self.db.session() as s:
            row = s.get(Upload, upload_id)
            if row is not None:
                row.state = UploadState.FAILED.value
                row.error = reason

    def terminate(self, user: User, upload_id: str) -> None:
        up = self._load(user, upload_id)
        fh = self._open_locked(upload_id) if self.part(upload_id).exists() else None
        try:
            with self.db.session() as s:
                row = s.get(Upload, up.id)
                if row is not None:
                    s.delete(row)
            with contextlib.suppress(FileNotFoundError):
                self.part(upload_id).unlink()
            self._hashes.pop(upload_id, None)
        finally:
            if fh is not None:
                fh.close()

    def expire(self, orphan_grace_seconds: float | None = None) -> int:
        """Drop unfinished uploads past their expiry; return how many.

        Also deletes part files that no receiving upload owns any more (their dataset was
        deleted mid-upload) once they are older than the grace period; the grace protects
        a part file created a moment before its row is committed.
        """
        now = utcnow()
        with self.db.session() as s:
            rows = list(s.scalars(select(Upload).where(
                Upload.state == UploadState.RECEIVING.value, Upload.expires_at <= now)))
            for row in rows:
                with contextlib.suppress(FileNotFoundError):
                    self.part(row.id).unlink()
                self._hashes.pop(row.id, None)
                s.delete(row)
            live = set(s.scalars(select(Upload.id).where(Upload.state.in_(
                (UploadState.RECEIVING.value, UploadState.FINALIZING.value)))))
        grace = (self.settings.gc_grace_seconds if orphan_grace_seconds is None
                 else orphan_grace_seconds)
        for part in self.dir.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if part.stem not in live and now.timestamp() - part.stat().st_mtime > grace:
                    part.unlink()
        return len(rows)

    def recover(self) -> int:
        """At start-up: finalize uploads whose bytes all arrived but were not committed
        (the server died, or the commit failed for a passing reason). Returns how many were
        tried; those that fail again for a passing reason are left to the retries."""
        with self.db.session() as s:
            rows = [(u.id, u.length) for u in s.scalars(select(Upload).where(
                Upload.state == UploadState.RECEIVING.value))]
            pending = s.scalar(select(func.count()).select_from(Upload).where(
                Upload.state == UploadState.FINALIZING.value)) or 0
        done = 0
        for upload_id, length in rows:
            if self._received(upload_id) != length:
                continue
            with contextlib.suppress(ClowderMLError):
                fh = self._open_locked(upload_id)
                try:
                    self._finalize(upload_id, self._rehash(fh, length).h.hexdigest())
                finally:
                    fh.close()
            done += 1
        if pending and self.retry_finalizing():
            self.retries.poke()
        return done + pending

    def retry_finalizing(self) -> int:
        """One pass over the finalizing uploads (oldest first); returns how many still
        wait. Uploads another request or process is finalizing right now are skipped (and
        counted as waiting)."""
        with self.db.session() as s:
            ids = list(s.scalars(select(Upload.id).where(
                Upload.state == UploadState.FINALIZING.value).order_by(Upload.created_at)))
        left = 0
        for upload_id in ids:
            try:
                fh = self._open_locked(upload_id)
            except UploadLocked:
                left += 1
                continue
            except NotFound:
                fh = None  # the part is gone; a blob stored under its digest may still do
            try:
                self._commit_pending(upload_id)
            except UploadFinalizing:
                left += 1
            except ClowderMLError:
                pass  # failed for good; recorded on the upload
            finally:
                if fh is not None:
                    fh.close()
        return left
