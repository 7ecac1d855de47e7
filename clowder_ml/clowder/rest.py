"""The calls this connector makes to Clowder v2's REST API, with the key of one request.

Every path and shape is Clowder v2's own (clowder-framework/clowder2, ``backend/app``):

* ``GET  /api/v2/users/profile``: ``routers/users.py`` ``get_profile``
* ``GET  /api/v2/datasets/{id}/files``: ``routers/datasets.py`` ``get_dataset_files``
* ``GET  /api/v2/files/{id}/summary``: ``routers/files.py`` ``get_file_summary``
* ``GET  /api/v2/files/{id}``: ``routers/files.py`` ``download_file``
* ``POST /api/v2/datasets/{id}/files``: ``routers/datasets.py`` ``save_file``
* ``POST /api/v2/datasets/{id}/metadata``: ``routers/metadata_datasets.py``
  ``add_dataset_metadata``

Authentication is the ``X-API-KEY`` header (``keycloak_auth.py`` ``get_current_username``).
The key never appears in a URL, a log line or an error message. Clowder's answers become
:class:`ClowderRefused` (a 4xx: the request cannot succeed as sent) or
:class:`ClowderUnreachable` (no answer or a 5xx: worth trying again later).
"""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any, Protocol

import httpx

from clowder_ml.errors import ClowderMLError, NotFound, ServiceUnavailable

PAGE = 100  # files listed per request
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class ClowderRefused(ClowderMLError):
    """Clowder answered a call with a client error (missing rights, unknown id, bad body)."""

    code = "clowder_refused"
    status = 502


class ClowderNotConfigured(NotFound):
    """This server is connected to no Clowder instance (``CLOWDER_ML_CLOWDER_URL`` unset):
    there is nothing to export to."""

    code = "clowder_not_configured"


class ClowderUnreachable(ServiceUnavailable):
    """Clowder did not answer, or answered with a server error."""

    code = "clowder_unreachable"


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail if detail is not None else body)[:200]


class ClowderApi:
    """Clowder v2 at ``base_url`` (``https://host``; ``/api/v2`` is added), as the owner of
    ``key``. Use as a context manager, or call :meth:`close`."""

    def __init__(self, base_url: str, key: str, *, transport: httpx.BaseTransport | None = None
                 ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url + "/api/v2", timeout=TIMEOUT,
                                  headers={"X-API-KEY": key}, transport=transport)

    def __enter__(self) -> ClowderApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ClowderUnreachable(f"Clowder at {self.base_url} did not answer "
                                     f"{method} {path}: {type(exc).__name__}.") from None
        self._check(method, path, resp)
        return resp

    def _check(self, method: str, path: str, resp: httpx.Response) -> None:
        if resp.status_code >= 500:
            raise ClowderUnreachable(f"Clowder answered {method} {path} with "
                                     f"{resp.status_code}: {_detail(resp)}")
        if resp.status_code >= 400:
            hint = ("The key Clowder sent with the request was refused."
                    if resp.status_code in (401, 403) else None)
            raise ClowderRefused(f"Clowder refused {method} {path} ({resp.status_code}): "
                                 f"{_detail(resp)}", hint)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._send(method, path, **kw)
        try:
            return resp.json()
        except ValueError:
            raise ClowderRefused(f"Clowder's answer to {method} {path} is not JSON.") from None

    # reads -------------------------------------------------------------------------------

    def profile(self) -> dict[str, Any]:
        """The user the key belongs to (``UserOut``: ``id``, ``email``, names)."""
        return dict(self._json("GET", "/users/profile"))

    def dataset_files(self, dataset_id: str) -> list[dict[str, Any]]:
        """Every file of the dataset's top level and folders (``FileOut``), page by page."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._json("GET", f"/datasets/{dataset_id}/files",
                              params={"skip": len(out), "limit": PAGE})
            data = list(page.get("data", [])) if isinstance(page, dict) else []
            out.extend(data)
            total = (page.get("metadata") or {}).get("total_count") if isinstance(
                page, dict) else None
            if not data or (isinstance(total, int) and len(out) >= total):
                return out

    def file_summary(self, file_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/files/{file_id}/summary"))

    def download(self, file_id: str, dest: Sink, limit: int) -> int:
        """Stream the file's bytes into ``dest``; refuses (``ClowderRefused``) more than
        ``limit`` bytes. Returns the byte count."""
        path = f"/files/{file_id}"
        try:
            with self._http.stream("GET", path) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check("GET", path, resp)
                size = 0
                for chunk in resp.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise ClowderRefused(f"File {file_id} is larger than {limit} bytes, "
                                             "this server's limit for one file.")
                    dest.write(chunk)
                return size
        except httpx.TransportError as exc:
            raise ClowderUnreachable(f"Clowder at {self.base_url} broke off GET {path}: "
                                     f"{type(exc).__name__}.") from None

    # writes ------------------------------------------------------------------------------

    def upload(self, dataset_id: str, local: Path, name: str | None = None) -> dict[str, Any]:
        """Add ``local`` to the dataset's top level as ``name`` (``FileOut``)."""
        filename = name or local.name
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        with local.open("rb") as fh:
            return dict(self._json("POST", f"/datasets/{dataset_id}/files",
                                   files={"file": (filename, fh, ctype)}))

    def add_dataset_metadata(self, dataset_id: str, content: dict[str, Any],
                             context: list[Any], listener: dict[str, str]) -> dict[str, Any]:
        """Attach JSON-LD metadata (``MetadataIn``) to the dataset, written by ``listener``."""
        body = {"content": content, "context": context, "listener": listener}
        return dict(self._json("POST", f"/datasets/{dataset_id}/metadata",
                               content=json.dumps(body),
                               headers={"Content-Type": "application/json"}))
