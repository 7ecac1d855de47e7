"""A y-websocket client for tests: a pycrdt ``Provider`` over a ``websockets`` connection
to the server's documents WebSocket (what y-websocket does in the browser)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from pycrdt import Doc, Provider, Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

TEXT = "content"  # the Y.Text the server and y-monaco use


class WsChannel:
    """A ``websockets`` client connection as a pycrdt ``Channel``."""

    def __init__(self, ws: ClientConnection, path: str) -> None:
        self.ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WsChannel:
        return self

    async def __anext__(self) -> bytes:
        return await self.recv()

    async def recv(self) -> bytes:
        try:
            data = await self.ws.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None
        return data if isinstance(data, bytes) else data.encode()

    async def send(self, message: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(message)


def ws_url(base: str, dataset_id: str, path: str) -> str:
    return base.replace("http", "ws", 1) + f"/api/v1/documents/ws/{dataset_id}/{path}"


@dataclass
class Editor:
    doc: Doc
    text: Text
    ws: ClientConnection

    async def wait_for(self, check: Callable[[str], bool], timeout: float = 10.0) -> str:
        """Wait until the text passes ``check`` (woken by every change, not by a clock)."""
        changed = anyio.Event()

        def on_change(_event: object) -> None:
            changed.set()

        sub = self.text.observe(on_change)
        try:
            with anyio.fail_after(timeout):
                while not check(str(self.text)):
                    await changed.wait()
                    changed = anyio.Event()
        finally:
            self.text.unobserve(sub)
        return str(self.text)


@contextlib.asynccontextmanager
async def editor(base: str, dataset_id: str, path: str, token: str | None = None,
                 origin: str | None = None) -> AsyncIterator[Editor]:
    """Join the document's room and wait for the first sync."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(ws_url(base, dataset_id, path), additional_headers=headers,
                       origin=origin) as ws:  # type: ignore[arg-type]
        doc: Doc = Doc()
        text = doc.get(TEXT, type=Text)
        async with Provider(doc, WsChannel(ws, path)) as provider:
            with anyio.fail_after(10):
                await provider.synced.wait()
            yield Editor(doc, text, ws)


async def refusal(base: str, dataset_id: str, path: str, token: str | None = None,
                  origin: str | None = None) -> tuple[int, str]:
    """The close code and reason the server answers a connection with."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with connect(ws_url(base, dataset_id, path), additional_headers=headers,
                       origin=origin) as ws:  # type: ignore[arg-type]
        with anyio.fail_after(10):
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code, exc.rcvd.reason
