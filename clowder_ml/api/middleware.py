"""ASGI middleware: request ids, one structured log line and Prometheus metrics per request.

Written as plain ASGI (not BaseHTTPMiddleware) so streamed bodies are not buffered.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clowder_ml.services.uploads import TUS_VERSION

log = logging.getLogger("clowder_ml.http")

REQUESTS = Counter("clowder_ml_http_requests_total", "HTTP requests",
                   ["method", "route", "status"])
LATENCY = Histogram("clowder_ml_http_request_seconds", "HTTP request latency",
                    ["method", "route"])
BYTES_IN = Counter("clowder_ml_http_request_bytes_total", "Request body bytes received",
                   ["route"])


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status_code = 500
        received = 0
        is_tus = scope["path"].startswith("/api/v1/uploads")

        async def counting_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
            return msg

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if is_tus:
                    headers.append((b"tus-resumable", TUS_VERSION.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, counting_receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - start
            REQUESTS.labels(scope["method"], label, str(status_code)).inc()
            LATENCY.labels(scope["method"], label).observe(elapsed)
            if received:
                BYTES_IN.labels(label).inc(received)
            log.info("request", extra={
                "request_id": request_id, "method": scope["method"], "path": scope["path"],
                "route": label, "status": status_code, "ms": round(elapsed * 1000, 1),
                "bytes_in": received,
            })
