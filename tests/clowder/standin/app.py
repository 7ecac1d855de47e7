"""The stand-in's HTTP API: the few clowder2 routes the connector calls, under ``/api/v2``.

Each route names the clowder2 function it copies (backend/app/routers/*.py). Route-level
authentication is ``X-API-KEY`` only (clowder2 also accepts Keycloak bearer tokens and cookies).

No ``from __future__ import annotations`` here: FastAPI must evaluate the route annotations,
which name dependencies local to ``create_app``.
"""

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from threading import Lock
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, File, HTTPException, Request, Security, UploadFile
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader

from .broker import Broker
from .models import MetadataIn
from .store import (
    HEARTBEAT_INTERVAL,
    JSON,
    Store,
    UncaughtError,
    User,
    paged,
    require_object_id,
)

API = "/api/v2"
CHUNK = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class RequestLog:
    """Every request as (method, route path template, status); unmatched paths are logged with
    their raw path."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)
    lock: Lock = field(default_factory=Lock)

    def add(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.entries.append((method, path, status))

    def snapshot(self) -> list[tuple[str, str, int]]:
        with self.lock:
            return list(self.entries)


class CountRequests:
    """ASGI wrapper that records the route FastAPI matched (``scope["route"].path``)."""

    def __init__(self, app: ASGIApp, log: RequestLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or scope["path"]
            self.log.add(str(scope["method"]).upper(), str(template), status)


api_key_header = APIKeyHeader(name="X-API-KEY", auto_error=False)


def create_app(store: Store, broker: Broker, instance_id: str) -> FastAPI:
    app = FastAPI(title="Clowder (stand-in)", openapi_url=f"{API}/openapi.json")

    @app.exception_handler(UncaughtError)
    async def _uncaught(request: Request, exc: UncaughtError) -> Response:
        # What Starlette's ServerErrorMiddleware sends for an exception a route did not catch.
        return PlainTextResponse("Internal Server Error", status_code=500)

    def current_user(api_key: Annotated[str | None, Security(api_key_header)]) -> User:
        """clowder2 backend/app/keycloak_auth.py ``get_current_username`` (the routers'
        dependency in backend/app/main.py)."""
        return store.authenticate(api_key)

    def admin_mode(user: Annotated[User, Depends(current_user)],
                   enable_admin: bool = False) -> bool:
        return store.admin_mode(user, enable_admin)

    CurrentUser = Annotated[User, Depends(current_user)]
    AdminMode = Annotated[bool, Depends(admin_mode)]

    # -- users ---------------------------------------------------------------------------------

    @app.get(f"{API}/users/profile")
    def get_profile(user: CurrentUser) -> JSON:
        """clowder2 backend/app/routers/users.py ``get_profile``."""
        return user.out()

    # -- datasets ------------------------------------------------------------------------------

    @app.get(f"{API}/datasets/{{dataset_id}}")
    def get_dataset(dataset_id: str, user: CurrentUser, admin: AdminMode) -> JSON:
        """clowder2 backend/app/routers/datasets.py ``get_dataset`` (``Authorization("viewer")``
        answers 404 "The dataset ... is not found" / 403 before the route runs)."""
        return store.authorize_dataset(user, dataset_id, "viewer", admin).out(view=True)

    @app.get(f"{API}/datasets/{{dataset_id}}/files")
    def get_dataset_files(dataset_id: str, user: CurrentUser, admin: AdminMode,
                          folder_id: str | None = None, skip: int = 0, limit: int = 10) -> JSON:
        """clowder2 backend/app/routers/datasets.py ``get_dataset_files``: Paged FileOut, newest
        first, default limit 10."""
        dataset = store.authorize_dataset(user, dataset_id, "viewer", admin)
        files = store.dataset_files(user, dataset, admin)
        if folder_id is not None:
            require_object_id(folder_id)
            files = [f for f in files if f.folder_id == folder_id]
        return paged([f.out(view=True) for f in files], skip, limit)

    @app.post(f"{API}/datasets/{{dataset_id}}/files")
    def save_file(dataset_id: str, user: CurrentUser, admin: AdminMode,
                  file: Annotated[UploadFile, File()], folder_id: str | None = None) -> JSON:
        """clowder2 backend/app/routers/datasets.py ``save_file`` (``Authorization("uploader")``;
        ``add_file_entry`` in routers/files.py)."""
        dataset = store.authorize_dataset(user, dataset_id, "uploader", admin)
        content = file.file.read()
        saved = store.save_file(user, dataset, file.filename or "", content, file.content_type,
                                folder_id)
        return saved.out(view=False)

    @app.post(f"{API}/datasets/{{dataset_id}}/metadata")
    def add_dataset_metadata(metadata_in: MetadataIn, dataset_id: str, user: CurrentUser,
                             admin: AdminMode) -> JSON:
        """clowder2 backend/app/routers/metadata_datasets.py ``add_dataset_metadata``
        (``Authorization("uploader")``)."""
        dataset = store.authorize_dataset(user, dataset_id, "uploader", admin)
        return store.add_dataset_metadata(user, dataset, metadata_in).out(view=False)

    @app.get(f"{API}/datasets/{{dataset_id}}/metadata")
    def get_dataset_metadata(dataset_id: str, user: CurrentUser, admin: AdminMode) -> list[JSON]:
        """clowder2 backend/app/routers/metadata_datasets.py ``get_dataset_metadata``
        (its ``listener_name``/``listener_version`` are form fields of a GET; not modelled)."""
        dataset = store.authorize_dataset(user, dataset_id, "viewer", admin)
        return [m.out(view=True) for m in store.metadata_of(dataset.id)]

    @app.post(f"{API}/datasets/{{dataset_id}}/extract")
    def get_dataset_extract(dataset_id: str, extractorName: str, user: CurrentUser,
                            admin: AdminMode,
                            parameters: Annotated[dict[str, Any] | None, Body()] = None) -> str:
        """clowder2 backend/app/routers/datasets.py ``get_dataset_extract`` ->
        rabbitmq/listeners.py ``submit_dataset_job``: returns the job id. A missing body stays
        ``None`` (``"parameters": null`` in the message)."""
        dataset = store.authorize_dataset(user, dataset_id, "uploader", admin)
        job, body = store.create_dataset_job(user, dataset, extractorName, parameters)
        broker.publish_job(extractorName, body)
        return job.id

    # -- files ---------------------------------------------------------------------------------

    @app.get(f"{API}/files/{{file_id}}")
    def download_file(file_id: str, user: CurrentUser, admin: AdminMode,
                      version: int | None = None, increment: bool = True) -> Response:
        """clowder2 backend/app/routers/files.py ``download_file``: streamed bytes,
        ``Content-Disposition: attachment; filename=<name>`` (unquoted), downloads += 1."""
        file = store.authorize_file(user, file_id, "viewer", admin)
        if version is not None and version != file.version_num:
            raise HTTPException(404, f"File {file_id} version {version} not found")
        media_type = file.content_type["content_type"]
        if media_type == "N/A":
            media_type = "application/octet-stream"
        content = file.content

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(content), CHUNK):
                yield content[start:start + CHUNK]

        response = StreamingResponse(chunks(), media_type=media_type)
        response.headers["Content-Disposition"] = f"attachment; filename={file.name}"
        if increment:
            with store.lock:
                file.downloads += 1
        return response

    @app.get(f"{API}/files/{{file_id}}/summary")
    def get_file_summary(file_id: str, user: CurrentUser, admin: AdminMode) -> JSON:
        """clowder2 backend/app/routers/files.py ``get_file_summary``."""
        return store.authorize_file(user, file_id, "viewer", admin).out(view=True)

    @app.post(f"{API}/files/{{file_id}}/metadata")
    def add_file_metadata(metadata_in: MetadataIn, file_id: str, user: CurrentUser,
                          admin: AdminMode) -> JSON:
        """clowder2 backend/app/routers/metadata_files.py ``add_file_metadata``
        (``FileAuthorization("uploader")``)."""
        file = store.authorize_file(user, file_id, "uploader", admin)
        return store.add_file_metadata(user, file, metadata_in).out(view=False)

    @app.get(f"{API}/files/{{file_id}}/metadata")
    def get_file_metadata(file_id: str, user: CurrentUser, admin: AdminMode,
                          version: int | None = None, all_versions: bool = False) -> list[JSON]:
        """clowder2 backend/app/routers/metadata_files.py ``get_file_metadata``: the entries
        of the latest (or the given) file version unless ``all_versions``."""
        file = store.authorize_file(user, file_id, "viewer", admin)
        target: int | None = None
        if not all_versions:
            if version is not None and version > 0:
                if version != file.version_num:
                    raise HTTPException(404, f"File version {version} does not exist")
                target = version
            else:
                target = file.version_num
        return [m.out(view=True) for m in store.metadata_of(file.id, target)]

    @app.post(f"{API}/files/{{file_id}}/extract")
    def post_file_extract(file_id: str, extractorName: str, user: CurrentUser,
                          admin: AdminMode,
                          parameters: Annotated[dict[str, Any] | None, Body()] = None) -> str:
        """clowder2 backend/app/routers/files.py ``post_file_extract`` -> rabbitmq/listeners.py
        ``submit_file_job``: returns the job id; a missing body becomes ``{}``."""
        file = store.authorize_file(user, file_id, "uploader", admin)
        job, body = store.create_file_job(user, file, extractorName, parameters or {})
        broker.publish_job(extractorName, body)
        return job.id

    # -- jobs ----------------------------------------------------------------------------------

    @app.get(f"{API}/jobs/{{job_id}}/summary")
    def get_job_summary(job_id: str, user: CurrentUser) -> JSON:
        """clowder2 backend/app/routers/jobs.py ``get_job_summary`` (any signed-in user)."""
        return store.get_job(job_id).out()

    @app.get(f"{API}/jobs/{{job_id}}/updates")
    def get_job_updates(job_id: str, user: CurrentUser) -> list[JSON]:
        """clowder2 backend/app/routers/jobs.py ``get_job_updates``."""
        job = store.get_job(job_id)
        return [u.out() for u in store.updates_of(job.id)]

    # -- listeners -----------------------------------------------------------------------------

    @app.get(f"{API}/listeners/instance")
    def get_instance_id(user: CurrentUser) -> str:
        """clowder2 backend/app/routers/listeners.py ``get_instance_id``."""
        return instance_id

    @app.get(f"{API}/listeners")
    def get_listeners(user: CurrentUser, admin: AdminMode, skip: int = 0, limit: int = 2,
                      heartbeat_interval: int = HEARTBEAT_INTERVAL,
                      category: str | None = None, label: str | None = None,
                      alive_only: bool = False, process: str | None = None,
                      dataset_id: str | None = None, all: bool = False) -> JSON:
        """clowder2 backend/app/routers/listeners.py ``get_listeners``: Paged EventListenerOut,
        default limit 2, only active listeners unless ``all=true`` or admin mode."""
        items = store.visible_listeners(
            user, admin_mode=admin, all_=bool(all), heartbeat_interval=heartbeat_interval,
            category=category, label=label, alive_only=alive_only, process=process,
            dataset_id=dataset_id)
        return paged(items, skip, limit)

    @app.get(f"{API}/listeners/{{listener_id}}")
    def get_listener(listener_id: str, user: CurrentUser, admin: AdminMode) -> JSON:
        """clowder2 backend/app/routers/listeners.py ``get_listener`` behind
        ``ListenerAuthorization`` (403 for an inactive listener)."""
        return store.authorize_listener(user, listener_id, admin).out()

    return app
