"""Co-editing rooms: one Yjs document per dataset file, shared by every browser that has it
open (pycrdt-websocket's rooms speaking the y-websocket protocol).

* A room is created when the first editor connects: from the stored draft if there is one
  (unless nobody changed it and the file has a newer version), else from the file's text
  in the dataset's latest version. Every change is appended to the
  draft store (:class:`clowder_ml.services.documents.DocumentStore`) as it happens, so a
  restarted server serves the same text. A room with no editors left is closed, its draft
  compacted into one state update.
* Read-only editors (read access to the dataset) receive the document and its changes, but
  the server drops their own changes (``changes_document`` tells which messages those are;
  the API's channel applies it), whatever their browser does; presence messages pass.
* Rooms live in one server process: editors of one document must reach the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import anyio
from anyio import to_thread
from pycrdt import (
    Doc,
    Text,
    TransactionEvent,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
)
from pycrdt.websocket import WebsocketServer, YRoom

from clowder_ml.services import documents
from clowder_ml.services.documents import (
    COMPACT_AT_BYTES,
    DocumentRef,
    DocumentStore,
    DraftMeta,
)
from clowder_ml.services.platform import Platform

log = logging.getLogger("clowder_ml.collab")

# The Y.Text every editor binds to (y-monaco in the browser uses the same name).
ROOM_TEXT = "content"
# Messages that change a document: a client's answer to the server's state (step 2) and
# its incremental updates. A client's step 1 only asks for the server's state.
_WRITES = frozenset({YSyncMessageType.SYNC_STEP2.value, YSyncMessageType.SYNC_UPDATE.value})


def changes_document(message: bytes) -> bool:
    """True for y-websocket messages that would change the document."""
    return (len(message) >= 2 and message[0] == YMessageType.SYNC.value
            and message[1] in _WRITES)


def _log_exception(exception: Exception, logger: logging.Logger) -> bool:
    logger.error("co-editing room failed", exc_info=exception)
    return True


class CollabHub(WebsocketServer):
    """The co-editing rooms of one server process (start with ``open``, end with ``close``)."""

    def __init__(self, platform: Platform) -> None:
        super().__init__(rooms_ready=True, auto_clean_rooms=True,
                         exception_handler=_log_exception, log=log)
        self.platform = platform
        self.store = DocumentStore(platform.settings.resolved_data_dir / "documents")
        self._locks: dict[str, anyio.Lock] = {}
        self._meta: dict[str, DraftMeta] = {}  # per open room: see DraftMeta
        # Editors per room name from the moment they ask for the room until they leave it.
        # A room is closed only when this is 0: counting its clients would miss an editor
        # that got the room but is not among them yet, who would then type into a closed
        # room while the next editor gets a new one (their edits lost, the draft's "changed"
        # mark with them).
        self._editors: dict[str, int] = {}
        self._task: asyncio.Task[Any] | None = None

    # lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        self._task = asyncio.create_task(self.start())
        await self.started.wait()

    async def close(self) -> None:
        """Compact every open draft, then stop the rooms (at server shutdown)."""
        for name, room in list(self.rooms.items()):
            await to_thread.run_sync(self.store.replace, DocumentRef.from_room(name),
                                     room.ydoc.get_update())
        if self.running:
            await self.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # rooms --------------------------------------------------------------------------------

    async def serve(self, websocket: Any) -> None:
        """Serve one editor (pycrdt-websocket's ``serve``, with the room held open for the
        editor from the moment it asks for it, not from the moment it is a client)."""
        if self._task_group is None:
            raise RuntimeError("The co-editing hub is not running: call open() first.")
        name = websocket.path
        self._editors[name] = self._editors.get(name, 0) + 1
        room: YRoom | None = None
        try:
            try:
                room = await self.get_room(name)
                await self.start_room(room)
                await room.serve(websocket)
            finally:
                self._editors[name] -= 1
                if not self._editors[name]:
                    del self._editors[name]
            if self.auto_clean_rooms:
                await self.delete_room(room=room)
        except Exception as exception:
            self._handle_exception(exception)

    def _lock(self, name: str) -> anyio.Lock:
        # One lock per document (kept: a lock replaced while someone waits on it would let
        # two in): loading, starting and closing its room never interleave, so two first
        # editors load it once and a newcomer waits for a closing room's draft.
        return self._locks.setdefault(name, anyio.Lock())

    async def get_room(self, name: str) -> YRoom:
        """The room for ``name`` (a ``DocumentRef.room``), loaded and started if needed."""
        # Always under the document's lock, even for a running room: one being closed
        # (compacting its draft) must not be handed to a newcomer.
        async with self._lock(name):
            room: YRoom | None = self.rooms.get(name)
            if room is None:
                room = await self._load_room(DocumentRef.from_room(name))
                self.rooms[name] = room
            await self.start_room(room)
        return room

    async def _load_room(self, ref: DocumentRef) -> YRoom:
        updates = await to_thread.run_sync(self.store.load, ref)
        meta = await to_thread.run_sync(self.store.meta, ref)
        # A draft nobody changed follows the file: if a newer version of it was uploaded or
        # saved since, start again from that.
        if (updates is not None and meta is not None and not meta.dirty
                and await to_thread.run_sync(documents.current_sha, self.platform.db, ref)
                != meta.base):
            updates = None
        initial = None
        if updates is None:
            initial = await to_thread.run_sync(documents.current_file, self.platform.db,
                                               self.platform.blobs, ref)
        # The Doc is built here, on the event loop thread that will use it.
        doc: Doc[Any] = Doc()
        text = doc.get(ROOM_TEXT, type=Text)
        if initial is None:
            for update in updates or ():
                doc.apply_update(update)
            # A draft kept from before drafts had their metadata counts as changed.
            self._meta[ref.room] = meta or DraftMeta(base="", dirty=True)
        else:
            text += initial.text
            self._meta[ref.room] = DraftMeta(base=initial.sha256, dirty=False)
            await to_thread.run_sync(self.store.replace, ref, doc.get_update())
            await to_thread.run_sync(self.store.set_meta, ref, self._meta[ref.room])

        def persist(event: TransactionEvent) -> None:
            if self.store.append(ref, event.update) > COMPACT_AT_BYTES:
                self.store.replace(ref, doc.get_update())
            current = self._meta.get(ref.room)
            if current is not None and not current.dirty:
                self._meta[ref.room] = DraftMeta(current.base, dirty=True)
                self.store.set_meta(ref, self._meta[ref.room])

        doc.observe(persist)
        return YRoom(ready=True, ydoc=doc, exception_handler=_log_exception, log=log)

    async def mark_saved(self, ref: DocumentRef, saved: str) -> None:
        """The draft was saved as ``saved``: that is its new base, and it is unchanged
        unless someone typed since the text was read."""
        room = self.rooms.get(ref.room)
        now = str(room.ydoc.get(ROOM_TEXT, type=Text)) if room is not None else saved
        self._meta[ref.room] = DraftMeta(documents.sha256_of(saved), dirty=now != saved)
        await to_thread.run_sync(self.store.set_meta, ref, self._meta[ref.room])

    async def delete_room(self, *, name: str | None = None, room: YRoom | None = None) -> None:
        """Close a room with no editors, compacting its draft to one state update first
        (an editor who joined meanwhile keeps it open)."""
        if name is None:
            assert room is not None
            name = self.get_room_name(room)
        async with self._lock(name):
            current = self.rooms.get(name)
            if current is None or ((current.clients or self._editors.get(name))
                                   and self.running):
                return
            await to_thread.run_sync(self.store.replace, DocumentRef.from_room(name),
                                     current.ydoc.get_update())
            await super().delete_room(name=name)
            self._meta.pop(name, None)

    def presence(self, room: YRoom) -> bytes | None:
        """An awareness message with every editor the room knows of, for a newcomer (so
        it sees who is there now, not only those who move their cursor later)."""
        clients = [c for c, state in room.awareness.states.items() if state]
        if not clients:
            return None
        return create_awareness_message(room.awareness.encode_awareness_update(clients))

    async def text_of(self, ref: DocumentRef) -> str | None:
        """The draft's text: the live room's, else the stored draft's; None: no draft."""
        room = self.rooms.get(ref.room)
        if room is not None:
            return str(room.ydoc.get(ROOM_TEXT, type=Text))
        updates = await to_thread.run_sync(self.store.load, ref)
        if updates is None:
            return None
        doc: Doc[Any] = Doc()
        text = doc.get(ROOM_TEXT, type=Text)
        for update in updates:
            doc.apply_update(update)
        return str(text)
