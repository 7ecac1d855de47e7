"""The runner's HTTP client for the runner API, authenticated with the job token.

Transient failures (server restarting, connection refused, 502/503/504) are retried with
backoff until ``retry_s`` has passed, so a runner rides through an API server restart.
A refused token (401) means the job has ended on the server (cancelled, timed out, lost):
that raises :class:`TokenRefused` at once, and the runner stops.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

TRANSIENT_STATUS = {502, 503, 504}


class TokenRefused(Exception):
    """The server no longer accepts this job's token: the job is over there."""


class ApiFailed(Exception):
    """The server refused a request for good, or stayed unreachable past the deadline."""


class RunnerApi:
    def __init__(self, url: str, token: str, *, retry_s: float = 600.0,
                 timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.retry_s = retry_s
        self._http = httpx.Client(base_url=self.url + "/api/v1/runner", timeout=timeout_s,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, retry_s: float | None = None,
                content: Callable[[], Iterator[bytes]] | None = None,
                **kw: Any) -> httpx.Response:
        """Send, retrying transient failures for up to ``retry_s`` (default: the client's).

        ``content`` makes a fresh streamed body for each attempt.
        """
        deadline = time.monotonic() + (self.retry_s if retry_s is None else retry_s)
        delay = 0.2
        while True:
            try:
                if content is not None:
                    kw["content"] = content()
                r = self._http.request(method, path, **kw)
                if r.status_code not in TRANSIENT_STATUS:
                    break
                problem = f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline:
                raise ApiFailed(f"{method} {path}: server unreachable ({problem})")
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, 5.0)
        if r.status_code == 401:
            raise TokenRefused("the server refused the job token (the job has ended there)")
        if r.status_code >= 400:
            try:
                detail = str(r.json()["error"]["message"])
            except (ValueError, KeyError, TypeError):
                detail = f"{method} {path}: HTTP {r.status_code} {r.text[:300]}"
            raise ApiFailed(detail)
        return r

    def job(self) -> dict[str, Any]:
        data: dict[str, Any] = self.request("GET", "/job").json()
        return data

    def report(self, body: dict[str, Any], *, retry_s: float | None = None) -> dict[str, Any]:
        data: dict[str, Any] = self.request("POST", "/report", json=body,
                                            retry_s=retry_s).json()
        return data

    def finish(self, status: str, *, result: dict[str, Any] | None = None,
               reason: str | None = None) -> None:
        self.request("POST", "/finish", json={"status": status, "result": result,
                                              "reason": reason})

    def download_blob(self, sha256: str, dest: Path) -> None:
        """Stream one input blob to ``dest`` (retrying a broken transfer from scratch)."""
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                with self._http.stream("GET", f"/blobs/{sha256}") as r:
                    if r.status_code == 401:
                        raise TokenRefused("the server refused the job token")
                    if r.status_code in TRANSIENT_STATUS:
                        problem = f"HTTP {r.status_code}"
                    elif r.status_code != 200:
                        raise ApiFailed(f"input {sha256[:12]}: HTTP {r.status_code}")
                    else:
                        with open(dest, "wb") as f:
                            for chunk in r.iter_bytes(1 << 20):
                                f.write(chunk)
                        return
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ApiFailed(f"input {sha256[:12]}: server unreachable ({problem})")
            time.sleep(1.0)

    def upload_output(self, path: str, local: Path) -> dict[str, Any]:
        def body() -> Iterator[bytes]:
            with open(local, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        data: dict[str, Any] = self.request("PUT", f"/outputs/{path}", content=body).json()
        return data
