"""Datasets: ownership, sharing, immutable versions, files, tree and metadata.

Access rule: a dataset is visible to its owner, to users it is shared with, and to admins.
For everyone else every operation answers ``NotFound``, exactly as for a dataset that does
not exist. A user with read access who tries to write gets ``PermissionDenied``.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import delete, insert, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, lazyload

from clowder_ml.db.models import (
    Dataset,
    DatasetShare,
    DatasetVersion,
    FileMetadata,
    Permission,
    Upload,
    User,
    VersionFile,
    utcnow,
)
from clowder_ml.db.session import Database, LockWaitTimeout
from clowder_ml.errors import (
    AlreadyExists,
    Conflict,
    DatasetBusy,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from clowder_ml.services.paths import normalize_path, normalize_prefix
from clowder_ml.storage import BlobInfo

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ID_PREFIX = "ds_"
MAX_VERSION = 2**31 - 1  # version numbers are 32-bit integers in the database
SLOW_COMMIT_WAIT_S = 1.0  # commit lock waits at least this long are logged
LOOKUP_BATCH = 500  # names per IN (...) query (SQLite caps the number of parameters)

log = logging.getLogger("clowder_ml.datasets")
COMMIT_WAIT = Histogram(
    "clowder_ml_dataset_commit_wait_seconds",
    "Time a dataset change waited for the dataset's commit lock",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
COMMIT_TIMEOUTS = Counter(
    "clowder_ml_dataset_commit_timeouts_total",
    "Dataset changes refused (503) because the commit lock wait ran out")


def _not_found(ref: str) -> NotFound:
    return NotFound(f"Dataset {ref!r} not found.", "List yours with `clowder-ml datasets ls`.")


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValidationFailed(
            f"Invalid dataset name {name!r}.",
            "Use up to 128 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    return name


def permission_of(s: Session, user: User, ds: Dataset) -> Permission | None:
    """The user's permission on ``ds``: owners and admins write, shares as granted."""
    if user.is_admin or ds.owner_id == user.id:
        return Permission.WRITE
    share = s.get(DatasetShare, (ds.id, user.id))
    return Permission(share.permission) if share else None


def resolve(s: Session, user: User, ref: str, need: Permission = Permission.READ) -> Dataset:
    """Find a dataset by id, the user's own name, a unique shared name, or 'owner:name'
    ('owner/name' too, where no URL is involved).

    Raises ``NotFound`` when it does not exist *or* is not visible to ``user``.
    """
    ds: Dataset | None = None
    if ref.startswith(ID_PREFIX):
        ds = s.get(Dataset, ref)
    elif ":" in ref or "/" in ref:
        owner_name, _, name = ref.replace("/", ":", 1).partition(":")
        ds = s.scalar(select(Dataset).join(User, User.id == Dataset.owner_id)
                      .where(User.username == owner_name, Dataset.name == name))
    else:
        ds = s.scalar(select(Dataset).where(Dataset.owner_id == user.id, Dataset.name == ref))
        if ds is None:
            shared = list(s.scalars(
                select(Dataset).join(DatasetShare, DatasetShare.dataset_id == Dataset.id)
                .where(DatasetShare.user_id == user.id, Dataset.name == ref)))
            if len(shared) == 1:
                ds = shared[0]
            elif len(shared) > 1:
                raise Conflict(f"Several datasets shared with you are named {ref!r}.",
                               "Name it as 'owner:name' or by its id.")
    if ds is None:
        raise _not_found(ref)
    perm = permission_of(s, user, ds)
    if perm is None:
        raise _not_found(ref)
    if need == Permission.WRITE and perm != Permission.WRITE:
        raise PermissionDenied(f"You have read-only access to dataset {ref!r}.",
                               "Ask its owner to share it with write permission.")
    return ds


def create(s: Session, owner: User, name: str, description: str = "",
           metadata: Mapping[str, Any] | None = None) -> Dataset:
    validate_name(name)
    exists = s.scalar(select(Dataset.id).where(Dataset.owner_id == owner.id, Dataset.name == name))
    if exists:
        raise AlreadyExists(f"You already have a dataset named {name!r}.")
    ds = Dataset(id=ID_PREFIX + secrets.token_hex(8), owner_id=owner.id, name=name,
                 description=description, metadata_=dict(metadata or {}))
    s.add(ds)
    try:
        s.flush()
    except IntegrityError as exc:  # a concurrent create with the same name
        raise AlreadyExists(f"You already have a dataset named {name!r}.") from exc
    s.refresh(ds)
    return ds


def list_visible(s: Session, user: User) -> list[Dataset]:
    q = select(Dataset).order_by(Dataset.created_at)
    if not user.is_admin:
        shared = select(DatasetShare.dataset_id).where(DatasetShare.user_id == user.id)
        q = q.where(or_(Dataset.owner_id == user.id, Dataset.id.in_(shared)))
    return list(s.scalars(q))


def update_info(s: Session, ds: Dataset, description: str | None,
                metadata: Mapping[str, Any] | None) -> Dataset:
    if description is not None:
        ds.description = description
    if metadata is not None:
        ds.metadata_ = dict(metadata)
    ds.updated_at = utcnow()
    return ds


def remove(s: Session, user: User, ds: Dataset) -> None:
    """Delete a dataset (owner or admin only). Its blobs are collected later if unreferenced."""
    if not (user.is_admin or ds.owner_id == user.id):
        raise PermissionDenied("Only the owner can delete a dataset.")
    s.execute(delete(Upload).where(Upload.dataset_id == ds.id))
    version_ids = select(DatasetVersion.id).where(DatasetVersion.dataset_id == ds.id)
    s.execute(delete(VersionFile).where(VersionFile.version_id.in_(version_ids)))
    s.execute(delete(DatasetVersion).where(DatasetVersion.dataset_id == ds.id))
    s.execute(delete(FileMetadata).where(FileMetadata.dataset_id == ds.id))
    s.execute(delete(DatasetShare).where(DatasetShare.dataset_id == ds.id))
    s.delete(ds)


# Sharing -------------------------------------------------------------------------------

def share(s: Session, actor: User, ds: Dataset, target: User, permission: Permission) -> None:
    if not (actor.is_admin or ds.owner_id == actor.id):
        raise PermissionDenied("Only the owner can share a dataset.")
    if target.id == ds.owner_id:
        raise ValidationFailed("The owner always has full access.")
    row = s.get(DatasetShare, (ds.id, target.id))
    if row is None:
        s.add(DatasetShare(dataset_id=ds.id, user_id=target.id, permission=permission.value))
    else:
        row.permission = permission.value


def unshare(s: Session, actor: User, ds: Dataset, target: User) -> None:
    if not (actor.is_admin or ds.owner_id == actor.id):
        raise PermissionDenied("Only the owner can change sharing.")
    row = s.get(DatasetShare, (ds.id, target.id))
    if row is None:
        raise NotFound(f"Dataset is not shared with {target.username!r}.")
    s.delete(row)


def shares(s: Session, ds: Dataset) -> list[DatasetShare]:
    return list(s.scalars(select(DatasetShare).where(DatasetShare.dataset_id == ds.id)))


# Versions ------------------------------------------------------------------------------

def get_version(s: Session, ds: Dataset, number: int | None) -> DatasetVersion | None:
    """The given version, or the latest when ``number`` is None (None if the dataset is empty)."""
    n = ds.latest_version if number is None else number
    if n == 0 and number is None:
        return None
    v = s.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id,
                                              DatasetVersion.number == n))
    if v is None:
        raise NotFound(f"Dataset {ds.name!r} has no version {n}.",
                       f"It has versions 1 to {ds.latest_version}." if ds.latest_version
                       else "It has no files yet.")
    return v


def list_versions(s: Session, ds: Dataset) -> list[DatasetVersion]:
    return list(s.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id)
                          .order_by(DatasetVersion.number)))


def files(s: Session, ds: Dataset, number: int | None = None, prefix: str | None = None,
          ) -> list[VersionFile]:
    v = get_version(s, ds, number)
    if v is None:
        return []
    q = select(VersionFile).where(VersionFile.version_id == v.id).order_by(VersionFile.path)
    pre = normalize_prefix(prefix)
    if pre:
        q = q.where(VersionFile.path.startswith(pre + "/", autoescape=True))
    return list(s.scalars(q))


def _file_rows(s: Session, ds: Dataset, number: int | None, pre: str,
               ) -> list[tuple[str, int, str]]:
    """(path, size, sha256) of the files under folder ``pre``: plain rows, no ORM objects
    (a tree of a large version reads every row of its manifest)."""
    v = get_version(s, ds, number)
    if v is None:
        return []
    q = select(VersionFile.path, VersionFile.size, VersionFile.sha256).where(
        VersionFile.version_id == v.id).order_by(VersionFile.path)
    if pre:
        q = q.where(VersionFile.path.startswith(pre + "/", autoescape=True))
    return list(s.execute(q).tuples())


def get_file(s: Session, ds: Dataset, path: str, number: int | None = None) -> VersionFile:
    p = normalize_path(path)
    v = get_version(s, ds, number)
    row = None if v is None else s.get(VersionFile, (v.id, p))
    if row is None:
        raise NotFound(f"No file {p!r} in dataset {ds.name!r}"
                       + (f" version {v.number}." if v else "."))
    return row


@dataclass
class TreeNode:
    name: str
    path: str
    kind: str  # "folder" | "file"
    size: int
    files: int
    sha256: str | None = None


def tree(s: Session, ds: Dataset, number: int | None = None, prefix: str | None = None,
         ) -> list[TreeNode]:
    """Direct children of folder ``prefix``: sub-folders (with file count and size) and files."""
    pre = normalize_prefix(prefix)
    entries = _file_rows(s, ds, number, pre)
    if pre and not entries:
        raise NotFound(f"No folder {pre!r} in dataset {ds.name!r}.")
    start = len(pre) + 1 if pre else 0
    folders: dict[str, TreeNode] = {}
    out: list[TreeNode] = []
    for path, size, sha256 in entries:
        rest = path[start:]
        head, sep, _ = rest.partition("/")
        if sep:
            node = folders.get(head)
            if node is None:
                node = folders[head] = TreeNode(head, path[: start + len(head)], "folder", 0, 0)
            node.size += size
            node.files += 1
        else:
            out.append(TreeNode(rest, path, "file", size, 1, sha256))
    return sorted(folders.values(), key=lambda n: n.name) + out


def commit_changes(db: Database, ds_id: str, actor_id: int, adds: Mapping[str, BlobInfo],
                   removes: set[str] | frozenset[str] = frozenset(), message: str = "", *,
                   also: Callable[[Session, DatasetVersion], None] | None = None,
                   ) -> DatasetVersion:
    """Create the next immutable version: the latest files, minus ``removes``, plus ``adds``.

    Commits to one dataset are serialized, not raced: each takes the dataset's commit lock
    (its row ``FOR NO KEY UPDATE`` on PostgreSQL; the database's write lock, ``BEGIN
    IMMEDIATE``, on SQLite) before it reads the latest version, so N concurrent changes make
    N successive versions and none is refused for contention. The wait is bounded by
    ``db.lock_wait_s``; when it runs out this raises ``DatasetBusy`` (503 with Retry-After)
    and nothing changed. Every wait is observed in ``clowder_ml_dataset_commit_wait_seconds``;
    waits over a second are logged.

    ``also(session, version)`` runs in the same transaction once the version is known (also
    when identical files make no new version), so a caller's bookkeeping lands atomically
    with the version; whatever it raises rolls both back.
    """
    for path in removes:
        normalize_path(path)
    adds = {normalize_path(p): b for p, b in adds.items()}
    started = time.monotonic()
    try:
        with db.serialized_session(ds_id) as s:
            # FOR NO KEY UPDATE: rows that reference the dataset (new uploads) still insert.
            ds = s.scalar(select(Dataset).where(Dataset.id == ds_id)
                          .options(lazyload(Dataset.owner))  # no outer join under the lock
                          .with_for_update(key_share=True)
                          .execution_options(populate_existing=True))
            waited = time.monotonic() - started
            COMMIT_WAIT.observe(waited)
            if ds is None:
                raise NotFound("The dataset was deleted while the change was in progress.")
            version = _commit_once(s, ds, actor_id, adds, set(removes), message)
            if also is not None:
                also(s, version)
    except LockWaitTimeout as exc:
        waited = time.monotonic() - started
        COMMIT_WAIT.observe(waited)
        COMMIT_TIMEOUTS.inc()
        log.warning("dataset commit lock not granted", extra={
            "dataset_id": ds_id, "wait_s": round(waited, 3), "limit_s": db.lock_wait_s})
        raise DatasetBusy(
            f"The dataset is busy: other changes held it for {db.lock_wait_s:g} s; "
            "nothing was changed.", "Retry in a few seconds.") from exc
    if waited >= SLOW_COMMIT_WAIT_S:
        log.info("dataset commit waited for its lock", extra={
            "dataset_id": ds_id, "wait_s": round(waited, 3), "version": version.number})
    return version


def _commit_once(s: Session, ds: Dataset, actor_id: int, adds: Mapping[str, BlobInfo],
                 removes: set[str], message: str) -> DatasetVersion:
    """The next version of ``ds``, whose commit lock the caller holds."""
    prev = get_version(s, ds, None)
    # What of the previous version goes away (removed or replaced): its count and bytes. A
    # lookup by (version, path) per name, not a scan: the manifest may be large.
    dropped = removes | set(adds)
    gone: dict[str, int] = {}
    names = sorted(dropped) if prev is not None else []
    prev_id = prev.id if prev is not None else None
    for i in range(0, len(names), LOOKUP_BATCH):
        gone.update(s.execute(select(VersionFile.path, VersionFile.size).where(
            VersionFile.version_id == prev_id,
            VersionFile.path.in_(names[i:i + LOOKUP_BATCH]))).tuples().all())
    missing = removes - set(gone)
    if missing:
        raise NotFound(f"No file {sorted(missing)[0]!r} in dataset {ds.name!r}.")
    if prev is not None and not removes and adds and _unchanged(s, prev, adds):
        return prev  # re-uploading identical files makes no new version
    new = DatasetVersion(dataset_id=ds.id, number=ds.latest_version + 1, message=message,
                         created_by=actor_id)
    s.add(new)
    s.flush()  # the unique (dataset, number) constraint still guards writers that skip the lock
    if prev is not None:
        keep = select(literal(new.id), VersionFile.path,
                      VersionFile.sha256, VersionFile.size).where(
            VersionFile.version_id == prev.id)
        if dropped:
            keep = keep.where(VersionFile.path.not_in(dropped))
        s.execute(insert(VersionFile).from_select(
            ["version_id", "path", "sha256", "size"], keep))
    if adds:
        s.execute(insert(VersionFile), [
            {"version_id": new.id, "path": p, "sha256": b.sha256, "size": b.size}
            for p, b in adds.items()
        ])
    base_count, base_bytes = (prev.file_count, prev.total_bytes) if prev else (0, 0)
    new.file_count = base_count - len(gone) + len(adds)
    new.total_bytes = base_bytes - sum(gone.values()) + sum(b.size for b in adds.values())
    ds.latest_version = new.number
    ds.updated_at = utcnow()
    return new


def _unchanged(s: Session, prev: DatasetVersion, adds: Mapping[str, BlobInfo]) -> bool:
    rows = s.execute(select(VersionFile.path, VersionFile.sha256).where(
        VersionFile.version_id == prev.id, VersionFile.path.in_(list(adds)))).all()
    return len(rows) == len(adds) and all(adds[p].sha256 == d for p, d in rows)


# Metadata ------------------------------------------------------------------------------

def get_file_metadata(s: Session, ds: Dataset, path: str) -> dict[str, Any]:
    row = s.get(FileMetadata, (ds.id, normalize_path(path)))
    return dict(row.metadata_) if row else {}


def set_file_metadata(s: Session, ds: Dataset, path: str, metadata: Mapping[str, Any],
                      ) -> dict[str, Any]:
    p = normalize_path(path)
    get_file(s, ds, p)  # only files that exist in the latest version take metadata
    row = s.get(FileMetadata, (ds.id, p))
    if row is None:
        s.add(FileMetadata(dataset_id=ds.id, path=p, metadata_=dict(metadata)))
    else:
        row.metadata_ = dict(metadata)
    return dict(metadata)


def referenced_digests(s: Session) -> set[str]:
    """Every blob digest some record still points to (the garbage collector keeps these)."""
    return set(s.scalars(select(VersionFile.sha256).distinct()))
