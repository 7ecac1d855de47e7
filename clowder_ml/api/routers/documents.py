"""Documents: co-editing a dataset file over a WebSocket (y-websocket protocol), saving the
draft as a new dataset version, and the file's history.

The WebSocket is ``/api/v1/documents/ws/{dataset_id}/{path}``. It authenticates like the
jobs WebSocket (session cookie, bearer header or ``?token=``) and, when the client sends an
``Origin`` (browsers always do), accepts only this server's own origin. A refusal closes
the socket with code 4000 + the HTTP status (4401, 4403, 4404, 4413, 4422) and the error's
message as the reason.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

import anyio
from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, WebSocket
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect, WebSocketState

from clowder_ml.api.bounded import bounded_route
from clowder_ml.api.deps import PlatformDep, UserDep, current_user_ws
from clowder_ml.api.fields import (
    DATASET_ID_PATTERN,
    DATASET_REF_BODY_PATTERN,
    FILE_PATH_PATTERN,
    MAX_PATH,
    FilePathField,
)
from clowder_ml.api.responses import READS_DATASET, WRITES_DATASET, errors
from clowder_ml.api.schemas import Strict, Text, VersionOut
from clowder_ml.errors import (
    ClowderMLError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    StorageError,
)
from clowder_ml.services import datasets, documents
from clowder_ml.services.collab import CollabHub, changes_document
from clowder_ml.services.platform import Platform

router = APIRouter(prefix="/api/v1/documents", tags=["documents"],
                   route_class=bounded_route(64 << 10), responses=errors(PayloadTooLarge))


class SaveRequest(Strict):
    dataset: str = Field(pattern=DATASET_ID_PATTERN, description="The dataset's id")
    path: FilePathField
    message: Text = Field(default="", max_length=500, description="The version's message")


class SaveOut(BaseModel):
    path: str
    changed: bool = Field(description="False: the file already had this content")
    version: VersionOut


class RevisionOut(BaseModel):
    version: int
    sha256: str | None = Field(description="None: the file was removed in this version")
    size: int
    message: str
    author: str | None
    created_at: datetime


def get_hub(request: Request) -> CollabHub:
    hub: CollabHub = request.app.state.collab
    return hub


HubDep = Annotated[CollabHub, Depends(get_hub)]


@router.post("/save", response_model=SaveOut, responses=errors(*WRITES_DATASET, StorageError))
async def save(body: SaveRequest, user: UserDep, platform: PlatformDep, hub: HubDep) -> SaveOut:
    """Write the file's draft (what the editors see now) as a new version of the dataset."""
    access = await to_thread.run_sync(documents.open_document, platform.db, user,
                                      body.dataset, body.path)
    if not access.writable:
        raise PermissionDenied(f"You have read-only access to dataset {access.dataset_name!r}.",
                               "Ask its owner to share it with write permission.")
    text = await hub.text_of(access.doc)
    if text is None:
        raise NotFound(f"There is no draft of {access.doc.path!r} to save.",
                       "Open the file in the editor first.")
    version, changed = await to_thread.run_sync(
        documents.save, platform.db, platform.blobs, platform.settings, user, access.doc,
        text, body.message)
    await hub.mark_saved(access.doc, text)
    return SaveOut(path=access.doc.path, changed=changed,
                   version=VersionOut.model_validate(version))


@router.get("/history", response_model=list[RevisionOut], responses=errors(*READS_DATASET))
def history(user: UserDep, platform: PlatformDep,
            dataset: Annotated[str, Query(pattern=DATASET_REF_BODY_PATTERN, max_length=300,
                                          description="The dataset (id, name, owner:name)")],
            path: Annotated[str, Query(pattern=FILE_PATH_PATTERN, max_length=MAX_PATH,
                                       description="The file's path in the dataset")],
            ) -> list[RevisionOut]:
    """The versions in which the file was added, changed or removed, newest first."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, dataset)
        return [RevisionOut(**vars(r)) for r in documents.history(s, ds, path)]


# co-editing -----------------------------------------------------------------------------

class EditorChannel:
    """One editor's WebSocket as a pycrdt ``Channel``; drops a read-only editor's writes."""

    def __init__(self, websocket: WebSocket, room: str, writable: bool) -> None:
        self._ws = websocket
        self._room = room
        self.writable = writable
        self.dropped = 0
        self._send_lock = anyio.Lock()

    @property
    def path(self) -> str:
        return self._room

    def __aiter__(self) -> EditorChannel:
        return self

    async def __anext__(self) -> bytes:
        return await self.recv()

    async def recv(self) -> bytes:
        while True:
            try:
                message = await self._ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                raise StopAsyncIteration from None
            if message["type"] == "websocket.disconnect":
                raise StopAsyncIteration
            data = message.get("bytes")
            if data is None:  # y-websocket sends binary frames only
                continue
            if not self.writable and changes_document(data):
                self.dropped += 1
                continue
            return bytes(data)

    async def send(self, message: bytes) -> None:
        async with self._send_lock:
            if self._ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                    await self._ws.send_bytes(message)


def same_origin(websocket: WebSocket) -> bool:
    """No ``Origin`` (not a browser), or one whose host:port is the one the client dialed."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == websocket.headers.get("host",
                                                                               "").lower()


async def _refuse(websocket: WebSocket, exc: ClowderMLError) -> None:
    await websocket.close(code=4000 + exc.status % 1000, reason=exc.message[:120])


@router.websocket("/ws/{dataset_id}/{path:path}")
async def co_edit(websocket: WebSocket, dataset_id: str, path: str) -> None:
    """Join the co-editing room of a dataset file (y-websocket sync and awareness)."""
    platform: Platform = websocket.app.state.platform
    hub: CollabHub = websocket.app.state.collab
    await websocket.accept()
    if not same_origin(websocket):
        await _refuse(websocket, PermissionDenied("Cross-origin WebSocket refused."))
        return
    try:
        user = await to_thread.run_sync(current_user_ws, platform, websocket)
        access = await to_thread.run_sync(documents.open_document, platform.db, user,
                                          dataset_id, path)
        room = await hub.get_room(access.doc.room)
    except ClowderMLError as exc:
        await _refuse(websocket, exc)
        return
    channel = EditorChannel(websocket, access.doc.room, access.writable)
    presence = hub.presence(room)
    if presence is not None:
        await channel.send(presence)
    await hub.serve(channel)
    if websocket.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await websocket.close()

