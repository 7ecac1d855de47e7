"""The SDK against a real server: typed exceptions rebuilt from error codes, the same
operations as the API."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from clowder_ml import Client
from clowder_ml import errors as E
from clowder_ml.client import ResumeStore
from tests.conftest import ADMIN_PW, ServerProcess

pytestmark = pytest.mark.slow


def test_typed_errors_and_operations(server: ServerProcess, tmp_path: Path) -> None:
    with pytest.raises(E.InvalidCredentials):
        Client.login(server.url, "admin", "wrong-password")
    store = ResumeStore(tmp_path / "uploads.json")
    admin = Client.login(server.url, "admin", ADMIN_PW)
    admin.resume_store = store
    admin.create_user("alice", "alice-password")
    with pytest.raises(E.AlreadyExists) as info:
        admin.create_user("alice", "alice-password")
    assert info.value.code == "already_exists" and info.value.status == 409
    alice = Client(server.url, Client.login(server.url, "alice", "alice-password").token,
                   resume_store=store)
    with pytest.raises(E.PermissionDenied):
        alice.create_user("bob", "bob-password")
    f = tmp_path / "data.jsonl"
    f.write_text('{"x": 1}\n{"x": 2}\n')
    st = admin.upload(f, "mine", "d/data.jsonl")
    assert st["state"] == "completed" and st["version"] == 1
    with pytest.raises(E.NotFound) as nf:
        alice.get_dataset("admin/mine")
    assert nf.value.hint and "datasets ls" in nf.value.hint
    admin.share("mine", "alice", "read")
    assert alice.get_dataset("admin/mine")["permission"] == "read"
    assert alice.preview("admin/mine", "d/data.jsonl")["row_count"] == 2
    with pytest.raises(E.PermissionDenied):
        alice.upload(f, "admin/mine", "again.jsonl", create_dataset=False)
    with pytest.raises(E.ValidationFailed):
        admin.create_dataset("bad name")
    with pytest.raises(E.UnsafeArchive):
        admin.add_zip("mine", f)
    out = alice.download("admin/mine", "d/data.jsonl", tmp_path / "copy.jsonl")
    assert out.read_bytes() == f.read_bytes()
    admin.set_file_metadata("mine", "d/data.jsonl", {"split": "train"})
    assert alice.file_metadata("admin/mine", "d/data.jsonl") == {"split": "train"}
    assert [v["number"] for v in admin.versions("mine")] == [1]


def test_download_resumes_a_partial_file(server: ServerProcess, tmp_path: Path) -> None:
    c = Client(server.url, server.token(), resume_store=ResumeStore(tmp_path / "u.json"))
    data = os.urandom(3 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    c.upload(src, "d", "x.bin")
    out = tmp_path / "x.bin"
    (tmp_path / "x.bin.part").write_bytes(data[: 1 << 20])  # an interrupted earlier download
    seen: list[int] = []
    c.download("d", "x.bin", out, progress=lambda done, total: seen.append(done))
    assert out.read_bytes() == data and seen[0] > (1 << 20)
    # A corrupt partial file is detected by the sha256 check and never becomes the output.
    (tmp_path / "y.bin.part").write_bytes(b"\xff" * (1 << 20))
    with pytest.raises(E.ValidationFailed):
        c.download("d", "x.bin", tmp_path / "y.bin")
    assert not (tmp_path / "y.bin").exists() and not (tmp_path / "y.bin.part").exists()


def test_upload_hashes_while_sending(server: ServerProcess, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No hashing pass before the first byte: the digest goes with the last PATCH, every
    byte read once (the last piece twice); a file that changes meanwhile is refused."""
    from clowder_ml import client as sdk

    c = Client(server.url, server.token(), resume_store=ResumeStore(tmp_path / "u.json"))
    data = os.urandom((5 << 20) + 123)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    sent: list[dict[str, str]] = []
    real_patch = c.http.patch

    def spy(url: str, **kw: object) -> object:
        sent.append(dict(kw["headers"]))  # type: ignore[call-overload]
        return real_patch(url, **kw)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(sdk, "sha256_file", None)  # any separate hashing pass would fail
        m.setattr(c.http, "patch", spy)
        st = c.upload(src, "hashing", "x.bin", chunk_size=2 << 20)
    assert st["state"] == "completed"
    files = {f["path"]: f for f in c.files("hashing")}
    assert files["x.bin"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert [("Upload-Sha256" in h) for h in sent] == [False, False, True]
    assert c.download("hashing", "x.bin", tmp_path / "back.bin").read_bytes() == data

    # The file changes between two PATCHes: nothing of the mix reaches the dataset.
    def change_then_patch(url: str, **kw: object) -> object:
        resp = real_patch(url, **kw)  # type: ignore[arg-type]
        with open(src, "r+b") as fh:
            fh.write(b"changed")
        return resp

    monkeypatch.setattr(c.http, "patch", change_then_patch)
    with pytest.raises(E.ValidationFailed, match="changed during the upload"):
        c.upload(src, "hashing", "y.bin", chunk_size=2 << 20)
    assert "y.bin" not in {f["path"] for f in c.files("hashing")}
