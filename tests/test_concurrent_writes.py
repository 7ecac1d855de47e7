"""Concurrent writers on one dataset, against a live server on SQLite and on PostgreSQL.

Commits to one dataset are serialized by a lock both databases honour, so every writer's
change lands as its own version and none is refused for contention. When the lock stays
taken past the bound, the answer is 503 with Retry-After and nothing changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_BASE, Api, ServerProcess
from tests.test_uploads_tus import OCTET, TUS, meta

WRITERS = 32


@dataclass
class Live:
    server: ServerProcess
    auth: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         pg_admin_engine: Any) -> Iterator[Live]:
    """``clowder-ml serve`` on each database (a private schema on PostgreSQL)."""
    env: dict[str, str] = {}
    schema = f"t_{secrets.token_hex(6)}"
    if request.param == "postgresql":
        with pg_admin_engine.connect() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
        env["CLOWDER_ML_DATABASE_URL"] = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    srv = ServerProcess(tmp_path_factory.mktemp(f"live-{request.param}") / "data", env)
    try:
        srv.start()
        yield Live(srv, {"Authorization": f"Bearer {srv.token()}"})
    finally:
        srv.stop()
        if request.param == "postgresql":
            with pg_admin_engine.connect() as c:
                c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def _multipart(http: httpx.Client, ds: str, path: str, data: bytes) -> tuple[int, int | None]:
    r = http.post(f"/api/v1/datasets/{ds}/files", data={"path": path},
                  files={"file": ("f", data)})
    return r.status_code, (r.json()["number"] if r.status_code == 201 else None)


def _tus(http: httpx.Client, ds: str, path: str, data: bytes) -> tuple[int, int | None]:
    r = http.post("/api/v1/uploads/", headers={
        **TUS, "Upload-Length": str(len(data)),
        "Upload-Metadata": meta(dataset=ds, path=path, sha256=hashlib.sha256(data).hexdigest())})
    assert r.status_code == 201, r.text
    r = http.patch(r.headers["location"], content=data,
                   headers={**TUS, **OCTET, "Upload-Offset": "0"})
    version = r.headers.get("x-dataset-version")
    return r.status_code, (int(version) if version else None)


def test_32_concurrent_writers_all_land_as_successive_versions(live: Live) -> None:
    srv = live.server
    ds = httpx.post(srv.url + "/api/v1/datasets", json={"name": f"lab-{secrets.token_hex(3)}"},
                    headers=live.auth).json()["id"]
    writes = {f"w/{i:02d}.bin": secrets.token_bytes(2000 if i % 4 else 150_000)
              for i in range(WRITERS)}
    start = threading.Barrier(WRITERS)

    def write(i: int, path: str, data: bytes) -> tuple[int, int | None]:
        with httpx.Client(base_url=srv.url, headers=live.auth, timeout=120) as http:
            http.get("/api/v1/users/me").raise_for_status()  # connected and authenticated
            start.wait()  # then all at once
            return (_tus if i % 4 == 0 else _multipart)(http, ds, path, data)

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(lambda a: write(*a),
                                [(i, p, d) for i, (p, d) in enumerate(writes.items())]))

    # None refused: multipart writes answer 201, the tus uploads' last PATCH 204.
    assert [s for s, _ in results] == [204 if i % 4 == 0 else 201 for i in range(WRITERS)], \
        results
    # N writers made N successive versions, each exactly one write's.
    assert sorted(v for _, v in results) == list(range(1, WRITERS + 1))
    latest = httpx.get(f"{srv.url}/api/v1/datasets/{ds}/files", headers=live.auth).json()
    assert {f["path"]: f["sha256"] for f in latest} == {
        p: hashlib.sha256(d).hexdigest() for p, d in writes.items()}
    last = httpx.get(f"{srv.url}/api/v1/datasets/{ds}/versions", headers=live.auth).json()[-1]
    assert (last["file_count"], last["total_bytes"]) == (
        WRITERS, sum(len(d) for d in writes.values()))
    # The waits are visible: every commit observed its lock wait.
    metrics = httpx.get(srv.url + "/metrics").text
    count = re.search(r"^clowder_ml_dataset_commit_wait_seconds_count (\S+)$", metrics, re.M)
    assert count is not None and float(count.group(1)) >= WRITERS
    assert not list((srv.data_dir / "uploads").glob("*.part"))  # committed parts are gone


# The lock's bound -------------------------------------------------------------------------

@contextlib.contextmanager
def hold_commit_lock(api: Api, ds_id: str) -> Iterator[None]:
    """Hold the lock a commit to ``ds_id`` needs, from another connection (as a long
    commit by another server process would): SQLite's write lock, or the dataset's row."""
    url = api.settings.sqlalchemy_url
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            c.execute(text("SELECT id FROM datasets WHERE id = :id FOR NO KEY UPDATE"),
                      {"id": ds_id})
            yield
            c.rollback()
    finally:
        engine.dispose()


def test_commit_lock_wait_past_its_bound_is_503_with_retry_after(api: Api) -> None:
    ds = api.dataset("d", files={"a.txt": b"a"})
    api.app.state.platform.db.lock_wait_s = 0.3
    with hold_commit_lock(api, ds["id"]):
        r = api.client.post("/api/v1/datasets/d/files", files={"file": ("f", b"b")},
                            data={"path": "b.txt"}, headers=api.h())
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "dataset_busy"
    assert int(r.headers["retry-after"]) > 0
    # Nothing changed; once the lock is free the same write lands.
    assert api.client.get("/api/v1/datasets/d", headers=api.h()).json()["latest_version"] == 1
    r = api.client.post("/api/v1/datasets/d/files", files={"file": ("f", b"b")},
                        data={"path": "b.txt"}, headers=api.h())
    assert r.status_code == 201 and r.json()["number"] == 2, r.text
    paths = [f["path"] for f in api.client.get("/api/v1/datasets/d/files",
                                               headers=api.h()).json()]
    assert paths == ["a.txt", "b.txt"]
    # A replaced file and a removed one keep the version's counts right.
    r = api.client.post("/api/v1/datasets/d/files", files={"file": ("f", b"aaa")},
                        data={"path": "a.txt"}, headers=api.h())
    assert (r.json()["file_count"], r.json()["total_bytes"]) == (2, 4), r.text
    r = api.client.delete("/api/v1/datasets/d/files/b.txt", headers=api.h())
    assert (r.json()["number"], r.json()["file_count"], r.json()["total_bytes"]) == (4, 1, 3)
