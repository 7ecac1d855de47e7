"""Reliability of uploads under real faults: the server is SIGKILLed mid-request and
restarted, the client process is SIGKILLed mid-upload, and the upload resumes from the
server's offset and ends with the right sha256. Nothing half-received reaches a dataset."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow
TUS = {"Tus-Resumable": "1.0.0"}
OCTET = {"Content-Type": "application/offset+octet-stream"}
SIZE = 48 << 20


def meta(**kv: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kv.items())


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, str]:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("payload") / "big.bin"
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


def offset_of(srv: ServerProcess, loc: str, auth: dict[str, str]) -> int:
    r = httpx.head(srv.url + loc, headers={**auth, **TUS})
    assert r.status_code == 200, r.status_code
    return int(r.headers["upload-offset"])


def create_upload(srv: ServerProcess, auth: dict[str, str], sha: str, path: str = "big.bin",
                  ) -> str:
    httpx.post(srv.url + "/api/v1/datasets", json={"name": "d"}, headers=auth)
    r = httpx.post(srv.url + "/api/v1/uploads/", headers={
        **auth, **TUS, "Upload-Length": str(SIZE),
        "Upload-Metadata": meta(dataset="d", path=path, sha256=sha)})
    assert r.status_code == 201, r.text
    return str(r.headers["location"])


def finish(srv: ServerProcess, loc: str, auth: dict[str, str], data: bytes) -> httpx.Response:
    off = offset_of(srv, loc, auth)
    return httpx.patch(srv.url + loc, content=data[off:], timeout=120, headers={
        **auth, **TUS, **OCTET, "Upload-Offset": str(off)})


def test_server_killed_mid_upload_resumes_from_its_offset(
        server: ServerProcess, payload: tuple[Path, bytes, str]) -> None:
    _, data, sha = payload
    auth = {"Authorization": f"Bearer {server.token()}"}
    loc = create_upload(server, auth, sha)

    def body() -> Iterator[bytes]:
        for i in range(0, SIZE, 1 << 20):
            yield data[i:i + (1 << 20)]
            if i == 24 << 20:
                # Wait until the server has put bytes on disk, then kill it mid-request.
                deadline = time.monotonic() + 30
                while offset_of(server, loc, auth) == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                server.kill()

    with pytest.raises(httpx.TransportError):
        httpx.patch(server.url + loc, content=body(), timeout=60, headers={
            **auth, **TUS, **OCTET, "Upload-Offset": "0"})
    server.start()
    resumed_at = offset_of(server, loc, auth)
    assert 0 < resumed_at < SIZE
    # Nothing is visible in the dataset yet.
    assert httpx.get(server.url + "/api/v1/datasets/d/files", headers=auth).json() == []
    r = finish(server, loc, auth, data)
    assert r.status_code == 204, r.text
    got = httpx.get(server.url + "/api/v1/datasets/d/files/big.bin", headers=auth, timeout=60)
    assert hashlib.sha256(got.content).hexdigest() == sha


def test_client_killed_mid_request_resumes_from_server_offset(
        server: ServerProcess, payload: tuple[Path, bytes, str]) -> None:
    """The client dies inside a PATCH body: the bytes that arrived are kept, whatever their
    alignment, and the upload completes from the offset the server reports."""
    path, data, sha = payload
    auth = {"Authorization": f"Bearer {server.token()}"}
    loc = create_upload(server, auth, sha)
    child = textwrap.dedent(f"""
        import os, signal, httpx
        data = open({str(path)!r}, "rb").read()
        def body():
            for i in range(0, len(data), 1000003):   # odd-sized pieces
                yield data[i:i + 1000003]
                if i > 20_000_000:
                    os.kill(os.getpid(), signal.SIGKILL)   # die mid-request, no cleanup
        httpx.patch({server.url + loc!r}, content=body(), headers={{
            "Authorization": {auth["Authorization"]!r}, "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}})
    """)
    proc = subprocess.run([sys.executable, "-c", child], timeout=60)
    assert proc.returncode == -9
    # The server notices the dead connection and keeps what it got.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = finish(server, loc, auth, data)
        if r.status_code != 423:  # the dead request may still hold the upload briefly
            break
        time.sleep(0.1)
    assert r.status_code == 204, r.text
    got = httpx.get(server.url + "/api/v1/datasets/d/files/big.bin", headers=auth, timeout=60)
    assert hashlib.sha256(got.content).hexdigest() == sha


def test_cli_killed_then_rerun_resumes_the_same_upload(
        server: ServerProcess, payload: tuple[Path, bytes, str], tmp_path: Path) -> None:
    path, _, sha = payload
    env = {**os.environ, "CLOWDER_ML_URL": server.url, "CLOWDER_ML_TOKEN": server.token(),
           "CLOWDER_ML_STATE_DIR": str(tmp_path / "state")}
    # A client process that SIGKILLs itself after the server acknowledged the 3rd chunk.
    child = textwrap.dedent(f"""
        import os, signal
        from clowder_ml import Client
        def progress(done, total):
            if done >= 3 * (4 << 20):
                os.kill(os.getpid(), signal.SIGKILL)
        Client().upload({str(path)!r}, "d", "big.bin", chunk_size=4 << 20, progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", child], env=env, timeout=120)
    assert proc.returncode == -9
    state = json.loads((tmp_path / "state" / "uploads.json").read_text())
    (record,) = state.values()
    upload_url = record["url"]
    auth = {"Authorization": f"Bearer {env['CLOWDER_ML_TOKEN']}"}
    before = int(httpx.head(upload_url, headers={**auth, **TUS}).headers["upload-offset"])
    assert before >= 3 * (4 << 20)
    # Running the same CLI command again continues that upload.
    out = subprocess.run([sys.executable, "-m", "clowder_ml", "upload", str(path),
                          "--dataset", "d", "--path", "big.bin"], env=env, timeout=120,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    st = httpx.get(upload_url, headers=auth).json()
    assert st["state"] == "completed" and st["version"] == 1
    assert json.loads((tmp_path / "state" / "uploads.json").read_text()) == {}
    got = httpx.get(server.url + "/api/v1/datasets/d/files/big.bin", headers=auth, timeout=60)
    assert hashlib.sha256(got.content).hexdigest() == sha
    # Only one upload's worth of bytes exists on the server.
    assert len(list((server.data_dir / "uploads").glob("*.part"))) == 0


def test_upload_complete_at_crash_is_finalized_on_restart(
        server: ServerProcess, payload: tuple[Path, bytes, str]) -> None:
    """All bytes arrived but the server died before committing: start-up finishes the job."""
    _, data, sha = payload
    auth = {"Authorization": f"Bearer {server.token()}"}
    loc = create_upload(server, auth, sha)
    server.kill()
    part = server.data_dir / "uploads" / (loc.rsplit("/", 1)[1] + ".part")
    part.write_bytes(data)  # the state a crash between last byte and commit leaves
    server.start()
    st = httpx.get(server.url + loc, headers=auth).json()
    assert st["state"] == "completed" and st["version"] == 1
    got = httpx.get(server.url + "/api/v1/datasets/d/files/big.bin", headers=auth, timeout=60)
    assert hashlib.sha256(got.content).hexdigest() == sha


def test_wrong_sha_complete_at_crash_never_reaches_dataset(
        server: ServerProcess, payload: tuple[Path, bytes, str]) -> None:
    _, data, _ = payload
    auth = {"Authorization": f"Bearer {server.token()}"}
    loc = create_upload(server, auth, "0" * 64)
    server.kill()
    (server.data_dir / "uploads" / (loc.rsplit("/", 1)[1] + ".part")).write_bytes(data)
    server.start()
    st = httpx.get(server.url + loc, headers=auth).json()
    assert st["state"] == "failed" and "mismatch" in st["error"]
    assert httpx.get(server.url + "/api/v1/datasets/d/files", headers=auth).json() == []


def test_sdk_upload_rides_through_a_server_restart(
        server: ServerProcess, payload: tuple[Path, bytes, str], tmp_path: Path) -> None:
    """The server is killed between two chunks of a running SDK upload and comes back: the
    same ``upload`` call resumes by itself from the server's offset."""
    import threading

    from clowder_ml.client import Client, ResumeStore

    path, _, sha = payload
    client = Client(server.url, server.token(), resume_store=ResumeStore(tmp_path / "u.json"))
    reached, killed = threading.Event(), threading.Event()
    offsets: list[int] = []

    def progress(done: int, total: int) -> None:
        offsets.append(done)
        if done > 0 and not reached.is_set():
            reached.set()
            assert killed.wait(30)

    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(client.upload(
        path, "d", "big.bin", chunk_size=4 << 20, progress=progress)))
    t.start()
    assert reached.wait(30)
    server.kill()
    killed.set()
    time.sleep(0.5)  # the client now fails and backs off while the server is down
    server.start()
    t.join(60)
    assert result.get("state") == "completed", result
    assert offsets[-1] == SIZE and offsets[1] == 4 << 20
    auth = {"Authorization": f"Bearer {client.token}"}
    got = httpx.get(server.url + "/api/v1/datasets/d/files/big.bin", headers=auth, timeout=60)
    assert hashlib.sha256(got.content).hexdigest() == sha
