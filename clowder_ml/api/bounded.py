"""Routes whose request body is bounded while it is read (not after it is in memory).

FastAPI reads a JSON body whole before validating it, so ``max_length`` on a field cannot
stop a client from sending a gigabyte. ``bounded_route(limit)`` is an ``APIRoute`` class
(FastAPI's documented way to customize request handling) whose requests stop reading at
``limit`` bytes and answer 413 ``payload_too_large``; routers of this class declare the 413
(``responses=api.responses.errors(PayloadTooLarge)``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute


class _BoundedRequest(Request):
    limit: int = 0

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.limit:
                raise _too_large(self.limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.limit:
                    raise _too_large(self.limit)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


def _too_large(limit: int) -> HTTPException:
    # An HTTPException, because FastAPI turns any other error raised while it reads the
    # body into a 400; the app's handler renders it as {"error": {"code": ...}}.
    return HTTPException(413, f"The request body is larger than {limit} bytes.")


def bounded_route(limit: int) -> type[APIRoute]:
    """An ``APIRoute`` class for routers whose bodies may be at most ``limit`` bytes."""

    class BoundedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def bounded_handler(request: Request) -> Response:
                bounded = _BoundedRequest(request.scope, request.receive)
                bounded.limit = limit
                return await handler(bounded)

            return bounded_handler

    return BoundedRoute
