"""Blob store: atomic, deduplicated, streamed; a full disk gives a clear error and leaves
nothing half-visible (tested on a real, tiny tmpfs)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clowder_ml.errors import StorageFull
from clowder_ml.storage import LocalBlobStore
from tests.conftest import Api, _make_api


def test_put_is_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "b", tmp_path / "t")
    a = store.put_stream([b"hello ", b"world"])
    b = store.put_bytes(b"hello world")
    assert a == b and a.sha256 == hashlib.sha256(b"hello world").hexdigest()
    assert store.path(a.sha256).read_bytes() == b"hello world"
    assert len(list(store.iter_digests())) == 1
    assert list((tmp_path / "t").iterdir()) == []
    assert b"".join(store.iter_chunks(a.sha256, 3, 8, chunk=2)) == b"lo wo"


def test_failed_stream_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "b", tmp_path / "t")

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.put_stream(broken())
    assert list((tmp_path / "t").iterdir()) == []
    assert list(store.iter_digests()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_store_reports_disk_full_and_cleans_up(tiny_disk: Path) -> None:
    store = LocalBlobStore(tiny_disk / "b", tiny_disk / "t")
    with pytest.raises(StorageFull) as info:
        store.put_stream(iter([os.urandom(1 << 20)] * 12))
    assert "No space left" in info.value.message
    assert list((tiny_disk / "t").iterdir()) == []
    assert list(store.iter_digests()) == []
    store.put_bytes(b"still works")  # the space came back


@pytest.fixture
def full_api(tiny_disk: Path, tmp_path: Path) -> Iterator[Api]:
    # Metadata elsewhere: the test is about blob bytes running out of room.
    db = f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    yield from _make_api(tiny_disk.parent, db, data_dir=tiny_disk / "data")


def test_api_disk_full_multipart_is_507_and_dataset_unchanged(full_api: Api) -> None:
    api = full_api
    api.dataset("d", files={"small.txt": b"ok"})
    r = api.client.post("/api/v1/datasets/d/files", headers=api.h(),
                        files={"file": ("f", os.urandom(10 << 20))}, data={"path": "big.bin"})
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "storage_full"
    files = api.client.get("/api/v1/datasets/d/files", headers=api.h()).json()
    assert [f["path"] for f in files] == ["small.txt"]
    assert list(api.settings.tmp_dir.iterdir()) == []


def test_tus_refuses_too_large_upfront_and_resumes_after_space_returns(
        full_api: Api, tiny_disk: Path) -> None:
    api = full_api
    api.dataset("d")
    tus = {**api.h(), "Tus-Resumable": "1.0.0"}
    r = api.client.post("/api/v1/uploads/", headers={**tus, "Upload-Length": str(64 << 20),
                                                     "Upload-Metadata": "dataset ZA==,path eA=="})
    assert r.status_code == 507 and r.json()["error"]["code"] == "storage_full"

    data = os.urandom(3 << 20)
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in {
        "dataset": "d", "path": "x.bin", "sha256": hashlib.sha256(data).hexdigest()}.items())
    r = api.client.post("/api/v1/uploads/", headers={**tus, "Upload-Length": str(len(data)),
                                                     "Upload-Metadata": meta})
    loc = r.headers["location"]
    # Something else fills the disk while the upload is under way.
    filler = tiny_disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (256 << 10))
                fh.flush()
        except OSError:
            pass
    octet = {"Content-Type": "application/offset+octet-stream"}
    r = api.client.patch(loc, content=data, headers={**tus, **octet, "Upload-Offset": "0"})
    assert r.status_code == 507, r.text
    offset = int(api.client.head(loc, headers=tus).headers["upload-offset"])
    assert offset < len(data)
    assert api.client.get("/api/v1/datasets/d/files", headers=api.h()).json() == []
    filler.unlink()
    r = api.client.patch(loc, content=data[offset:],
                         headers={**tus, **octet, "Upload-Offset": str(offset)})
    assert r.status_code == 204, r.text
    got = api.client.get("/api/v1/datasets/d/files/x.bin", headers=api.h()).content
    assert got == data
