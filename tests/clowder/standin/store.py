"""The stand-in's in-memory "MongoDB": users, keys, datasets, files, metadata, jobs, listeners.

Every operation copies one clowder2 router/dependency and says which in its docstring (paths are
in the clowder2 repository, ``clowder-framework/clowder2``). Errors are raised as FastAPI
``HTTPException`` with clowder2's status codes and ``detail`` strings, so the HTTP layer and the
Python helpers share one behaviour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import mimetypes
import os
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import HTTPException

from .models import EventListenerIn, MetadataIn

JSON = dict[str, Any]

ROLES = ("owner", "editor", "uploader", "viewer")
STANDARD_LICENSES = ("CC BY", "CC BY-SA", "CC BY-NC", "CC BY-NC-SA", "CC BY-ND", "CC BY-NC-ND")
HEARTBEAT_INTERVAL = 5 * 60  # clowder2 backend/app/config.py listener_heartbeat_interval
USER_JOB_KEY_NAME = "__user_job_key"  # clowder2 backend/app/routers/users.py get_user_job_key

_OID_RANDOM = os.urandom(5).hex()
_OID_COUNTER = itertools.count(secrets.randbelow(0xFFFFFF))
_OID_LOCK = threading.Lock()
_KEY_SECRET = secrets.token_bytes(32)


class UncaughtError(Exception):
    """An error no clowder2 route catches: the client gets a bare 500 "Internal Server Error"."""


class InvalidObjectId(UncaughtError):
    """``PydanticObjectId(x)`` on a string that is not an ObjectId: bson's ``InvalidId``, which no
    clowder2 route catches (the client gets a bare 500 "Internal Server Error")."""


def object_id() -> str:
    """A MongoDB ObjectId: 4-byte time, 5 random bytes, 3-byte counter, as 24 hex characters."""
    with _OID_LOCK:
        n = next(_OID_COUNTER) & 0xFFFFFF
    return f"{int(time.time()):08x}{_OID_RANDOM}{n:06x}"


def require_object_id(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"id must be an instance of (bytes, str, ObjectId), not {type(value)}")
    if len(value) != 24 or any(c not in string.hexdigits for c in value):
        raise InvalidObjectId(f"'{value}' is not a valid ObjectId")
    return value


def _ms(dt: datetime) -> datetime:
    """MongoDB keeps datetimes to the millisecond."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def utcnow() -> datetime:
    """``datetime.utcnow()`` (naive UTC), as most clowder2 models default to."""
    return _ms(datetime.now(UTC).replace(tzinfo=None))


def localnow() -> datetime:
    """``datetime.now()`` (naive local time): the default of listener and job ``created``."""
    return _ms(datetime.now())


def iso(dt: datetime | None) -> str | None:
    """pydantic v1 JSON for a naive datetime: ``isoformat()``, no offset."""
    return None if dt is None else dt.isoformat()


def get_content_type(filename: str, content_type: str | None = None) -> JSON:
    """clowder2 backend/app/routers/utils.py ``get_content_type``."""
    if content_type is None:
        content_type = mimetypes.guess_type(filename)[0]
        if content_type is None:
            content_type = "application/octet-stream"
    return {"content_type": content_type, "main_type": content_type.split("/")[0]}


def _signed_key(email: str) -> tuple[str, str]:
    """An API key shaped like clowder2's: ``URLSafeSerializer(secret, salt="api_key")`` over
    ``{"user": email, "key": token_urlsafe(16)}`` (payload.signature, both base64url)."""
    unique = secrets.token_urlsafe(16)
    payload = base64.urlsafe_b64encode(
        json.dumps({"user": email, "key": unique}, separators=(",", ":")).encode()
    ).rstrip(b"=")
    sig = base64.urlsafe_b64encode(
        hmac.new(_KEY_SECRET, b"api_key" + payload, hashlib.sha1).digest()
    ).rstrip(b"=")
    return (payload + b"." + sig).decode(), unique


@dataclass
class User:
    """clowder2 backend/app/models/users.py ``UserDB``/``UserOut``."""

    id: str
    email: str
    first_name: str
    last_name: str
    admin: bool = False
    admin_mode: bool = False
    read_only_user: bool = False

    def out(self) -> JSON:
        return {"email": self.email, "first_name": self.first_name,
                "last_name": self.last_name, "id": self.id, "admin": self.admin,
                "admin_mode": self.admin_mode, "read_only_user": self.read_only_user}


@dataclass
class ApiKey:
    """clowder2 ``UserAPIKeyDB`` (``listener=False``) or ``ListenerAPIKeyDB`` (job keys)."""

    hash: str
    key: str
    user: str
    name: str
    created: datetime
    expires: datetime | None = None
    listener: bool = False


@dataclass
class Dataset:
    """clowder2 backend/app/models/datasets.py ``DatasetDB``. ``shared`` holds the
    ``AuthorizationDB`` entries other than the creator's own owner entry (email -> role)."""

    id: str
    name: str
    description: str | None
    creator: JSON
    created: datetime
    modified: datetime
    license_id: str
    standard_license: bool
    status: str = "PRIVATE"
    user_views: int = 0
    downloads: int = 0
    shared: dict[str, str] = field(default_factory=dict)

    def out(self, *, view: bool) -> JSON:
        """``DatasetOut``; ``view`` when read through ``DatasetDBViewList`` (GET), which sets
        ``origin_id`` to the id; a freshly saved ``DatasetDB`` leaves it null."""
        return {"name": self.name, "description": self.description, "status": self.status,
                "creator": self.creator, "created": iso(self.created),
                "modified": iso(self.modified), "user_views": self.user_views,
                "downloads": self.downloads, "thumbnail_id": None,
                "origin_id": self.id if view else None,
                "standard_license": self.standard_license, "license_id": self.license_id,
                "id": self.id, "frozen": False, "frozen_version_num": -999, "deleted": False}


@dataclass
class File:
    """clowder2 backend/app/models/files.py ``FileDB`` (bytes kept here instead of MinIO)."""

    id: str
    name: str
    status: str
    creator: JSON
    created: datetime
    version_id: str
    dataset_id: str
    content_type: JSON
    content: bytes
    folder_id: str | None = None
    version_num: int = 1
    views: int = 0
    downloads: int = 0

    def out(self, *, view: bool) -> JSON:
        """``FileOut``. Through ``FileDBViewList`` (summary, listing) ``frozen`` is false and
        ``origin_id`` the id; the upload response is a plain ``FileDB``, so ``FileOut``'s
        defaults show: ``frozen`` true (from ``FileFreezeDB``), ``origin_id`` null."""
        return {"name": self.name, "status": self.status, "creator": self.creator,
                "created": iso(self.created), "version_id": self.version_id,
                "version_num": self.version_num, "dataset_id": self.dataset_id,
                "folder_id": self.folder_id, "views": self.views, "downloads": self.downloads,
                "bytes": len(self.content), "content_type": self.content_type,
                "thumbnail_id": None, "storage_type": "minio", "storage_path": None,
                "object_type": "file", "origin_id": self.id if view else None, "id": self.id,
                "frozen": not view}


@dataclass
class Metadata:
    """clowder2 backend/app/models/metadata.py ``MetadataDB``."""

    id: str
    context: list[Any] | None
    context_url: str | None
    definition: str | None
    content: JSON
    description: str | None
    resource: JSON
    agent: JSON
    created: datetime

    def out(self, *, view: bool) -> JSON:
        """``MetadataOut`` (``context`` is serialised as ``@context``); ``view`` as for files."""
        return {"@context": self.context, "context_url": self.context_url,
                "definition": self.definition, "content": self.content,
                "description": self.description, "resource": self.resource,
                "agent": self.agent, "created": iso(self.created),
                "origin_id": self.id if view else None, "id": self.id, "frozen": not view}


@dataclass
class Job:
    """clowder2 backend/app/models/listeners.py ``EventListenerJobDB``."""

    id: str
    listener_id: str
    resource_ref: JSON
    creator: JSON
    parameters: JSON | None
    created: datetime
    started: datetime | None = None
    updated: datetime | None = None
    finished: datetime | None = None
    duration: float | None = None
    latest_message: str | None = None
    status: str = "CREATED"

    def out(self) -> JSON:
        """``EventListenerJobOut``."""
        return {"listener_id": self.listener_id, "resource_ref": self.resource_ref,
                "creator": self.creator, "parameters": self.parameters,
                "created": iso(self.created), "started": iso(self.started),
                "updated": iso(self.updated), "finished": iso(self.finished),
                "duration": self.duration, "latest_message": self.latest_message,
                "status": self.status, "id": self.id}


@dataclass
class JobUpdate:
    """clowder2 ``EventListenerJobUpdateDB``: ``status`` holds the *cleaned message text*."""

    id: str
    job_id: str
    timestamp: datetime
    status: str

    def out(self) -> JSON:
        return {"job_id": self.job_id, "timestamp": iso(self.timestamp), "status": self.status,
                "id": self.id}


@dataclass
class Listener:
    """clowder2 backend/app/models/listeners.py ``EventListenerDB``."""

    id: str
    name: str
    version: str
    description: str
    access: JSON | None
    creator: JSON | None
    created: datetime
    modified: datetime
    last_alive: datetime | None
    alive: bool | None
    active: bool
    properties: JSON | None

    def out(self, *, alive: bool | None = None) -> JSON:
        """``EventListenerOut``; ``alive`` overrides the stored flag (GET /listeners computes
        it)."""
        return {"name": self.name, "version": self.version, "description": self.description,
                "access": self.access, "id": self.id, "creator": self.creator,
                "created": iso(self.created), "modified": iso(self.modified),
                "lastAlive": iso(self.last_alive),
                "alive": self.alive if alive is None else alive, "active": self.active,
                "properties": self.properties}


def paged(items: list[JSON], skip: int, limit: int) -> JSON:
    """clowder2 backend/app/models/pages.py ``Paged`` over ``_get_page_query`` (a ``$facet`` of
    ``$count`` and ``$skip``/``$limit``): total_count counts everything matched."""
    if skip < 0 or limit <= 0:
        # MongoDB refuses "$skip" < 0 and "$limit" <= 0; clowder2 does not catch it.
        raise UncaughtError(f"invalid page skip={skip} limit={limit}")
    return {"metadata": {"total_count": len(items), "skip": skip, "limit": limit},
            "data": items[skip:skip + limit]}


class Store:
    """All state, behind one lock (uvicorn's worker threads and the RabbitMQ consumers share it).

    ``strict_roles``: clowder2's ``access()`` (backend/app/deps/authorization_deps.py) is called
    as ``access(role, required)``, so its ``admin``/``admin_mode``/``read_only_user`` parameters
    keep their ``Depends(...)`` defaults, which are truthy: any role on a dataset grants every
    permission. ``strict_roles=False`` (default) keeps that; True applies the documented
    OWNER > EDITOR > UPLOADER > VIEWER hierarchy.
    """

    def __init__(self, *, strict_roles: bool = False) -> None:
        self.lock = threading.RLock()
        self.strict_roles = strict_roles
        self.host = ""
        self.users: dict[str, User] = {}  # by email
        self.keys: dict[str, ApiKey] = {}  # by the key string sent in X-API-KEY
        self.datasets: dict[str, Dataset] = {}
        self.files: dict[str, File] = {}
        self.metadata: dict[str, Metadata] = {}
        self.jobs: dict[str, Job] = {}
        self.job_updates: list[JobUpdate] = []
        self.listeners: dict[str, Listener] = {}

    # -- users and keys ------------------------------------------------------------------------

    def add_user(self, email: str, first_name: str, last_name: str, *, admin: bool) -> User:
        with self.lock:
            if email in self.users:
                raise ValueError(f"user {email} exists")
            user = User(id=object_id(), email=email, first_name=first_name,
                        last_name=last_name, admin=admin)
            self.users[email] = user
            return user

    def user_key(self, email: str, name: str, mins: int) -> str:
        """clowder2 backend/app/routers/users.py ``generate_user_api_key`` (mins=0: no expiry)."""
        with self.lock:
            if email not in self.users:
                raise KeyError(email)
            hashed, unique = _signed_key(email)
            created = utcnow()
            expires = created + timedelta(minutes=mins) if mins > 0 else None
            self.keys[hashed] = ApiKey(hashed, unique, email, name, created, expires)
            return hashed

    def job_key(self, email: str) -> str:
        """clowder2 backend/app/routers/users.py ``get_user_job_key``: the user's non-expiring
        ``ListenerAPIKeyDB`` named ``__user_job_key``, created on first use and then reused."""
        with self.lock:
            for k in self.keys.values():
                if k.listener and k.user == email and k.name == USER_JOB_KEY_NAME:
                    return k.hash
            hashed, unique = _signed_key(email)
            self.keys[hashed] = ApiKey(hashed, unique, email, USER_JOB_KEY_NAME, utcnow(),
                                       listener=True)
            return hashed

    def authenticate(self, api_key: str | None) -> User:
        """clowder2 backend/app/keycloak_auth.py ``get_current_username``/``get_current_user``
        for the ``X-API-KEY`` header: job keys first, then user keys (deleted once expired)."""
        if not api_key:
            raise HTTPException(401, "Not authenticated.", {"WWW-Authenticate": "Bearer"})
        with self.lock:
            key = self.keys.get(api_key)
            if key is None:
                raise HTTPException(401, {"error": "Key is invalid."},
                                    {"WWW-Authenticate": "Bearer"})
            if not key.listener and key.expires is not None and utcnow() >= key.expires:
                del self.keys[api_key]
                raise HTTPException(401, {"error": "Key is expired."},
                                    {"WWW-Authenticate": "Bearer"})
            return self.users[key.user]

    @staticmethod
    def admin_mode(user: User, enable_admin: bool) -> bool:
        """clowder2 backend/app/routers/authentication.py ``get_admin`` and ``get_admin_mode``."""
        return user.admin and (enable_admin or user.admin_mode)

    # -- authorization -------------------------------------------------------------------------

    def _access(self, role: str, required: str) -> bool:
        if not self.strict_roles:
            return True  # see the class docstring
        order = {"viewer": 0, "uploader": 1, "editor": 2, "owner": 3}
        return order[role] >= order[required]

    def _role(self, dataset: Dataset, email: str) -> str | None:
        if dataset.creator["email"] == email:
            return "owner"
        return dataset.shared.get(email)

    def authorize_dataset(self, user: User, dataset_id: str, required: str,
                          admin_mode: bool) -> Dataset:
        """clowder2 backend/app/deps/authorization_deps.py ``Authorization(required)``."""
        require_object_id(dataset_id)
        with self.lock:
            dataset = self.datasets.get(dataset_id)
            if admin_mode and dataset is not None:
                return dataset
            role = None if dataset is None else self._role(dataset, user.email)
            if dataset is not None and role is not None:
                if self._access(role, required):
                    return dataset
            elif dataset is not None:
                if dataset.status == "AUTHENTICATED" or (
                        dataset.status == "PUBLIC" and required == "viewer"):
                    return dataset
            else:
                if admin_mode:
                    raise HTTPException(404, f"Dataset {dataset_id} not found")
                raise HTTPException(404, f"The dataset {dataset_id} is not found")
            raise HTTPException(403, f"User `{user.email} does not have `{required}` "
                                     f"permission on dataset {dataset_id}")

    def authorize_file(self, user: User, file_id: str, required: str, admin_mode: bool) -> File:
        """clowder2 ``FileAuthorization(required)`` followed by the route's own lookup: a file
        the user has no role on is reported as not found (404), like a missing one."""
        require_object_id(file_id)
        with self.lock:
            file = self.files.get(file_id)
            if file is None:
                raise HTTPException(404, f"File {file_id} not found")
            if admin_mode:
                return file
            role = self._role(self.datasets[file.dataset_id], user.email)
            if role is not None:
                if self._access(role, required):
                    return file
                raise HTTPException(403, f"User `{user.email} does not have `{required}` "
                                         f"permission on file {file_id}")
            if file.status in ("PUBLIC", "AUTHENTICATED") and required == "viewer":
                return file
            raise HTTPException(404, f"File {file_id} not found")

    # -- datasets and files --------------------------------------------------------------------

    def add_dataset(self, user: User, name: str, description: str | None,
                    license_id: str = "CC BY") -> Dataset:
        """clowder2 backend/app/routers/datasets.py ``save_dataset`` (creator gets OWNER)."""
        with self.lock:
            now = utcnow()
            dataset = Dataset(id=object_id(), name=name, description=description,
                              creator=user.out(), created=now, modified=now,
                              license_id=license_id,
                              standard_license=license_id in STANDARD_LICENSES)
            self.datasets[dataset.id] = dataset
            return dataset

    def share(self, dataset_id: str, email: str, role: str) -> None:
        """clowder2 backend/app/routers/authorization.py ``set_dataset_user_role`` (one role)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        with self.lock:
            if email not in self.users:
                raise KeyError(email)
            self.datasets[dataset_id].shared[email] = role

    def dataset_files(self, user: User, dataset: Dataset, admin_mode: bool) -> list[File]:
        """clowder2 backend/app/routers/datasets.py ``get_dataset_files`` query, newest first.
        A private dataset lists the files the user created, or all when the user is in an
        authorization's ``user_ids`` (i.e. was shared the dataset). The creator's own OWNER
        entry has empty ``user_ids``, so the creator does not see files others uploaded."""
        with self.lock:
            files = [f for f in self.files.values() if f.dataset_id == dataset.id]
            if not (dataset.status in ("AUTHENTICATED", "PUBLIC") or admin_mode):
                shared = user.email in dataset.shared
                files = [f for f in files if shared or f.creator["email"] == user.email]
            return sorted(files, key=lambda f: (f.created, f.id), reverse=True)

    def save_file(self, user: User, dataset: Dataset, name: str, content: bytes,
                  content_type: str | None, folder_id: str | None = None) -> File:
        """clowder2 backend/app/routers/datasets.py ``save_file`` + routers/files.py
        ``add_file_entry`` (MinIO version id, version 1, size, content type guessed from the
        filename when the upload has none)."""
        with self.lock:
            if folder_id is not None:
                require_object_id(folder_id)
                raise HTTPException(404, f"Folder {folder_id} not found")
            file = File(id=object_id(), name=name, status=dataset.status, creator=user.out(),
                        created=utcnow(), version_id=secrets.token_hex(16),
                        dataset_id=dataset.id,
                        content_type=get_content_type(name, content_type), content=content)
            self.files[file.id] = file
            return file

    # -- metadata ------------------------------------------------------------------------------

    def _validate_context(self, md: MetadataIn) -> None:
        """clowder2 backend/app/models/metadata.py ``validate_context`` (no metadata
        definitions are registered in the stand-in)."""
        if md.context is None and md.context_url is None and md.definition is None:
            raise HTTPException(400, "Context is required")
        if md.context is None and md.context_url is None and md.definition is not None:
            raise HTTPException(400, f"{md.definition} is not valid metadata definition")

    def _find_listener(self, name: str, version: str) -> Listener | None:
        for listener in self.listeners.values():
            if listener.name == name and listener.version == version:
                return listener
        return None

    def _duplicate(self, resource_id: str, md: MetadataIn, user: User) -> Metadata | None:
        for existing in self.metadata.values():
            if existing.resource["resource_id"] != resource_id:
                continue
            if existing.definition != md.definition:
                continue
            agent_listener = existing.agent.get("listener")
            if md.listener is not None:
                if agent_listener and agent_listener["name"] == md.listener.name \
                        and agent_listener["version"] == md.listener.version:
                    return existing
            elif existing.agent["creator"]["id"] == user.id:
                return existing
        return None

    def add_dataset_metadata(self, user: User, dataset: Dataset, md: MetadataIn) -> Metadata:
        """clowder2 backend/app/routers/metadata_datasets.py ``add_dataset_metadata`` +
        ``_build_metadata_db_obj``: a ``listener`` is *not* looked up; the agent's listener is
        the ``EventListenerIn`` as sent, with ``EventListenerOut`` defaults."""
        with self.lock:
            if md.definition is not None and self._duplicate(dataset.id, md, user) is not None:
                raise HTTPException(
                    409, f"Metadata for {md.definition} already exists on this dataset")
            self._validate_context(md)
            agent: JSON = {"creator": user.out(),
                           "listener": None if md.listener is None
                           else _listener_from_in(md.listener)}
            entry = Metadata(id=object_id(), context=md.context, context_url=md.context_url,
                             definition=md.definition, content=md.content,
                             description=md.description,
                             resource={"collection": "datasets", "resource_id": dataset.id,
                                       "version": None},
                             agent=agent, created=utcnow())
            self.metadata[entry.id] = entry
            return entry

    def add_file_metadata(self, user: User, file: File, md: MetadataIn) -> Metadata:
        """clowder2 backend/app/routers/metadata_files.py ``add_file_metadata`` +
        ``_build_metadata_db_obj``: context first (400), then file version (404), then a
        ``listener`` must be a registered one by name and version (404 "Extractor not found")."""
        with self.lock:
            file_version = md.file_version if md.file_version is not None else file.version_num
            if md.definition is not None:
                existing = self._duplicate(file.id, md, user)
                if existing is not None and existing.resource["version"] == file_version:
                    raise HTTPException(
                        409, f"Metadata for {md.definition} already exists on this file")
            self._validate_context(md)
            if file_version > 0 and file_version != file.version_num:
                raise HTTPException(404, f"File version {file_version} does not exist")
            target_version = file_version if file_version > 0 else file.version_num
            listener_out: JSON | None = None
            if md.listener is not None:
                found = self._find_listener(md.listener.name, md.listener.version)
                if found is None:
                    raise HTTPException(404, "Extractor not found")
                listener_out = found.out()
            entry = Metadata(id=object_id(), context=md.context, context_url=md.context_url,
                             definition=md.definition, content=md.content,
                             description=md.description,
                             resource={"collection": "files", "resource_id": file.id,
                                       "version": target_version},
                             agent={"creator": user.out(), "listener": listener_out},
                             created=utcnow())
            self.metadata[entry.id] = entry
            return entry

    def metadata_of(self, resource_id: str, version: int | None = None) -> list[Metadata]:
        with self.lock:
            return [m for m in self.metadata.values()
                    if m.resource["resource_id"] == resource_id
                    and (version is None or m.resource["version"] == version)]

    # -- jobs ----------------------------------------------------------------------------------

    def create_file_job(self, user: User, file: File, routing_key: str,
                        parameters: JSON) -> tuple[Job, JSON]:
        """clowder2 backend/app/rabbitmq/listeners.py ``submit_file_job``: the job entry and the
        ``EventListenerJobMessage`` body (in its field order)."""
        with self.lock:
            job = Job(id=object_id(), listener_id=routing_key,
                      resource_ref={"collection": "files", "resource_id": file.id,
                                    "version": file.version_num},
                      creator=user.out(), parameters=parameters, created=localnow())
            self.jobs[job.id] = job
            body = {"host": self.host, "secretKey": self.job_key(user.email), "retry_count": 0,
                    "resource_type": "file", "flags": "", "filename": file.name,
                    "fileSize": len(file.content), "id": file.id, "datasetId": file.dataset_id,
                    "job_id": job.id, "parameters": parameters}
            return job, body

    def create_dataset_job(self, user: User, dataset: Dataset, routing_key: str,
                           parameters: JSON | None) -> tuple[Job, JSON]:
        """clowder2 backend/app/rabbitmq/listeners.py ``submit_dataset_job``:
        ``EventListenerDatasetJobMessage``."""
        with self.lock:
            job = Job(id=object_id(), listener_id=routing_key,
                      resource_ref={"collection": "datasets", "resource_id": dataset.id,
                                    "version": None},
                      creator=user.out(), parameters=parameters, created=localnow())
            self.jobs[job.id] = job
            body = {"host": self.host, "secretKey": self.job_key(user.email), "retry_count": 0,
                    "resource_type": "dataset", "flags": "", "datasetName": dataset.name,
                    "id": dataset.id, "datasetId": dataset.id, "job_id": job.id,
                    "parameters": parameters}
            return job, body

    def get_job(self, job_id: str) -> Job:
        """clowder2 backend/app/routers/jobs.py ``get_job_summary`` lookup."""
        require_object_id(job_id)
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise HTTPException(404, f"Job {job_id} not found")
            return job

    def updates_of(self, job_id: str) -> list[JobUpdate]:
        with self.lock:
            return [u for u in self.job_updates if u.job_id == job_id]

    # -- listeners -----------------------------------------------------------------------------

    def visible_listeners(self, user: User, *, admin_mode: bool, all_: bool,
                          heartbeat_interval: int, category: str | None, label: str | None,
                          alive_only: bool, process: str | None,
                          dataset_id: str | None) -> list[JSON]:
        """clowder2 backend/app/routers/listeners.py ``get_listeners``: ``alive`` computed from
        ``lastAlive``; only *active* listeners unless ``all`` or admin mode (a listener that
        registered by heartbeat is inactive); access lists; sorted by name."""
        if heartbeat_interval == 0:
            heartbeat_interval = HEARTBEAT_INTERVAL
        now = utcnow()
        out: list[tuple[str, JSON]] = []
        with self.lock:
            for item in self.listeners.values():
                alive = item.last_alive is None or (
                    (now - item.last_alive).total_seconds() * 1000 < heartbeat_interval * 1000)
                props = item.properties or {}
                if category and category not in (props.get("categories") or []):
                    continue
                if label and label not in (props.get("default_labels") or []):
                    continue
                if alive_only and not alive:
                    continue
                if process in ("file", "dataset"):
                    proc = props.get("process")
                    if not (proc == {} or (isinstance(proc, dict) and process in proc)):
                        continue
                if not all_ and not admin_mode and not item.active:
                    continue
                if not admin_mode and item.access is not None:
                    acc = item.access
                    if not (acc.get("owner") == user.email or user.email in acc.get("users", [])
                            or (dataset_id is not None
                                and dataset_id in acc.get("datasets", []))):
                        continue
                out.append((item.name, item.out(alive=alive)))
        return [o for _, o in sorted(out, key=lambda pair: pair[0])]

    def authorize_listener(self, user: User, listener_id: str, admin_mode: bool) -> Listener:
        """clowder2 backend/app/deps/authorization_deps.py ``ListenerAuthorization``: a listener
        that is not active is 403 for anyone but its creator (or an admin in admin mode)."""
        require_object_id(listener_id)
        with self.lock:
            listener = self.listeners.get(listener_id)
            if listener is None:
                raise HTTPException(404, f"Listener {listener_id} not found")
            if admin_mode:
                return listener
            creator_email = (listener.creator or {}).get("email")
            denied = HTTPException(403, f"User `{user.email} does not have permission on "
                                        f"listener `{listener_id}`")
            if listener.access is not None:
                acc = listener.access
                if not (creator_email == user.email or acc.get("owner") == user.email
                        or user.email in acc.get("users", [])):
                    raise denied
            if listener.active or creator_email == user.email:
                return listener
            raise denied


def _listener_from_in(listener: EventListenerIn) -> JSON:
    """An ``EventListenerIn`` coerced into ``MetadataAgent.listener: EventListenerOut``."""
    now = localnow()
    return Listener(id="", name=listener.name, version=listener.version,
                    description=listener.description,
                    access=None if listener.access is None else listener.access.model_dump(),
                    creator=None, created=now, modified=now, last_alive=None, alive=None,
                    active=False, properties=None).out() | {"id": None}
