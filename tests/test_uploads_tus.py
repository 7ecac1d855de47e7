"""tus 1.0 protocol: core, creation, creation-with-upload, termination, checksum, expiration,
and the end-of-upload sha256 check (a mismatch never reaches the dataset)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from tusclient import client as tus_client

from clowder_ml.db.models import Upload
from clowder_ml.db.models import utcnow as now
from tests.conftest import Api, ServerProcess

TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}


def meta(**kv: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kv.items())


def create(api: Api, data: bytes, *, sha: str | None = None, body: bytes | None = None,
           declare: bool = True, **extra: str) -> str:
    kv = {"dataset": "d", "path": "f.bin"}
    if declare:
        kv["sha256"] = sha or hashlib.sha256(data).hexdigest()
    kv.update(extra)
    headers = {**api.h(), **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta(**kv)}
    if body is not None:
        headers.update(OCTET)
    r = api.client.post("/api/v1/uploads/", headers=headers, content=body)
    assert r.status_code == 201, r.text
    assert r.headers["tus-resumable"] == "1.0.0"
    return str(r.headers["location"])


def patch(api: Api, loc: str, offset: int, data: bytes, **headers: str) -> object:
    return api.client.patch(loc, content=data, headers={
        **api.h(), **TUS, **OCTET, "Upload-Offset": str(offset), **headers})


def test_options_advertises_extensions(sqlite_api: Api) -> None:
    r = sqlite_api.client.options("/api/v1/uploads/")
    assert r.status_code == 204
    ext = set(r.headers["tus-extension"].split(","))
    assert {"creation", "creation-with-upload", "termination", "checksum", "expiration"} <= ext
    assert r.headers["tus-version"] == "1.0.0"
    assert "sha1" in r.headers["tus-checksum-algorithm"]


def test_chunked_upload_lands_in_a_new_version(api: Api) -> None:
    api.dataset("d")
    data = os.urandom(300_000)
    loc = create(api, data)
    h = api.client.head(loc, headers={**api.h(), **TUS})
    assert h.headers["upload-offset"] == "0" and h.headers["upload-length"] == str(len(data))
    assert "upload-expires" in h.headers
    for off in range(0, len(data), 100_000):
        r = patch(api, loc, off, data[off:off + 100_000])
        assert r.status_code == 204, r.text  # type: ignore[attr-defined]
        assert r.headers["upload-offset"] == str(off + 100_000)  # type: ignore[attr-defined]
    st = api.client.get(loc, headers=api.h()).json()
    assert st["state"] == "completed" and st["version"] == 1
    got = api.client.get("/api/v1/datasets/d/files/f.bin", headers=api.h())
    assert got.content == data
    assert got.headers["x-content-sha256"] == hashlib.sha256(data).hexdigest()


def test_creation_with_upload(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    data = b"hello tus"
    loc = create(api, data, body=data[:5])
    assert api.client.head(loc, headers={**api.h(), **TUS}).headers["upload-offset"] == "5"
    assert patch(api, loc, 5, data[5:]).status_code == 204  # type: ignore[attr-defined]
    assert api.client.get("/api/v1/datasets/d/files/f.bin", headers=api.h()).content == data


def test_wrong_offset_is_409_and_keeps_data(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    data = b"x" * 100
    loc = create(api, data)
    patch(api, loc, 0, data[:40])
    r = patch(api, loc, 10, data[10:50])
    assert r.status_code == 409  # type: ignore[attr-defined]
    assert r.json()["error"]["code"] == "upload_offset_mismatch"  # type: ignore[attr-defined]
    assert api.client.head(loc, headers={**api.h(), **TUS}).headers["upload-offset"] == "40"


def test_missing_tus_header_is_412(sqlite_api: Api) -> None:
    r = sqlite_api.client.post("/api/v1/uploads/", headers={**sqlite_api.h(),
                                                             "Upload-Length": "5"})
    assert r.status_code == 412
    assert r.json()["error"]["code"] == "precondition_failed"


def test_declared_sha256_mismatch_is_rejected_and_dataset_unchanged(api: Api) -> None:
    api.dataset("d", files={"keep.csv": b"a\n1\n"})
    before = api.client.get("/api/v1/datasets/d", headers=api.h()).json()["latest_version"]
    data = os.urandom(50_000)
    loc = create(api, data, sha=hashlib.sha256(b"something else").hexdigest())
    patch(api, loc, 0, data[:20_000])
    r = patch(api, loc, 20_000, data[20_000:])
    assert r.status_code == 460  # type: ignore[attr-defined]
    err = r.json()["error"]  # type: ignore[attr-defined]
    assert err["code"] == "checksum_mismatch" and "sha256" in err["message"]
    ds = api.client.get("/api/v1/datasets/d", headers=api.h()).json()
    assert ds["latest_version"] == before
    files = api.client.get("/api/v1/datasets/d/files", headers=api.h()).json()
    assert [f["path"] for f in files] == ["keep.csv"]
    st = api.client.get(loc, headers=api.h()).json()
    assert st["state"] == "failed" and "mismatch" in st["error"]
    # The partial bytes are gone from disk and the upload cannot be continued.
    assert not list(api.settings.uploads_dir.glob("*.part"))
    assert api.client.head(loc, headers={**api.h(), **TUS}).status_code == 410


def test_chunk_checksum_mismatch_discards_only_that_chunk(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    data = os.urandom(1000)
    loc = create(api, data)
    good = base64.b64encode(hashlib.sha1(data[:500]).digest()).decode()
    assert patch(api, loc, 0, data[:500], **{"Upload-Checksum": f"sha1 {good}"}
                 ).status_code == 204  # type: ignore[attr-defined]
    bad = base64.b64encode(hashlib.sha1(b"nope").digest()).decode()
    r = patch(api, loc, 500, data[500:], **{"Upload-Checksum": f"sha1 {bad}"})
    assert r.status_code == 460  # type: ignore[attr-defined]
    assert api.client.head(loc, headers={**api.h(), **TUS}).headers["upload-offset"] == "500"
    good2 = base64.b64encode(hashlib.sha256(data[500:]).digest()).decode()
    r = patch(api, loc, 500, data[500:], **{"Upload-Checksum": f"sha256 {good2}"})
    assert r.status_code == 204  # type: ignore[attr-defined]
    assert api.client.get("/api/v1/datasets/d/files/f.bin", headers=api.h()).content == data


def test_unknown_checksum_algorithm_is_400(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    loc = create(api, b"abc")
    r = patch(api, loc, 0, b"abc", **{"Upload-Checksum": "crc32 AAAA"})
    assert r.status_code == 400  # type: ignore[attr-defined]


def test_termination_removes_the_upload(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    loc = create(api, b"0123456789")
    patch(api, loc, 0, b"01234")
    assert api.client.delete(loc, headers={**api.h(), **TUS}).status_code == 204
    assert api.client.head(loc, headers={**api.h(), **TUS}).status_code == 404
    assert not list(api.settings.uploads_dir.glob("*.part"))


def test_expired_upload_is_gone_and_collected(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    loc = create(api, b"0123456789")
    upload_id = loc.rsplit("/", 1)[1]
    platform = api.app.state.platform
    with platform.db.session() as s:
        s.get(Upload, upload_id).expires_at = now() - timedelta(seconds=1)
    assert patch(api, loc, 0, b"01").status_code == 410  # type: ignore[attr-defined]
    r = api.client.post("/api/v1/admin/gc", headers=api.h())
    assert r.json()["uploads_expired"] == 1
    assert api.client.head(loc, headers={**api.h(), **TUS}).status_code == 404


def test_deleting_the_dataset_mid_upload_leaves_nothing_behind(sqlite_api: Api) -> None:
    from clowder_ml.services import maintenance

    api = sqlite_api
    api.dataset("d")
    loc = create(api, b"0123456789")
    patch(api, loc, 0, b"01234")
    assert api.client.delete("/api/v1/datasets/d", headers=api.h()).status_code == 204
    assert api.client.head(loc, headers={**api.h(), **TUS}).status_code == 404
    maintenance.collect(api.app.state.platform, grace_seconds=-1)
    assert not list(api.settings.uploads_dir.glob("*.part"))


def test_body_longer_than_upload_length_is_refused(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    loc = create(api, b"abc")
    r = patch(api, loc, 0, b"abcdef")
    assert r.status_code == 413  # type: ignore[attr-defined]


@pytest.mark.parametrize("header", ["dataset", "path x", "dataset !!!notbase64"])
def test_bad_metadata_is_a_clear_4xx(sqlite_api: Api, header: str) -> None:
    api = sqlite_api
    r = api.client.post("/api/v1/uploads/", headers={
        **api.h(), **TUS, "Upload-Length": "3", "Upload-Metadata": header})
    assert 400 <= r.status_code < 500
    assert r.json()["error"]["message"]


def test_path_traversal_in_metadata_is_refused(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    for bad in ["../etc/passwd", "/abs/file", "a/../../b", "a\\b"]:
        r = api.client.post("/api/v1/uploads/", headers={
            **api.h(), **TUS, "Upload-Length": "3",
            "Upload-Metadata": meta(dataset="d", path=bad)})
        assert r.status_code == 422, bad


def test_zip_upload_unpacks_through_tus(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("imgs/a.txt", "A" * 1000)
        zf.writestr("imgs/b.txt", "B")
    data = buf.getvalue()
    kv = {"dataset": "d", "unpack": "true", "prefix": "raw",
          "sha256": hashlib.sha256(data).hexdigest()}
    r = api.client.post("/api/v1/uploads/", headers={
        **api.h(), **TUS, **OCTET, "Upload-Length": str(len(data)),
        "Upload-Metadata": meta(**kv)}, content=data)
    assert r.status_code == 201, r.text
    files = api.client.get("/api/v1/datasets/d/files", headers=api.h()).json()
    assert {f["path"]: f["size"] for f in files} == {"raw/imgs/a.txt": 1000, "raw/imgs/b.txt": 1}


def test_tuspy_client_works_unchanged(server: ServerProcess, tmp_path: Path) -> None:
    """The reference Python tus client uploads with no knowledge of clowder-ml."""
    import httpx

    token = server.token()
    auth = {"Authorization": f"Bearer {token}"}
    httpx.post(server.url + "/api/v1/datasets", json={"name": "viatus"}, headers=auth)
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    client = tus_client.TusClient(server.url + "/api/v1/uploads/", headers=auth)
    uploader = client.uploader(str(src), chunk_size=1024 * 1024, metadata={
        "dataset": "viatus", "path": "from/tuspy.bin",
        "sha256": hashlib.sha256(data).hexdigest()})
    uploader.upload()
    got = httpx.get(server.url + "/api/v1/datasets/viatus/files/from/tuspy.bin", headers=auth)
    assert got.status_code == 200 and got.content == data


def test_sha256_declared_with_the_last_patch(api: Api) -> None:
    """Upload-Sha256 (what the SDK sends, having hashed while sending): the right digest
    completes the upload; a wrong one fails it and adds nothing; a malformed one is 400."""
    api.dataset("d", files={"keep.csv": b"a\n1\n"})
    data = os.urandom(40_000)
    digest = hashlib.sha256(data).hexdigest()
    loc = create(api, data, declare=False)
    assert patch(api, loc, 0, data[:10_000]).status_code == 204  # type: ignore[attr-defined]
    r = patch(api, loc, 10_000, data[10_000:], **{"Upload-Sha256": "xyz"})
    assert r.status_code == 400 and "Upload-Sha256" in r.text  # type: ignore[attr-defined]
    r = patch(api, loc, 10_000, data[10_000:], **{"Upload-Sha256": digest.upper()})
    assert r.status_code == 204, r.text  # type: ignore[attr-defined]
    assert api.client.get(loc, headers=api.h()).json()["state"] == "completed"
    files = {f["path"]: f for f in api.client.get("/api/v1/datasets/d/files",
                                                  headers=api.h()).json()}
    assert files["f.bin"]["sha256"] == digest

    loc = create(api, data, declare=False, path="g.bin")
    r = patch(api, loc, 0, data, **{"Upload-Sha256": hashlib.sha256(b"other").hexdigest()})
    assert r.status_code == 460 and "sha256" in r.text  # type: ignore[attr-defined]
    st = api.client.get(loc, headers=api.h()).json()
    assert st["state"] == "failed" and "mismatch" in st["error"]
    paths = {f["path"] for f in api.client.get("/api/v1/datasets/d/files",
                                               headers=api.h()).json()}
    assert paths == {"keep.csv", "f.bin"}


def test_sha256_declared_early_is_remembered_and_must_agree(api: Api) -> None:
    """A digest declared before the last PATCH is recorded (a server killed before the end
    still checks it); one that contradicts the digest declared at creation is refused
    without harming the upload."""
    api.dataset("d")
    data = os.urandom(30_000)
    loc = create(api, data)
    r = patch(api, loc, 0, data[:1000], **{"Upload-Sha256": "0" * 64})
    assert r.status_code == 460, r.text  # type: ignore[attr-defined]
    assert api.client.get(loc, headers=api.h()).json()["state"] == "receiving"
    assert patch(api, loc, 0, data).status_code == 204  # type: ignore[attr-defined]

    loc = create(api, data, declare=False, path="h.bin")
    r = patch(api, loc, 0, data[:1000], **{"Upload-Sha256": "0" * 64})
    assert r.status_code == 204, r.text  # type: ignore[attr-defined]
    r = patch(api, loc, 1000, data[1000:])
    assert r.status_code == 460  # type: ignore[attr-defined]
    assert api.client.get(loc, headers=api.h()).json()["state"] == "failed"
