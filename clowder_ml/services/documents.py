"""Documents edited in the browser: text files of a dataset, their drafts and their history.

A document is one file path in one dataset. While people edit it, its draft is a Yjs
document (the co-editing rooms in :mod:`clowder_ml.services.collab`); the draft's updates are
kept in the data folder (``DocumentStore``) so a server restart keeps unsaved work, with the
file version it started from and whether it was changed since (``DraftMeta``): a draft
nobody changed follows a newer version of the file, one with unsaved changes is kept.
Saving writes the draft's text as the file in a new dataset version; the file's history is
the list of versions in which its content changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from clowder_ml.db.models import Dataset, DatasetVersion, Permission, User, VersionFile
from clowder_ml.db.session import Database
from clowder_ml.errors import NotFound, PayloadTooLarge, ValidationFailed
from clowder_ml.services import datasets, files
from clowder_ml.services.paths import normalize_path
from clowder_ml.settings import Settings
from clowder_ml.storage import LocalBlobStore

# Larger files are not opened in the editor (a browser editor is for code and configs).
MAX_DOCUMENT_BYTES = 1 << 20
# A draft whose update log grows past this is rewritten as one state update.
COMPACT_AT_BYTES = 4 << 20
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class DocumentRef:
    """A dataset file as a document. ``room`` names its co-editing room."""

    dataset_id: str
    path: str

    @property
    def room(self) -> str:
        return f"{self.dataset_id}/{self.path}"

    @classmethod
    def from_room(cls, room: str) -> DocumentRef:
        dataset_id, _, path = room.partition("/")
        return cls(dataset_id, normalize_path(path))


@dataclass(frozen=True)
class Access:
    """What one user may do with one document (found by ``open_document``)."""

    doc: DocumentRef
    dataset_name: str
    writable: bool


@dataclass(frozen=True)
class DraftMeta:
    """``base``: sha256 of the file's content the draft started from or was last saved as
    ("" for a new file); ``dirty``: changed since then."""

    base: str
    dirty: bool


@dataclass(frozen=True)
class FileText:
    """A file's content in the dataset's latest version (``sha256`` "" when it has none)."""

    sha256: str
    text: str


@dataclass(frozen=True)
class Revision:
    """A dataset version in which the file's content changed (or it was removed)."""

    version: int
    sha256: str | None
    size: int
    message: str
    author: str | None
    created_at: datetime


class DocumentStore:
    """Each draft's Yjs updates in ``<root>/<dataset id>/<sha256 of path>.yupdates``.

    A file is a sequence of records (4-byte big-endian length, then the update). Appends are
    not fsynced: a crash loses at most the last keystrokes, and a torn last record is
    ignored when the file is read. ``replace`` writes a whole state atomically.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def file_for(self, doc: DocumentRef) -> Path:
        digest = hashlib.sha256(doc.path.encode()).hexdigest()
        return self.root / doc.dataset_id / f"{digest}.yupdates"

    def load(self, doc: DocumentRef) -> list[bytes] | None:
        """The updates stored for ``doc`` in order; None if it has no draft."""
        try:
            data = self.file_for(doc).read_bytes()
        except FileNotFoundError:
            return None
        updates: list[bytes] = []
        pos = 0
        while pos + _LEN.size <= len(data):
            (n,) = _LEN.unpack_from(data, pos)
            if pos + _LEN.size + n > len(data):
                break  # torn last record
            updates.append(data[pos + _LEN.size: pos + _LEN.size + n])
            pos += _LEN.size + n
        return updates

    def append(self, doc: DocumentRef, update: bytes) -> int:
        """Add one update; returns the draft file's size (for the compaction policy)."""
        path = self.file_for(doc)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(_LEN.pack(len(update)) + update)
            return fh.tell()

    def replace(self, doc: DocumentRef, state: bytes) -> None:
        """Make ``state`` (one update holding the whole document) the only record."""
        _write_atomically(self.file_for(doc), _LEN.pack(len(state)) + state)

    def meta(self, doc: DocumentRef) -> DraftMeta | None:
        """What the draft started from (None: a draft from before this was kept)."""
        try:
            raw = json.loads(self.file_for(doc).with_suffix(".json").read_text())
            return DraftMeta(str(raw["base"]), bool(raw["dirty"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def set_meta(self, doc: DocumentRef, meta: DraftMeta) -> None:
        data = json.dumps({"base": meta.base, "dirty": meta.dirty}).encode()
        _write_atomically(self.file_for(doc).with_suffix(".json"), data)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def open_document(db: Database, user: User, dataset_id: str, path: str) -> Access:
    """Who may edit: readers of the dataset get a read-only document, writers a writable
    one. A dataset the user cannot see is ``NotFound``, exactly like a missing one."""
    doc = DocumentRef(dataset_id, normalize_path(path))
    with db.session() as s:
        ds = datasets.resolve(s, user, dataset_id)
        if ds.id != dataset_id:  # documents are named by dataset id only
            raise NotFound(f"No dataset with id {dataset_id!r}.")
        writable = datasets.permission_of(s, user, ds) == Permission.WRITE
        return Access(doc, ds.name, writable)


def _latest_row(db: Database, doc: DocumentRef) -> VersionFile | None:
    with db.session() as s:
        ds = s.get(Dataset, doc.dataset_id)
        if ds is None:
            raise NotFound("The dataset was deleted.")
        v = datasets.get_version(s, ds, None)
        row = None if v is None else s.get(VersionFile, (v.id, doc.path))
        if row is not None:
            s.expunge(row)
        return row


def current_sha(db: Database, doc: DocumentRef) -> str:
    """sha256 of the file in the dataset's latest version ("" when it has no such file)."""
    row = _latest_row(db, doc)
    return row.sha256 if row is not None else ""


def current_file(db: Database, blobs: LocalBlobStore, doc: DocumentRef) -> FileText:
    """The file's text in the dataset's latest version ("" for a new file); refused when it
    is too large for the editor or not UTF-8 text."""
    row = _latest_row(db, doc)
    if row is None:
        return FileText("", "")
    if row.size > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"{doc.path!r} is {row.size} bytes; the editor opens files up "
                              f"to {MAX_DOCUMENT_BYTES} bytes.", "Download it instead.")
    try:
        return FileText(row.sha256, blobs.path(row.sha256).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValidationFailed(f"{doc.path!r} is not UTF-8 text; the editor opens text only.",
                               "Download it instead.") from None


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save(db: Database, blobs: LocalBlobStore, settings: Settings, user: User,
         doc: DocumentRef, text: str, message: str) -> tuple[DatasetVersion, bool]:
    """Write ``text`` as the file in a new dataset version. Returns (version, changed);
    identical content makes no new version (changed False, the latest version)."""
    data = text.encode("utf-8")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"The document is {len(data)} bytes; at most "
                              f"{MAX_DOCUMENT_BYTES} can be saved from the editor.")
    with db.session() as s:
        ds = datasets.resolve(s, user, doc.dataset_id, Permission.WRITE)
        before = ds.latest_version
    version = files.add_files(db, blobs, settings, user, ds, [(doc.path, io.BytesIO(data))],
                              message=message or f"edit {doc.path}")
    return version, version.number != before


def history(s: Session, ds: Dataset, path: str) -> list[Revision]:
    """The versions in which ``path`` was added, changed or removed, newest first."""
    p = normalize_path(path)
    rows = s.execute(
        select(DatasetVersion, VersionFile.sha256, VersionFile.size, User.username)
        .outerjoin(VersionFile, (VersionFile.version_id == DatasetVersion.id)
                   & (VersionFile.path == p))
        .outerjoin(User, User.id == DatasetVersion.created_by)
        .where(DatasetVersion.dataset_id == ds.id)
        .order_by(DatasetVersion.number)).all()
    out: list[Revision] = []
    last: str | None = None
    for version, sha, size, author in rows:
        if sha != last:
            out.append(Revision(version.number, sha, size or 0, version.message, author,
                                version.created_at))
            last = sha
    return list(reversed(out))
