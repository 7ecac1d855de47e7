"""Datasets: immutable versions, tree, ranged downloads, version zips, previews, metadata,
deletion and blob collection."""

from __future__ import annotations

import io
import json
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import Api

CSV = b"text,label,score\nhello,pos,0.5\n\"multi\nline\",neg,1\nbye,pos,\n"


def add(api: Api, path: str, data: bytes, ds: str = "d") -> dict[str, object]:
    r = api.client.post(f"/api/v1/datasets/{ds}/files", headers=api.h(),
                        files={"file": ("f", data)}, data={"path": path})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_create_list_get_update_delete(api: Api) -> None:
    r = api.client.post("/api/v1/datasets", headers=api.h(),
                        json={"name": "reviews", "description": "movie reviews",
                              "metadata": {"source": "imdb", "n": 3}})
    assert r.status_code == 201
    ds = r.json()
    assert ds["owner"] == "admin" and ds["latest_version"] == 0
    assert api.client.post("/api/v1/datasets", headers=api.h(),
                           json={"name": "reviews"}).status_code == 409
    assert [d["name"] for d in api.client.get("/api/v1/datasets", headers=api.h()).json()] == [
        "reviews"]
    r = api.client.patch(f"/api/v1/datasets/{ds['id']}", headers=api.h(),
                         json={"metadata": {"license": "cc-by"}})
    assert r.json()["metadata"] == {"license": "cc-by"}
    assert api.client.patch("/api/v1/datasets/reviews", headers=api.h(),
                            json={"bogus": 1}).status_code == 422
    assert api.client.delete("/api/v1/datasets/reviews", headers=api.h()).status_code == 204
    assert api.client.get("/api/v1/datasets/reviews", headers=api.h()).status_code == 404


def test_bad_names_are_422(sqlite_api: Api) -> None:
    for name in ["", "../x", "a b", "-lead", "x" * 200, "a:b"]:
        r = sqlite_api.client.post("/api/v1/datasets", headers=sqlite_api.h(),
                                   json={"name": name})
        assert r.status_code == 422, name
        assert r.json()["error"]["code"] == "validation_failed"


def test_versions_are_immutable_snapshots(api: Api) -> None:
    api.dataset("d")
    assert add(api, "a.csv", b"v1")["number"] == 1
    assert add(api, "b/c.csv", b"c")["number"] == 2
    assert add(api, "a.csv", b"v2")["number"] == 3
    r = api.client.delete("/api/v1/datasets/d/files/b/c.csv", headers=api.h())
    assert r.json()["number"] == 4 and r.json()["file_count"] == 1
    # Identical content at the same path makes no new version.
    assert add(api, "a.csv", b"v2")["number"] == 4
    v1 = api.client.get("/api/v1/datasets/d/versions/1", headers=api.h()).json()
    assert [(f["path"], f["size"]) for f in v1["files"]] == [("a.csv", 2)]
    assert api.client.get("/api/v1/datasets/d/files/a.csv?version=1",
                          headers=api.h()).content == b"v1"
    assert api.client.get("/api/v1/datasets/d/files/a.csv", headers=api.h()).content == b"v2"
    assert api.client.get("/api/v1/datasets/d/files/b/c.csv?version=2",
                          headers=api.h()).content == b"c"
    assert api.client.get("/api/v1/datasets/d/files/b/c.csv",
                          headers=api.h()).status_code == 404
    nums = [v["number"] for v in api.client.get("/api/v1/datasets/d/versions",
                                                headers=api.h()).json()]
    assert nums == [1, 2, 3, 4]
    assert api.client.get("/api/v1/datasets/d/versions/9", headers=api.h()).status_code == 404


def test_tree_lists_folders_with_counts(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    for p in ["top.txt", "img/cat/1.png", "img/cat/2.png", "img/dog/1.png"]:
        add(api, p, p.encode())
    root = api.client.get("/api/v1/datasets/d/tree", headers=api.h()).json()
    assert [(e["name"], e["kind"], e["files"]) for e in root["entries"]] == [
        ("img", "folder", 3), ("top.txt", "file", 1)]
    img = api.client.get("/api/v1/datasets/d/tree?path=img", headers=api.h()).json()
    assert [(e["path"], e["files"]) for e in img["entries"]] == [("img/cat", 2), ("img/dog", 1)]
    assert api.client.get("/api/v1/datasets/d/tree?path=nope",
                          headers=api.h()).status_code == 404


def test_range_requests(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    data = bytes(range(256)) * 40
    add(api, "x.bin", data)
    r = api.client.get("/api/v1/datasets/d/files/x.bin", headers={**api.h(),
                                                                   "Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = api.client.get("/api/v1/datasets/d/files/x.bin", headers={**api.h(),
                                                                   "Range": "bytes=-10"})
    assert r.content == data[-10:]
    r = api.client.get("/api/v1/datasets/d/files/x.bin", headers={**api.h(),
                                                                   "Range": "bytes=99999-"})
    assert r.status_code == 416


def test_version_zip_streams_every_file(api: Api) -> None:
    api.dataset("d")
    files = {"a.csv": b"1,2\n", "deep/b.bin": bytes(range(256)) * 5000}
    for p, data in files.items():
        add(api, p, data)
    r = api.client.get("/api/v1/datasets/d/versions/2/archive", headers=api.h())
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == files
    r = api.client.get("/api/v1/datasets/d/versions/1/archive", headers=api.h())
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == ["a.csv"]


def test_preview_csv_tsv_jsonl_parquet(api: Api, tmp_path: object) -> None:
    api.dataset("d")
    add(api, "t.csv", CSV)
    add(api, "t.tsv", b"a\tb\n1\tx\n2\ty\n3\tz\n")
    add(api, "t.jsonl", b'{"a": 1, "b": "x"}\n\n{"a": 2.5, "b": null}\n{"a": 3, "c": [1]}\n')
    table = pa.table({"n": list(range(1000)), "s": [f"r{i}" for i in range(1000)]})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=100)
    add(api, "t.parquet", buf.getvalue())

    def pv(path: str, rows: int = 2) -> dict[str, object]:
        r = api.client.get(f"/api/v1/datasets/d/preview/{path}?rows={rows}", headers=api.h())
        assert r.status_code == 200, r.text
        return dict(r.json())

    csv = pv("t.csv")
    assert csv["row_count"] == 3 and csv["format"] == "csv"
    assert csv["columns"] == [{"name": "text", "type": "string"},
                              {"name": "label", "type": "string"},
                              {"name": "score", "type": "number"}]
    assert csv["rows"] == [{"text": "hello", "label": "pos", "score": "0.5"},
                           {"text": "multi\nline", "label": "neg", "score": "1"}]
    tsv = pv("t.tsv")
    assert tsv["row_count"] == 3 and tsv["columns"][0] == {"name": "a", "type": "integer"}
    jl = pv("t.jsonl", 5)
    assert jl["row_count"] == 3
    assert {c["name"]: c["type"] for c in jl["columns"]} == {  # type: ignore[union-attr]
        "a": "number", "b": "string", "c": "array"}
    par = pv("t.parquet", 3)
    assert par["row_count"] == 1000
    assert par["rows"] == [{"n": 0, "s": "r0"}, {"n": 1, "s": "r1"}, {"n": 2, "s": "r2"}]
    assert par["columns"] == [{"name": "n", "type": "int64"}, {"name": "s", "type": "string"}]


def test_preview_refuses_unknown_and_broken_files(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    add(api, "x.png", b"\x89PNG")
    add(api, "bad.parquet", b"not parquet")
    add(api, "bad.jsonl", b'{"a": 1}\n{oops\n')
    for path, words in [("x.png", "only CSV"), ("bad.parquet", "Parquet"),
                        ("bad.jsonl", "line 2")]:
        r = api.client.get(f"/api/v1/datasets/d/preview/{path}", headers=api.h())
        # The request is fine; the file's content does not allow it (409, not 422).
        assert r.status_code == 409, path
        assert r.json()["error"]["code"] == "unsupported_format", r.json()
        assert words.lower() in r.json()["error"]["message"].lower(), r.json()


def test_file_metadata(api: Api) -> None:
    api.dataset("d")
    add(api, "a.csv", b"1")
    url = "/api/v1/datasets/d/file-metadata/a.csv"
    assert api.client.get(url, headers=api.h()).json() == {"metadata": {}}
    body = {"metadata": {"split": "train", "tags": ["x"], "n": {"deep": 1}}}
    assert api.client.put(url, headers=api.h(), json=body).json() == body
    assert api.client.get(url, headers=api.h()).json() == body
    r = api.client.put("/api/v1/datasets/d/file-metadata/missing.csv", headers=api.h(),
                       json=body)
    assert r.status_code == 404


def test_multipart_limit_and_bad_paths(make_api: object) -> None:
    api = make_api(max_multipart_bytes=1000)  # type: ignore[operator]
    api.dataset("d")
    r = api.client.post("/api/v1/datasets/d/files", headers=api.h(),
                        files={"file": ("f", b"x" * 5000)}, data={"path": "big.bin"})
    assert r.status_code == 413
    assert "resumable" in r.json()["error"]["hint"]
    r = api.client.post("/api/v1/datasets/d/files", headers=api.h(),
                        files={"file": ("f", b"x")}, data={"path": "../up.txt"})
    assert r.status_code == 422
    assert api.client.get("/api/v1/datasets/d", headers=api.h()).json()["latest_version"] == 0


def test_deleted_dataset_blobs_are_collected(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d")
    api.dataset("e")
    add(api, "only-d.bin", b"unique to d")
    add(api, "shared.bin", b"in both", ds="d")
    add(api, "shared.bin", b"in both", ds="e")
    blobs = api.app.state.platform.blobs
    assert len(list(blobs.iter_digests())) == 2  # deduplicated
    api.client.delete("/api/v1/datasets/d", headers=api.h())
    from clowder_ml.services import maintenance

    _, removed = maintenance.collect(api.app.state.platform, grace_seconds=-1)
    assert removed == 1
    assert api.client.get("/api/v1/datasets/e/files/shared.bin",
                          headers=api.h()).content == b"in both"


def test_error_bodies_have_the_contract_shape(sqlite_api: Api) -> None:
    api = sqlite_api
    for method, url, kw in [("GET", "/api/v1/nowhere", {}),
                            ("DELETE", "/healthz", {}),
                            ("POST", "/api/v1/datasets", {"content": b"{not json"}),
                            ("GET", "/api/v1/datasets/x/versions/notanumber", {})]:
        r = api.client.request(method, url, headers=api.h(), **kw)
        assert 400 <= r.status_code < 500, (url, r.status_code)
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "hint"}
        assert "Traceback" not in json.dumps(body)
