"""A complete tus upload is never thrown away for a passing failure of its commit.

Faults are real: a trigger in the database (SQLite or PostgreSQL) makes the version insert
fail, or another connection holds the dataset's commit lock past its bound, or the server is
SIGKILLed with the upload waiting. The bytes stay, HEAD answers the full offset, and the
upload lands later without one byte being sent again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from tests.conftest import Api, ServerProcess, _make_api
from tests.test_concurrent_writes import hold_commit_lock
from tests.test_uploads_tus import OCTET, TUS, create, meta, patch

SQLITE_FAULT = ("CREATE TRIGGER inject_fault BEFORE INSERT ON dataset_versions "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
PG_FAULT = ("CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; "
            "CREATE TRIGGER inject_fault BEFORE INSERT ON dataset_versions "
            "FOR EACH ROW EXECUTE FUNCTION inject_fault()")
PG_UNFAULT = "DROP TRIGGER inject_fault ON dataset_versions; DROP FUNCTION inject_fault()"


@contextlib.contextmanager
def commits_fail(db_url: str) -> Iterator[None]:
    """While inside, every new dataset version fails to insert (a trigger raises)."""
    if db_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(db_url.removeprefix("sqlite:///"),
                                                isolation_level=None)) as c:
            c.execute(SQLITE_FAULT)
            try:
                yield
            finally:
                c.execute("DROP TRIGGER inject_fault")
        return
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.exec_driver_sql(PG_FAULT)
            try:
                yield
            finally:
                c.exec_driver_sql(PG_UNFAULT)
    finally:
        engine.dispose()


def part_file(api: Api, loc: str) -> Path:
    return api.settings.uploads_dir / (loc.rsplit("/", 1)[1] + ".part")


def test_failed_commit_keeps_the_upload_and_an_empty_patch_finishes_it(api: Api) -> None:
    api.dataset("d")
    data = os.urandom(300_000)
    loc = create(api, data)
    assert patch(api, loc, 0, data[:200_000]).status_code == 204  # type: ignore[attr-defined]
    with commits_fail(api.settings.sqlalchemy_url):
        r = patch(api, loc, 200_000, data[200_000:])
        assert r.status_code == 503, r.text  # type: ignore[attr-defined]
        assert r.json()["error"]["code"] == "upload_finalizing"  # type: ignore[attr-defined]
        assert int(r.headers["retry-after"]) > 0  # type: ignore[attr-defined]
        # Kept: HEAD tells the true offset and state, the bytes are all on disk.
        h = api.client.head(loc, headers={**api.h(), **TUS})
        assert h.status_code == 200
        assert h.headers["upload-offset"] == str(len(data))
        assert h.headers["x-upload-state"] == "finalizing"
        assert part_file(api, loc).read_bytes() == data
        st = api.client.get(loc, headers=api.h()).json()
        assert st["state"] == "finalizing" and st["version"] is None
        assert "injected fault" in st["error"]
        assert api.client.get("/api/v1/datasets/d", headers=api.h()).json()[
            "latest_version"] == 0
    # The fault is gone: an empty PATCH at the full offset retries now; no byte is resent.
    r = patch(api, loc, len(data), b"")
    assert r.status_code == 204, r.text  # type: ignore[attr-defined]
    assert r.headers["x-dataset-version"] == "1"  # type: ignore[attr-defined]
    assert r.headers["x-upload-state"] == "completed"  # type: ignore[attr-defined]
    got = api.client.get("/api/v1/datasets/d/files/f.bin", headers=api.h())
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    assert not part_file(api, loc).exists()
    assert api.client.get(loc, headers=api.h()).json()["error"] is None
    # More bytes than declared are refused, and the upload stays completed.
    assert patch(api, loc, len(data), b"x").status_code == 409  # type: ignore[attr-defined]


@pytest.fixture
def pg_api(pg_url: str, tmp_path: Path) -> Iterator[Api]:
    yield from _make_api(tmp_path, pg_url)


def test_busy_dataset_keeps_the_upload_and_the_server_retries_by_itself(pg_api: Api) -> None:
    """The dataset's row is locked by another connection past the wait: 503 with
    Retry-After; once the lock is gone the background retry commits the upload."""
    api = pg_api
    ds = api.dataset("d")
    api.app.state.platform.db.lock_wait_s = 0.3
    data = os.urandom(50_000)
    loc = create(api, data)
    with hold_commit_lock(api, ds["id"]):
        r = patch(api, loc, 0, data)
        assert r.status_code == 503, r.text  # type: ignore[attr-defined]
        assert "busy" in r.json()["error"]["message"]  # type: ignore[attr-defined]
        assert "retry-after" in r.headers  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while (st := api.client.get(loc, headers=api.h()).json())["state"] == "finalizing":
        assert time.monotonic() < deadline, st
        time.sleep(0.1)
    assert st["state"] == "completed" and st["version"] == 1, st
    assert api.client.get("/api/v1/datasets/d/files/f.bin", headers=api.h()).content == data


def test_creation_with_upload_whose_commit_fails_still_gets_its_location(
        sqlite_api: Api) -> None:
    """The whole file in the creating POST: 201 with the Location to follow, even though
    the commit failed; the upload is kept and lands on retry."""
    api = sqlite_api
    api.dataset("d")
    data = os.urandom(20_000)
    with commits_fail(api.settings.sqlalchemy_url):
        loc = create(api, data, body=data)
        h = api.client.head(loc, headers={**api.h(), **TUS})
        assert (h.headers["upload-offset"], h.headers["x-upload-state"]) == (
            str(len(data)), "finalizing")
    r = patch(api, loc, len(data), b"")
    assert r.status_code == 204 and r.headers["x-dataset-version"] == "1"  # type: ignore[attr-defined]


def test_a_bad_zip_fails_for_good_and_drops_its_bytes(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    data = b"this is not a zip archive" * 100
    loc = create(api, data, unpack="true")
    r = patch(api, loc, 0, data)
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    assert api.client.get(loc, headers=api.h()).json()["state"] == "failed"
    assert api.client.head(loc, headers={**api.h(), **TUS}).status_code == 410
    assert not part_file(api, loc).exists()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.txt", "fine")
    good = buf.getvalue()
    loc = create(api, good, unpack="true")
    assert patch(api, loc, 0, good).status_code == 204  # type: ignore[attr-defined]


@pytest.mark.slow
def test_server_killed_with_a_kept_upload_commits_it_at_start_up(server: ServerProcess,
                                                                  ) -> None:
    auth = {"Authorization": f"Bearer {server.token()}"}
    httpx.post(server.url + "/api/v1/datasets", json={"name": "d"}, headers=auth)
    data = os.urandom(100_000)
    r = httpx.post(server.url + "/api/v1/uploads/", headers={
        **auth, **TUS, "Upload-Length": str(len(data)),
        "Upload-Metadata": meta(dataset="d", path="f.bin",
                                sha256=hashlib.sha256(data).hexdigest())})
    loc = r.headers["location"]
    with commits_fail(f"sqlite:///{server.data_dir / 'clowder-ml.sqlite3'}"):
        r = httpx.patch(server.url + loc, content=data,
                        headers={**auth, **TUS, **OCTET, "Upload-Offset": "0"})
        assert r.status_code == 503, r.text
        server.kill()
    server.start()
    st = httpx.get(server.url + loc, headers=auth).json()
    assert st["state"] == "completed" and st["version"] == 1, st
    got = httpx.get(server.url + "/api/v1/datasets/d/files/f.bin", headers=auth)
    assert got.content == data
    assert not list((server.data_dir / "uploads").glob("*.part"))


def test_the_sdk_waits_for_a_kept_upload_without_sending_it_again(server: ServerProcess,
                                                                  tmp_path: Path) -> None:
    """The SDK's upload meets 503 on its last PATCH (the commit fails): it waits, nudging
    the server as Retry-After paces, and returns the completed status once the fault is
    gone; the file's bytes crossed the wire once."""
    import threading

    from clowder_ml.client import Client, ResumeStore

    src = tmp_path / "f.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    client = Client(server.url, server.token(), resume_store=ResumeStore(tmp_path / "r.json"))
    client.create_dataset("d")
    sent: list[int] = []
    arrived = threading.Event()

    def progress(done: int, total: int) -> None:
        sent.append(done)
        if done == total:
            arrived.set()

    out: dict[str, object] = {}
    with commits_fail(f"sqlite:///{server.data_dir / 'clowder-ml.sqlite3'}"):
        worker = threading.Thread(target=lambda: out.update(status=client.upload(
            src, "d", "f.bin", chunk_size=100_000, progress=progress, finalize_wait_s=120)))
        worker.start()
        assert arrived.wait(60), (sent, out)
        # The last PATCH was refused (503): the upload is kept, finalizing, and the SDK waits.
        [record] = json.loads((tmp_path / "r.json").read_text()).values()
        upload_id = str(record["url"]).rsplit("/", 1)[1]
        st = client.upload_status(upload_id)
        assert st["state"] == "finalizing" and "injected fault" in str(st["error"]), st
        assert worker.is_alive()
    worker.join(120)
    status = out["status"]
    assert isinstance(status, dict) and status["state"] == "completed", status
    assert status["version"] == 1
    assert client.download("d", "f.bin", tmp_path / "back.bin").read_bytes() == data
    assert sent == [0, 100_000, 200_000, 300_000]  # each piece sent once
