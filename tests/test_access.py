"""Cross-user isolation: another user's datasets, files, versions and uploads answer 404 on
every endpoint, exactly like things that do not exist; shares grant read or write."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import Api

CSV = b"a,b\n1,2\n"


def _tus_meta(**kv: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kv.items())


def _bodies(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A valid request for every dataset endpoint, so only the access check can refuse it."""
    return {
        ("PATCH", "/api/v1/datasets/{ref}"): {"json": {"description": "mine now"}},
        ("PUT", "/api/v1/datasets/{ref}/shares/{username}"): {"json": {"permission": "write"}},
        ("POST", "/api/v1/datasets/{ref}/files"): {
            "files": {"file": ("x.csv", CSV)}, "data": {"path": "x.csv"}},
        ("POST", "/api/v1/datasets/{ref}/archive"): {
            "files": {"file": ("x.zip", _zip_bytes())}},
        ("PUT", "/api/v1/datasets/{ref}/file-metadata/{path}"): {"json": {"metadata": {"k": 1}}},
    }


def _zip_bytes() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("z.txt", "hello")
    return buf.getvalue()


def _dataset_routes(api: Api) -> list[tuple[str, str]]:
    paths = api.app.openapi()["paths"]
    return [(m.upper(), p) for p, ops in paths.items() if "{ref}" in p for m in ops]


def test_every_dataset_endpoint_hides_other_users_datasets(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    api.user("carol")
    ds = api.dataset("secret", user="alice", files={"a.csv": CSV})
    routes = _dataset_routes(api)
    assert len(routes) >= 15, routes  # the test must really cover the API
    bodies = _bodies("secret")
    refs = [ds["id"], "alice:secret", "secret"]
    for method, template in routes:
        for ref in refs:
            url = (template.replace("{ref}", ref).replace("{path}", "a.csv")
                   .replace("{number}", "1").replace("{username}", "carol"))
            r = api.client.request(method, url, headers=bob, **bodies.get((method, template), {}))
            assert r.status_code == 404, (method, url, r.status_code, r.text)
            err = r.json()["error"]
            assert err["code"] == "not_found"
            # The answer is the same as for a dataset that does not exist.
            missing = api.client.request(
                method, url.replace(ref, "no-such-dataset", 1), headers=bob,
                **bodies.get((method, template), {}))
            assert missing.status_code == 404
    # Nothing changed for alice.
    after = api.client.get("/api/v1/datasets/secret", headers=alice).json()
    assert after["latest_version"] == 1 and after["description"] == ""
    assert api.client.get("/api/v1/datasets", headers=bob).json() == []


def test_other_users_uploads_are_invisible(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    api.dataset("mine", user="alice")
    tus = {"Tus-Resumable": "1.0.0"}
    r = api.client.post("/api/v1/uploads/", headers={
        **alice, **tus, "Upload-Length": "10",
        "Upload-Metadata": _tus_meta(dataset="mine", path="f.bin")})
    assert r.status_code == 201, r.text
    loc = r.headers["location"]
    for method, extra in [("HEAD", {}), ("GET", {}), ("DELETE", {}),
                          ("PATCH", {"content": b"0123456789", "headers": {
                              "Upload-Offset": "0",
                              "Content-Type": "application/offset+octet-stream"}})]:
        headers = {**bob, **tus, **extra.pop("headers", {})}  # type: ignore[dict-item]
        r = api.client.request(method, loc, headers=headers, **extra)
        assert r.status_code == 404, (method, r.status_code, r.text)
    # Bob cannot start an upload into alice's dataset either.
    r = api.client.post("/api/v1/uploads/", headers={
        **bob, **tus, "Upload-Length": "10",
        "Upload-Metadata": _tus_meta(dataset="alice:mine", path="f.bin")})
    assert r.status_code == 404
    # Alice's upload is untouched.
    r = api.client.head(loc, headers={**alice, **tus})
    assert r.status_code == 200 and r.headers["upload-offset"] == "0"


def test_read_share_allows_reading_not_writing(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    api.dataset("shared", user="alice", files={"a.csv": CSV})
    r = api.client.put("/api/v1/datasets/shared/shares/bob", json={"permission": "read"},
                       headers=alice)
    assert r.status_code == 200
    assert api.client.get("/api/v1/datasets/alice:shared/files/a.csv",
                          headers=bob).content == CSV
    assert api.client.get("/api/v1/datasets/shared", headers=bob).json()["permission"] == "read"
    r = api.client.post("/api/v1/datasets/shared/files", files={"file": ("b.csv", CSV)},
                        headers=bob)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    assert api.client.delete("/api/v1/datasets/shared", headers=bob).status_code == 403
    # Sharing onwards is the owner's right only.
    api.user("carol")
    r = api.client.put("/api/v1/datasets/shared/shares/carol", json={"permission": "read"},
                       headers=bob)
    assert r.status_code == 403


def test_write_share_allows_adding_files_and_unshare_revokes(api: Api) -> None:
    alice, bob = api.user("alice"), api.user("bob")
    api.dataset("team", user="alice")
    api.client.put("/api/v1/datasets/team/shares/bob", json={"permission": "write"},
                   headers=alice)
    r = api.client.post("/api/v1/datasets/team/files", files={"file": ("b.csv", CSV)},
                        data={"path": "b.csv"}, headers=bob)
    assert r.status_code == 201, r.text
    assert r.json()["number"] == 1
    shares = api.client.get("/api/v1/datasets/team/shares", headers=alice).json()
    assert shares == [{"username": "bob", "permission": "write"}]
    assert api.client.delete("/api/v1/datasets/team/shares/bob", headers=alice).status_code == 204
    assert api.client.get("/api/v1/datasets/team", headers=bob).status_code == 404


def test_admin_sees_everything_and_users_need_admin(api: Api) -> None:
    bob = api.user("bob")
    api.dataset("bobs", user="bob")
    assert api.client.get("/api/v1/datasets/bob:bobs", headers=api.h()).status_code == 200
    r = api.client.post("/api/v1/users", json={"username": "eve", "password": "evepassword"},
                        headers=bob)
    assert r.status_code == 403
    assert api.client.get("/api/v1/users", headers=bob).status_code == 403


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nonsense"},
                                     {"Authorization": "Bearer cml_abc_def"}])
def test_requests_without_valid_token_are_refused(sqlite_api: Api, headers: dict[str, str],
                                                  ) -> None:
    r = sqlite_api.client.get("/api/v1/datasets", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "authentication_required"



def test_jobs_that_add_predictions_need_write_access(api: Api) -> None:
    """Refused at submission (403), not after the job ran: predictions become a new version
    of the input dataset. Reading jobs (fine-tune, train mode) need only read access."""
    from tests.registry.registry_helpers import fake_finetune

    alice, bob = api.user("alice"), api.user("bob")
    api.dataset("shared", user="alice", files={"a.csv": CSV})
    api.client.put("/api/v1/datasets/shared/shares/bob", json={"permission": "read"},
                   headers=alice)
    fake_finetune(api, "alice:shared", "bobs", {"eval_accuracy": 0.5}, user="bob")

    def submit(task: str, params: dict[str, Any]) -> Any:
        return api.client.post("/api/v1/jobs", headers=bob, json={
            "task": task, "params": params,
            "inputs": [{"kind": "dataset", "ref": "alice:shared"}]})

    for task, params in (("text-classification-predict", {"model": "bobs@latest"}),
                         ("custom-script", {"mode": "predict", "script": "p.py"})):
        r = submit(task, params)
        assert r.status_code == 403, (task, r.text)
        assert r.json()["error"]["code"] == "permission_denied"
        assert "read-only access" in r.json()["error"]["message"]
    for task, params in (("text-classification-finetune", {"model_name": "again"}),
                         ("custom-script", {"mode": "train", "model_name": "own"})):
        assert submit(task, params).status_code == 201, task
    api.client.put("/api/v1/datasets/shared/shares/bob", json={"permission": "write"},
                   headers=alice)
    assert submit("text-classification-predict", {"model": "bobs@latest"}).status_code == 201
