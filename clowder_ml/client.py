"""Python SDK over the REST API.

``Client(url, token)`` (both default to ``CLOWDER_ML_URL`` / ``CLOWDER_ML_TOKEN``, then to the
file written by ``clowder-ml login``). Every API error is raised as the matching
``clowder_ml.errors`` class, rebuilt from the server's error code.

Uploads use tus and resume across process restarts: the upload URL is remembered in a small
state file keyed by the local file (path, size, mtime) and the target, so calling ``upload``
again after a crash or Ctrl-C continues from the server's offset.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx

from clowder_ml.errors import (
    ClowderMLError,
    Conflict,
    Gone,
    NotFound,
    ServiceUnavailable,
    TooManyAttempts,
    UploadFinalizing,
    ValidationFailed,
    error_from_payload,
)

TUS = {"Tus-Resumable": "1.0.0"}
DEFAULT_CHUNK = 64 << 20  # per PATCH; stays under common 100 MB proxy body limits
SEND_PIECE = 1 << 20  # bytes read from the file per write to the socket
HASH_CHUNK = 8 << 20
ProgressFn = Callable[[int, int], None]
T = TypeVar("T")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "clowder-ml"


def state_dir() -> Path:
    env = os.environ.get("CLOWDER_ML_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clowder-ml"


def load_login() -> dict[str, str]:
    try:
        data = json.loads((config_dir() / "config.json").read_text())
        return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_login(url: str, token: str) -> Path:
    path = config_dir() / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token}, fh)
    return path


def sha256_file(path: Path, progress: ProgressFn | None = None) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _check_unchanged(path: Path, before: os.stat_result) -> None:
    """Refuse to finish an upload of a file that changed since it started: what was sent
    would be a mix of two versions (the digest is of what was sent, so it would match)."""
    now = path.stat()
    if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise ValidationFailed(f"{path} changed during the upload.",
                               "Upload it again once it stops changing.")


class _SentDigest:
    """The sha256 of a file's first ``offset`` bytes: what the server holds of an upload.

    Advanced as PATCH bodies are sent (:meth:`piece` per piece, :meth:`confirm` once the
    server acknowledged them), so the whole file is read once, interleaved with sending,
    instead of hashed in a pass of its own before the first byte goes out. Any other offset
    (the server kept less after a dropped connection; a resumed upload) is reached by
    hashing the file from the start (:meth:`seek`)."""

    def __init__(self, fh: BinaryIO, progress: ProgressFn | None, total: int) -> None:
        self.fh, self.progress, self.total = fh, progress, total
        self.offset, self.h = 0, hashlib.sha256()
        self._pending = self.h.copy()

    def seek(self, offset: int) -> None:
        if offset < self.offset:
            self.offset, self.h = 0, hashlib.sha256()
        self.fh.seek(self.offset)
        while self.offset < offset:
            chunk = self.fh.read(min(HASH_CHUNK, offset - self.offset))
            if not chunk:
                break
            self.h.update(chunk)
            self.offset += len(chunk)
            if self.progress:
                self.progress(self.offset, self.total)
        self._pending = self.h.copy()

    def piece(self, data: bytes) -> None:
        self._pending.update(data)

    def confirm(self, sent: int, server_offset: int) -> None:
        """``sent`` bytes went out after ``offset``; the server now holds ``server_offset``."""
        if server_offset == self.offset + sent:
            self.offset, self.h = server_offset, self._pending
            self._pending = self.h.copy()
        else:
            self.seek(server_offset)

    def whole(self) -> str:
        """The digest of the entire file (reading what was not sent yet)."""
        rest = self.h.copy()
        self.fh.seek(self.offset)
        while chunk := self.fh.read(HASH_CHUNK):
            rest.update(chunk)
        return rest.hexdigest()


class ResumeStore:
    """Remembers unfinished upload URLs in a JSON file (locked for concurrent processes)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "uploads.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text())
                if not isinstance(data, dict):
                    data = {}
            except (OSError, ValueError):
                data = {}
            yield data
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._locked() as data:
            rec = data.get(key)
            return dict(rec) if isinstance(rec, dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        with self._locked() as data:
            data[key] = record

    def drop(self, key: str) -> None:
        with self._locked() as data:
            data.pop(key, None)


def _ref(ref: str) -> str:
    """A dataset reference as one URL segment ('owner/name' becomes 'owner:name')."""
    return ref.replace("/", ":", 1)


def _retry_after(resp: httpx.Response, default: float = 1.0) -> float:
    """Seconds the server asked to wait (``Retry-After``, in seconds), else ``default``."""
    try:
        return max(0.1, float(resp.headers.get("retry-after", default)))
    except ValueError:
        return default


def _encode_metadata(meta: dict[str, str]) -> str:
    """tus Upload-Metadata; an empty value is sent as the bare key (no trailing space)."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" if v else k
                    for k, v in meta.items())


class Client:
    """A connection to a clowder-ml server."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: float = 300.0, resume_store: ResumeStore | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        saved = load_login()
        self.url = (url or os.environ.get("CLOWDER_ML_URL") or saved.get("url")
                    or "http://127.0.0.1:8000").rstrip("/")
        self.token = token or os.environ.get("CLOWDER_ML_TOKEN") or saved.get("token")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                 follow_redirects=False, transport=transport)
        self.resume_store = resume_store or ResumeStore()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # plumbing --------------------------------------------------------------------------

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code < 400:
            return resp
        try:
            payload: Any = resp.json()
        except ValueError:
            payload = resp.text
        err = error_from_payload(resp.status_code, payload)
        if isinstance(err, TooManyAttempts):
            with contextlib.suppress(ValueError):
                err.retry_after = max(1, int(resp.headers.get("retry-after", "1")))
        elif isinstance(err, ServiceUnavailable) and "retry-after" in resp.headers:
            with contextlib.suppress(ValueError):
                err.retry_after_s = max(1, int(resp.headers["retry-after"]))
        raise err

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Cannot reach the server at {self.url}: {exc}",
                                     "Is `clowder-ml serve` running? Check CLOWDER_ML_URL.",
                                     ) from exc
        return self._check(resp)

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        return resp.json() if resp.content else None

    # auth and users --------------------------------------------------------------------

    @classmethod
    def login(cls, url: str, username: str, password: str, token_name: str = "cli",
              expires_in_days: float | None = None) -> Client:
        """Exchange credentials for a token and return a client that uses it."""
        anon = cls(url)
        try:
            body: dict[str, Any] = {"username": username, "password": password,
                                    "name": token_name}
            if expires_in_days:
                body["expires_in_days"] = expires_in_days
            token = anon._json("POST", "/api/v1/auth/token", json=body)["token"]
        finally:
            anon.close()
        return cls(url, token)

    def whoami(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/v1/users/me"))

    def create_user(self, username: str, password: str, is_admin: bool = False,
                    ) -> dict[str, Any]:
        return dict(self._json("POST", "/api/v1/users", json={
            "username": username, "password": password, "is_admin": is_admin}))

    def list_tokens(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/v1/tokens"))

    def create_token(self, name: str, expires_in_days: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if expires_in_days:
            body["expires_in_days"] = expires_in_days
        return dict(self._json("POST", "/api/v1/tokens", json=body))

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/api/v1/tokens/{token_id}")

    def unlock_user(self, username: str) -> dict[str, Any]:
        """Clear an account's failed log-ins (admins)."""
        return dict(self._json("POST", f"/api/v1/users/{quote(username, safe='')}/unlock"))

    def audit(self, *, action: str | None = None, actor: str | None = None,
              outcome: str | None = None, client: str | None = None,
              since: str | None = None, until: str | None = None, before: int | None = None,
              limit: int = 100) -> dict[str, Any]:
        """One page of audit records, newest first (admins): ``{"events", "next_before"}``;
        pass ``next_before`` as ``before`` for the next page."""
        params = {k: v for k, v in {"action": action, "actor": actor, "outcome": outcome,
                                    "client": client, "since": since, "until": until,
                                    "before": before, "limit": limit}.items()
                  if v is not None}
        return dict(self._json("GET", "/api/v1/audit", params=params))

    # datasets --------------------------------------------------------------------------

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/v1/datasets"))

    def create_dataset(self, name: str, description: str = "",
                       metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self._json("POST", "/api/v1/datasets", json={
            "name": name, "description": description, "metadata": metadata or {}}))

    def get_dataset(self, ref: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/datasets/{_ref(ref)}"))

    def ensure_dataset(self, ref: str) -> dict[str, Any]:
        try:
            return self.get_dataset(ref)
        except NotFound:
            try:
                return self.create_dataset(ref)
            except Conflict:
                return self.get_dataset(ref)

    def update_dataset(self, ref: str, description: str | None = None,
                       metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if metadata is not None:
            body["metadata"] = metadata
        return dict(self._json("PATCH", f"/api/v1/datasets/{_ref(ref)}", json=body))

    def delete_dataset(self, ref: str) -> None:
        self.request("DELETE", f"/api/v1/datasets/{_ref(ref)}")

    def share(self, ref: str, username: str, permission: str = "read") -> dict[str, Any]:
        return dict(self._json("PUT", f"/api/v1/datasets/{_ref(ref)}/shares/{username}",
                               json={"permission": permission}))

    def unshare(self, ref: str, username: str) -> None:
        self.request("DELETE", f"/api/v1/datasets/{_ref(ref)}/shares/{username}")

    def list_shares(self, ref: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/v1/datasets/{_ref(ref)}/shares"))

    def versions(self, ref: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/v1/datasets/{_ref(ref)}/versions"))

    def version(self, ref: str, number: int) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/datasets/{_ref(ref)}/versions/{number}"))

    def files(self, ref: str, version: int | None = None, prefix: str | None = None,
              ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {}
        if version:
            params["version"] = version
        if prefix:
            params["prefix"] = prefix
        return list(self._json("GET", f"/api/v1/datasets/{_ref(ref)}/files", params=params))

    def tree(self, ref: str, path: str = "", version: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"path": path}
        if version:
            params["version"] = version
        return dict(self._json("GET", f"/api/v1/datasets/{_ref(ref)}/tree", params=params))

    def preview(self, ref: str, path: str, rows: int = 20, version: int | None = None,
                ) -> dict[str, Any]:
        params: dict[str, Any] = {"rows": rows}
        if version:
            params["version"] = version
        url = f"/api/v1/datasets/{_ref(ref)}/preview/{path}"
        return dict(self._json("GET", url, params=params))

    def delete_file(self, ref: str, path: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/api/v1/datasets/{_ref(ref)}/files/{path}"))

    def file_metadata(self, ref: str, path: str) -> dict[str, Any]:
        url = f"/api/v1/datasets/{_ref(ref)}/file-metadata/{path}"
        return dict(self._json("GET", url)["metadata"])

    def set_file_metadata(self, ref: str, path: str, metadata: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("PUT", f"/api/v1/datasets/{_ref(ref)}/file-metadata/{path}",
                               json={"metadata": metadata})["metadata"])

    def add_small_file(self, ref: str, local: str | Path, path: str | None = None,
                       ) -> dict[str, Any]:
        """Plain multipart upload for small files (no resume)."""
        local = Path(local)
        with open(local, "rb") as fh:
            return dict(self._json("POST", f"/api/v1/datasets/{_ref(ref)}/files",
                                   files={"file": (local.name, fh)},
                                   data={"path": path or local.name}))

    def add_zip(self, ref: str, local: str | Path, prefix: str = "") -> dict[str, Any]:
        """Unpack a small zip into the dataset (multipart)."""
        local = Path(local)
        with open(local, "rb") as fh:
            return dict(self._json("POST", f"/api/v1/datasets/{_ref(ref)}/archive",
                                   files={"file": (local.name, fh, "application/zip")},
                                   data={"prefix": prefix}))

    # downloads -------------------------------------------------------------------------

    def download(self, ref: str, path: str, output: str | Path, version: int | None = None,
                 progress: ProgressFn | None = None) -> Path:
        """Download one file to ``output``, resuming a partial ``output.part`` by Range, and
        verify its sha256 before the file appears under its final name."""
        out = Path(output)
        if out.is_dir():
            out = out / Path(path).name
        part = out.with_name(out.name + ".part")
        params = {"version": version} if version else {}
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        url = f"/api/v1/datasets/{_ref(ref)}/files/{path}"
        try:
            with self.http.stream("GET", url, params=params, headers=headers) as resp:
                if resp.status_code == 416:  # partial file is stale: start over
                    part.unlink()
                    return self.download(ref, path, output, version, progress)
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                if resp.status_code != 206:
                    have = 0
                total = have + int(resp.headers.get("content-length", "0"))
                expected = resp.headers.get("x-content-sha256")
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(part, "ab" if have else "wb") as fh:
                    done = have
                    for chunk in resp.iter_bytes(1 << 20):
                        fh.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Download interrupted: {exc}",
                                     "Run the same command again to resume.") from exc
        if expected and sha256_file(part) != expected:
            part.unlink()
            raise ValidationFailed("Downloaded file does not match its sha256; removed it.",
                                   "Download it again.")
        os.replace(part, out)
        return out

    def download_version(self, ref: str, version: int, output: str | Path) -> Path:
        """Download a whole dataset version as a zip."""
        out = Path(output)
        try:
            with self.http.stream("GET", f"/api/v1/datasets/{_ref(ref)}/versions/{version}/archive",
                                  ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                tmp = out.with_name(out.name + ".part")
                with open(tmp, "wb") as fh:
                    for chunk in resp.iter_bytes(1 << 20):
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Download interrupted: {exc}") from exc
        os.replace(tmp, out)
        return out

    # resumable uploads -----------------------------------------------------------------

    def upload(self, local: str | Path, dataset: str, path: str | None = None, *,
               create_dataset: bool = True, unpack: bool = False,
               chunk_size: int = DEFAULT_CHUNK, progress: ProgressFn | None = None,
               hash_progress: ProgressFn | None = None, retries: int = 5,
               finalize_wait_s: float = 300.0) -> dict[str, Any]:
        """Upload a file by tus, resuming an earlier attempt; returns the upload's status
        (with the dataset ``version`` it created).

        ``unpack=True`` unpacks a zip into the dataset (``path`` is then the folder). When
        every byte arrived but the server could not add the file to the dataset yet (503: the
        dataset was busy, a passing failure), the upload is kept there ("finalizing"); this
        call waits for it as the server's ``Retry-After`` paces, up to ``finalize_wait_s``,
        without sending a byte again.

        The file's sha256 is computed as its bytes are sent and declared with the last
        PATCH; the server refuses the upload (460, nothing added) if what it received hashes
        differently, and a file that changed during the upload is refused here before the
        last PATCH. ``hash_progress`` reports hashing that is not sending: the part a resumed
        upload already sent.
        """
        local = Path(local)
        st = local.stat()
        if create_dataset:
            self.ensure_dataset(dataset)
        target = path if path is not None else ("" if unpack else local.name)
        key = json.dumps([self.url, dataset, target, unpack, str(local.resolve()),
                          st.st_size, st.st_mtime_ns])
        record = self.resume_store.get(key)
        upload_url: str | None = None
        offset = 0
        if record:
            upload_url = str(record["url"])
            try:
                offset = self._tus_offset(upload_url)
            except (NotFound, Gone):
                upload_url = None
        if upload_url is None:
            # No sha256 declared up front: the digest is computed while the bytes go out and
            # declared with the last PATCH (Upload-Sha256), which the server checks against
            # what it received before anything reaches the dataset.
            meta = {"dataset": dataset, "filename": local.name}
            meta.update({"unpack": "true", "prefix": target} if unpack else {"path": target})
            resp = self.request("POST", "/api/v1/uploads/", headers={
                **TUS, "Upload-Length": str(st.st_size),
                "Upload-Metadata": _encode_metadata(meta)})
            upload_url = str(httpx.URL(self.url).join(resp.headers["location"]))
            offset = int(resp.headers.get("upload-offset", "0"))
            self.resume_store.put(key, {"url": upload_url})
        failures = 0
        with open(local, "rb") as fh:
            sent = _SentDigest(fh, hash_progress, st.st_size)
            sent.seek(offset)  # a resumed upload: the bytes the server already holds
            if progress:
                progress(offset, st.st_size)

            def body(start: int, count: int, hashing: bool) -> Iterator[bytes]:
                # The PATCH body streamed from the file: memory stays at one piece however
                # large the chunk, and the socket is fed while the next piece is read.
                fh.seek(start)
                left = count
                while left > 0:
                    piece = fh.read(min(SEND_PIECE, left))
                    if not piece:
                        raise ValidationFailed(f"{local} got shorter during the upload.",
                                               "Upload it again once it stops changing.")
                    left -= len(piece)
                    if hashing:
                        sent.piece(piece)
                    yield piece

            while offset < st.st_size or st.st_size == 0:
                count = min(chunk_size, st.st_size - offset)
                headers = {**TUS, "Upload-Offset": str(offset), "Content-Length": str(count),
                           "Content-Type": "application/offset+octet-stream"}
                last = offset + count == st.st_size
                if last:
                    _check_unchanged(local, st)
                    # The digest goes in a header, before the body: the last piece of the
                    # file is read twice (once here), every other byte once.
                    headers["Upload-Sha256"] = sent.whole()
                try:
                    resp = self.http.patch(
                        upload_url, headers=headers,
                        content=body(offset, count, not last) if count else b"")
                except httpx.TransportError as exc:
                    offset, failures = self._wait_for_offset(upload_url, offset, failures + 1,
                                                             retries, exc)
                    sent.seek(offset)
                    continue
                if resp.status_code in (409, 423):  # offset moved or another writer: re-sync
                    failures += 1
                    if failures > retries:
                        self._check(resp)
                    time.sleep(0.2 * failures)
                    offset = self._tus_offset(upload_url)
                    sent.seek(offset)
                    continue
                if resp.status_code == 503:  # bytes kept; not in the dataset yet: re-sync
                    failures += 1
                    if failures > retries:
                        self._check(resp)
                    time.sleep(min(_retry_after(resp), 0.5 * failures))
                    offset = self._tus_offset(upload_url)
                    if progress:
                        progress(offset, st.st_size)
                    if offset >= st.st_size:
                        break  # all arrived: _finish_upload waits for the commit
                    sent.seek(offset)
                    continue
                if resp.status_code >= 400:
                    if resp.status_code in (410, 460) or resp.status_code == 422:
                        self.resume_store.drop(key)
                    self._check(resp)
                failures = 0
                new_offset = int(resp.headers["upload-offset"])
                sent.confirm(count, new_offset)
                offset = new_offset
                if progress:
                    progress(offset, st.st_size)
                if st.st_size == 0:
                    break
        status = self._finish_upload(upload_url, st.st_size, finalize_wait_s)
        self.resume_store.drop(key)
        if status.get("state") == "failed":
            raise ValidationFailed(f"Upload failed on the server: {status.get('error')}")
        return status

    def _finish_upload(self, upload_url: str, size: int, wait_s: float) -> dict[str, Any]:
        """The upload's status once it left "finalizing": every byte is on the server, which
        retries adding the file by itself; an empty PATCH at the full offset asks it to try
        again now, as often as its ``Retry-After`` says, for up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        path = httpx.URL(upload_url).path
        while True:
            status = dict(self._json("GET", path))
            if status.get("state") != "finalizing":
                return status
            if time.monotonic() >= deadline:
                raise UploadFinalizing(
                    f"Every byte arrived, but the server has not added the file to the "
                    f"dataset yet: {status.get('error') or 'the dataset is busy'}.",
                    "The upload is kept and the server keeps trying; run the same upload "
                    "again later to see it finish (nothing is sent twice).")
            resp = self.http.patch(upload_url, content=b"", headers={
                **TUS, "Upload-Offset": str(size), "Content-Length": "0",
                "Content-Type": "application/offset+octet-stream"})
            if resp.status_code < 400:
                continue  # added now: read the status
            if resp.status_code != 503:
                self._check(resp)
            time.sleep(max(0.0, min(_retry_after(resp), deadline - time.monotonic())))

    def _wait_for_offset(self, upload_url: str, offset: int, failures: int, retries: int,
                         cause: Exception) -> tuple[int, int]:
        """After a lost connection, back off until the server answers with its offset (it may
        be restarting); give up after ``retries`` failed attempts in a row."""
        while failures <= retries:
            time.sleep(min(0.25 * 2.0 ** failures, 10.0))
            try:
                return self._tus_offset(upload_url), failures
            except ServiceUnavailable:
                failures += 1
        raise ServiceUnavailable(f"Upload interrupted at byte {offset}: {cause}",
                                 "Run the same upload again; it resumes where it stopped.",
                                 ) from cause

    def _tus_offset(self, upload_url: str) -> int:
        resp = self.request("HEAD", upload_url, headers=TUS)
        return int(resp.headers["upload-offset"])

    def upload_status(self, upload_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/uploads/{upload_id}"))

    # jobs ------------------------------------------------------------------------------
    # The Jobs API of docs/jobs.md. Reads that poll or stream (``wait_job``,
    # ``follow_job_logs``) ride through a server restart: connection errors and 503 answers
    # are retried with backoff for up to ``JOB_RIDE_THROUGH_S`` seconds in a row.

    def submit_job(self, task: str, *, datasets: Sequence[str | tuple[str, int]] = (),
                   params: dict[str, Any] | None = None, cpus: float | None = None,
                   gpus: float | None = None, memory: int | str | None = None,
                   timeout_s: float | None = None, retries: int | None = None,
                   inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Submit a job and return it (``JobOut``, usually ``pending``).

        ``datasets`` are names (``"iris"``, ``"alice/iris"``) read at their latest version,
        which the server pins at submission, or ``(name, version)`` pairs; ``inputs`` are
        further raw ``InputRef`` objects appended after them. ``memory`` is bytes or a size
        such as ``"2G"``. Resources, timeout and retry policy are sent only when given, so the
        server's defaults apply otherwise.
        """
        refs: list[dict[str, Any]] = []
        for item in datasets:
            name, version = (item, None) if isinstance(item, str) else item
            refs.append({"kind": "dataset", "ref": _ref(name), "version": version})
        spec: dict[str, Any] = {"task": task, "params": dict(params or {}),
                                "inputs": refs + list(inputs or [])}
        asked = {"cpus": cpus, "gpus": gpus, "memory_bytes": memory}
        resources = {k: v for k, v in asked.items() if v is not None}
        if resources:
            spec["resources"] = resources
        if timeout_s is not None:
            spec["timeout_s"] = timeout_s
        if retries is not None:
            spec["retry"] = {"max_retries": retries}
        return dict(self._json("POST", "/api/v1/jobs", json=spec))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/jobs/{job_id}"))

    def list_jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        """Your jobs, oldest first; ``state`` keeps only the jobs in that state."""
        params = {"state": state} if state else {}
        return list(self._json("GET", "/api/v1/jobs", params=params))

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Ask to cancel; the answer may still be running with ``cancel_requested`` set (the
        state becomes ``cancelled`` once Ray stopped it: ``wait_job`` to see it)."""
        return dict(self._json("POST", f"/api/v1/jobs/{job_id}/cancel"))

    def job_events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/v1/jobs/{job_id}/events"))

    def job_logs(self, job_id: str, offset: int = 0) -> str:
        """The job's log from byte ``offset`` on, as written so far."""
        resp = self.request("GET", f"/api/v1/jobs/{job_id}/logs",
                            params={"offset": offset, "follow": "false"})
        return resp.content.decode("utf-8", errors="replace")

    def follow_job_logs(self, job_id: str, offset: int = 0) -> Iterator[str]:
        """Yield the job's log as it is written, from byte ``offset`` until the job is terminal.

        A dropped stream (server restart, proxy timeout) is reopened from the byte offset
        reached, with the same backoff as uploads; it gives up with ``ServiceUnavailable``
        once the server has been unreachable for ``JOB_RIDE_THROUGH_S`` seconds in a row.
        Errors such as ``NotFound`` are raised at once.
        """
        url = f"/api/v1/jobs/{job_id}/logs"
        # One decoder for the whole byte stream: a reconnection resumes at the exact byte, so
        # a character split across two connections still decodes.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        backoff = _Backoff()
        while True:
            got = False
            try:
                with self.http.stream("GET", url, params={"offset": offset,
                                                          "follow": "true"}) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        self._check(resp)
                    for chunk in resp.iter_bytes():
                        offset += len(chunk)
                        got = True
                        if text := decoder.decode(chunk):
                            yield text
            except (httpx.TransportError, ServiceUnavailable) as exc:
                backoff.wait(ServiceUnavailable(
                    f"Log stream of {job_id} interrupted at byte {offset}: {exc}",
                    "Follow it again; it continues where it stopped."))
                continue
            # The server ends the stream when the job is terminal, but a proxy or a server
            # shutting down may end it early: only the job's state tells the two apart.
            job = self._ride_through(lambda: self.get_job(job_id))
            if job["state"] in TERMINAL_JOB_STATES:
                # Bytes written between the end of the stream and the job's end, if any.
                rest = self._ride_through(functools.partial(
                    self.request, "GET", url, params={"offset": offset, "follow": "false"},
                )).content
                if text := decoder.decode(rest, final=True):
                    yield text
                return
            if got:
                backoff.reset()
            else:  # an empty stream on a live job: do not spin
                backoff.wait(ServiceUnavailable(
                    f"The log stream of {job_id} keeps ending while the job is "
                    f"{job['state']}."))

    def job_metrics(self, job_id: str, name: str | None = None, after: int = 0,
                    ) -> list[dict[str, Any]]:
        """Metric points (``id``, ``step``, ``name``, ``value``, ``at``) with ``id > after``,
        oldest first; pass the last ``id`` seen as ``after`` to poll for new ones."""
        params: dict[str, Any] = {"after": after}
        if name:
            params["name"] = name
        return list(self._json("GET", f"/api/v1/jobs/{job_id}/metrics", params=params))

    def job_outputs(self, job_id: str) -> list[dict[str, Any]]:
        """The files the job wrote (``path``, ``sha256``, ``size``)."""
        return list(self._json("GET", f"/api/v1/jobs/{job_id}/outputs"))

    def download_job_output(self, job_id: str, path: str, dest: str | Path) -> Path:
        """Download one output file to ``dest`` (a file, or a folder to put it in). The file
        appears under its final name only once complete and matching its listed sha256."""
        out = Path(dest)
        if out.is_dir():
            out = out / Path(path).name
        expected = {o["path"]: o.get("sha256") for o in self.job_outputs(job_id)}.get(path)
        return self._download_verified(f"/api/v1/jobs/{job_id}/outputs/{path}", out, expected,
                                       f"Output {path}")

    def _download_verified(self, url: str, out: Path, expected: str | None, what: str) -> Path:
        """Stream ``url`` to ``out`` through a ``.part`` file, checked against ``expected``."""
        part = out.with_name(out.name + ".part")
        h = hashlib.sha256()
        try:
            with self.http.stream("GET", url) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._check(resp)
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(part, "wb") as fh:
                    for chunk in resp.iter_bytes(1 << 20):
                        fh.write(chunk)
                        h.update(chunk)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"Download interrupted: {exc}",
                                     "Run the same command again.") from exc
        if expected and h.hexdigest() != expected:
            part.unlink()
            raise ValidationFailed(f"{what} does not match its sha256; removed it.",
                                   "Download it again.")
        os.replace(part, out)
        return out

    # models and tasks -------------------------------------------------------------------

    def list_tasks(self) -> list[dict[str, Any]]:
        """Tasks with the JSON schema of their params."""
        return list(self._json("GET", "/api/v1/tasks"))

    def list_models(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/v1/models"))

    def model_versions(self, name: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/api/v1/models/{_ref(name)}/versions"))

    def model_version(self, ref: str) -> dict[str, Any]:
        """The version ``ref`` names: ``NAME/N``, ``NAME@N``, ``NAME[@latest]``,
        ``NAME@ALIAS`` (``@best``, ``@production``...), ``OWNER:NAME/N``."""
        return dict(self._json("GET", f"/api/v1/model-refs/{quote(ref, safe=':@/')}"))

    def _version_path(self, ref: str) -> str:
        v = self.model_version(ref)
        return f"/api/v1/models/{v['ref'].rsplit('/', 1)[0]}/versions/{v['version']}"

    def model(self, name: str) -> dict[str, Any]:
        """A model: description, tags, aliases, best-version rule, version count."""
        return dict(self._json("GET", f"/api/v1/models/{_ref(name)}"))

    def update_model(self, name: str, **fields: Any) -> dict[str, Any]:
        """Set ``description``, ``tags``, ``best_metric`` + ``best_mode`` (the rule the
        ``best`` alias follows) or ``clear_best_rule=True``."""
        return dict(self._json("PATCH", f"/api/v1/models/{_ref(name)}", json=fields))

    def update_model_version(self, ref: str, **fields: Any) -> dict[str, Any]:
        """Set a version's ``description`` or ``tags``."""
        return dict(self._json("PATCH", self._version_path(ref), json=fields))

    def set_model_alias(self, name: str, version: int, alias: str, reason: str = ""
                        ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (moved if it exists); returns aliases + history."""
        return dict(self._json("PUT", f"/api/v1/models/{_ref(name)}/aliases/{alias}",
                               json={"version": version, "reason": reason}))

    def remove_model_alias(self, name: str, alias: str) -> dict[str, Any]:
        return dict(self._json("DELETE", f"/api/v1/models/{_ref(name)}/aliases/{alias}"))

    def model_aliases(self, name: str) -> dict[str, Any]:
        """``{"aliases": [...], "history": [...]}`` (every move, oldest first)."""
        return dict(self._json("GET", f"/api/v1/models/{_ref(name)}/aliases"))

    def compare_models(self, name: str, versions: list[int]) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/models/{_ref(name)}/compare",
                               params={"versions": ",".join(str(v) for v in versions)}))

    def model_lineage(self, ref: str) -> dict[str, Any]:
        return dict(self._json("GET", f"{self._version_path(ref)}/lineage"))

    def dataset_lineage(self, dataset: str, version: int) -> dict[str, Any]:
        return dict(self._json("GET",
                               f"/api/v1/datasets/{_ref(dataset)}/versions/{version}/lineage"))

    def delete_model_version(self, ref: str, force: bool = False) -> None:
        """Refused (Conflict) while an alias points at it, unless ``force``."""
        self._json("DELETE", self._version_path(ref),
                   params={"force": "true"} if force else None)

    def export_model(self, ref: str, dataset: str, path: str = "") -> dict[str, Any]:
        """Add the version's files to ``dataset`` (a new dataset version)."""
        return dict(self._json("POST", f"{self._version_path(ref)}/export",
                               json={"dataset": dataset, "path": path}))

    def export_model_to_clowder(self, ref: str, dataset_id: str, api_key: str
                                ) -> dict[str, Any]:
        """Upload the version into Clowder dataset ``dataset_id`` (on the server's Clowder)
        with ``api_key``, the user's Clowder key; the Clowder file and metadata ids."""
        return dict(self._json("POST", f"{self._version_path(ref)}/export-to-clowder",
                               json={"dataset_id": dataset_id, "api_key": api_key}))

    def import_model(self, name: str, dataset: str, path: str = "",
                     version: int | None = None, description: str = "") -> dict[str, Any]:
        """Register a dataset folder holding a Hugging Face model (safetensors only) as the
        next version of ``name``; ``{"version": ..., "skipped": [pickle files left out]}``."""
        return dict(self._json("POST", "/api/v1/models/import", json={
            "name": name, "dataset": dataset, "path": path, "version": version,
            "description": description}))

    def download_model_zip(self, ref: str, dest: str | Path) -> Path:
        """The version's folder as one zip file at ``dest``."""
        return self._download_verified(f"{self._version_path(ref)}/archive", Path(dest), None,
                                       f"The zip of {ref}")

    def reproduce_model(self, ref: str, cpus: float | None = None,
                        gpus: float | None = None) -> dict[str, Any]:
        """Start a reproduce run; the returned object's ``verdict`` is ``pending``."""
        body = {k: v for k, v in (("cpus", cpus), ("gpus", gpus)) if v is not None}
        return dict(self._json("POST", f"{self._version_path(ref)}/reproduce", json=body))

    def reproduction(self, ref: str, reproduction_id: int) -> dict[str, Any]:
        return dict(self._json(
            "GET", f"{self._version_path(ref)}/reproductions/{reproduction_id}"))

    def wait_reproduction(self, ref: str, reproduction_id: int,
                          timeout_s: float | None = None) -> dict[str, Any]:
        """Wait for the reproduce job, then return the verdict object."""
        first = self.reproduction(ref, reproduction_id)
        self.wait_job(first["job_id"], timeout_s=timeout_s)
        return self.reproduction(ref, reproduction_id)

    def share_model(self, name: str, username: str, permission: str = "read") -> None:
        self._json("PUT", f"/api/v1/models/{_ref(name)}/shares/{username}",
                   json={"permission": permission})

    def download_model(self, ref: str, dest: str | Path) -> Path:
        """Download a version's files (its Hugging Face folder) into ``dest``, each verified
        against its sha256."""
        base = f"{self._version_path(ref)}/files"
        out = Path(dest)
        for f in self._json("GET", base):
            self._download_verified(f"{base}/{f['path']}", out / f["path"], f["sha256"],
                                    f"Model file {f['path']}")
        return out

    def wait_job(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.5,
                 on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll the job until it is terminal (succeeded, failed or cancelled) and return it.

        ``on_update`` gets the job after every poll. Connection errors and 503 answers are
        ridden through for up to ``JOB_RIDE_THROUGH_S`` seconds in a row (then
        ``ServiceUnavailable``); ``TimeoutError`` once ``timeout_s`` passed with the job
        still live (the job itself keeps running).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        backoff = _Backoff()
        while True:
            try:
                job = self.get_job(job_id)
            except ServiceUnavailable as exc:
                backoff.wait(exc)
                state = "unknown (server unreachable)"
            else:
                backoff.reset()
                if on_update:
                    on_update(job)
                state = str(job["state"])
                if state in TERMINAL_JOB_STATES:
                    return job
                time.sleep(poll_s if deadline is None
                           else max(0.0, min(poll_s, deadline - time.monotonic())))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Job {job_id} is still {state} after {timeout_s} s.")

    def _ride_through(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried with backoff while the server is unreachable or answers 503."""
        backoff = _Backoff()
        while True:
            try:
                return fn()
            except ServiceUnavailable as exc:
                backoff.wait(exc)


# jobs: states and retry pacing (used by the jobs section of Client) ----------------------

TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})
JOB_RIDE_THROUGH_S = 60.0  # long enough for a server restart, short enough to notice an outage


class _Backoff:
    """Backoff between retries of a read while the server is away: sleeps like ``upload``
    does across a restart (0.5, 1, 2, 4, 8, then 10 s) and re-raises the error once failures
    in a row have lasted ``budget_s``."""

    def __init__(self, budget_s: float = JOB_RIDE_THROUGH_S) -> None:
        self.budget_s = budget_s
        self.failures = 0
        self.since: float | None = None

    def reset(self) -> None:
        self.failures, self.since = 0, None

    def wait(self, error: ClowderMLError) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        left = self.budget_s - (now - self.since)
        if left <= 0:
            raise error
        self.failures += 1
        time.sleep(min(0.25 * 2.0 ** self.failures, 10.0, left))


__all__ = ["Client", "ClowderMLError", "ResumeStore"]
