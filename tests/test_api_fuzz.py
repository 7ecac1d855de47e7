"""Property-based fuzzing of the whole HTTP API from its own OpenAPI schema (schemathesis).

One app per database (SQLite and PostgreSQL), seeded with datasets that hold a CSV and a few
other files, is driven in-process over ASGI as the admin. For every operation schemathesis
generates valid and invalid requests: its explicit and coverage cases plus MAX_EXAMPLES
random ones, derandomized so a run is reproducible, without shrinking so a failing run is as
quick as a passing one. Hooks point path parameters and ``version`` at the seeded data half
the time (so requests get past "not found"), and sometimes add hostile values (NUL, lone
surrogates, deep nesting, real and corrupt zips). Every answer must be a non-5xx, and every
4xx/5xx must be the platform's JSON error ``{"error": {"code", "message", "hint"}}`` with a
specific code, never a traceback or a bare ``{"detail"}``.

Below the fuzz run: focused regression tests for the bugs it found (and for the neighbours
that probing the same input classes turned up).
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from collections.abc import Iterator
from typing import Any

import hypothesis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from clowder_ml.errors import ERRORS_BY_CODE, ClowderMLError
from tests.conftest import Api

MAX_EXAMPLES = 40
SEED_NAME = "fuzzset"
DOOMED_NAME = "doomed"  # the only dataset the fuzzer may delete
SEED_CSV = b"id,text,label\n1,good,pos\n2,bad,neg\n3,\"quoted, comma\",pos\n"
READ_PATHS = ["train/data.csv", "data.jsonl", "data.parquet", "notes.txt", "bad.jsonl",
              "fake.parquet", "train", "train/", "missing.csv"]
DELETABLE_PATHS = ["scratch/a.csv", "scratch/b.csv", "missing.csv"]
HOSTILE_TEXT = ["\x00", "\ud800", "\u2028", "\U0001d4b3"]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


# (NaN and Infinity cannot be sent by the JSON client; a regression test below covers them.)
HOSTILE_JSON = ["\x00", "\ud800", {"\ud800": 1}, 10**400, _nested(300)]


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytearray:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return bytearray(buf.getvalue())


def _patch16(b: bytearray, at: int, value: int) -> None:
    b[at:at + 2] = struct.pack("<H", value)


def _corrupt_archives() -> dict[str, bytes]:
    """Zips damaged in ways that each made ``zipfile`` raise something other than
    BadZipFile (a 500 before the fix)."""
    out: dict[str, bytes] = {}
    b = _zip({"a.csv": b"x\n1\n"})
    _patch16(b, b.index(b"PK\x01\x02") + 6, 0xFF)  # "version needed to extract" 25.5
    out["bad-version"] = bytes(b)
    b = _zip({"a.csv": b"x\n1\n"})
    cd = b.index(b"PK\x01\x02")
    _patch16(b, cd + 8, struct.unpack("<H", b[cd + 8:cd + 10])[0] | 0x800)  # "UTF-8 name"
    b[cd + 46] = 0xFF  # ... that is not UTF-8
    out["central-name-not-utf8"] = bytes(b)
    b = _zip({"a.csv": b"x\n1\n"})
    b[30] = 0xFF  # the same in the local header
    _patch16(b, 6, struct.unpack("<H", b[6:8])[0] | 0x800)
    out["local-name-not-utf8"] = bytes(b)
    b = _zip({"a.csv": b"x\n1\n"})
    end = b.rindex(b"PK\x05\x06")  # central directory offset moved: negative header offset
    b[end + 16:end + 20] = struct.pack("<I", struct.unpack("<I", b[end + 16:end + 20])[0]
                                       + 0x10000)
    out["negative-offset"] = bytes(b)
    b = _zip({"a": b"x\n1\n"})
    cd = b.index(b"PK\x01\x02")  # an entry whose name is empty
    _patch16(b, cd + 28, 0)
    del b[cd + 46]
    end = b.rindex(b"PK\x05\x06")
    b[end + 12:end + 16] = struct.pack("<I", struct.unpack("<I", b[end + 12:end + 16])[0] - 1)
    out["empty-name"] = bytes(b)
    b = _zip({"a.csv": b"x" * 1000}, zipfile.ZIP_BZIP2)
    magic = b.index(b"BZh")
    b[magic:magic + 3] = b"XXX"
    out["corrupt-bz2"] = bytes(b)
    b = _zip({"a.csv": b"x" * 1000}, zipfile.ZIP_LZMA)
    b[30 + len("a.csv") + 4:30 + len("a.csv") + 9] = b"\xff" * 5  # lzma properties
    out["corrupt-lzma"] = bytes(b)
    return out


CORRUPT_ARCHIVES = _corrupt_archives()
ARCHIVES = {"good": bytes(_zip({"z/a.csv": b"a,b\n1,2\n", "z/b.txt": b"hi"})),
            "truncated": bytes(_zip({"a.csv": b"x\n1\n" * 50}))[:60], **CORRUPT_ARCHIVES}


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2, 3], "y": ["a", "b", None]}), buf)
    return buf.getvalue()


def _seed(api: Api) -> dict[str, Any]:
    files = {
        "train/data.csv": SEED_CSV,
        "data.jsonl": b'{"a": 1, "b": "x"}\n{"a": 2.5, "b": null}\n',
        "data.parquet": _parquet_bytes(),
        "notes.txt": b"hello",
        "bad.jsonl": b'{"a": 1}\nnot json\n',
        "fake.parquet": b"PAR1 this is not parquet",
        "scratch/a.csv": b"a\n1\n",
        "scratch/b.csv": b"b\n2\n",
    }
    ds = api.dataset(SEED_NAME, files=files)
    api.dataset(DOOMED_NAME, files={"x.csv": b"x\n1\n"})
    api.user("bob")
    return ds


@pytest.fixture
def fuzz_schema(api: Api) -> Iterator[Any]:
    """The schema of a seeded app, on each database (the ``api`` fixture's params)."""
    ds = _seed(api)
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    schema.config.update(headers=api.h())

    real_refs = [SEED_NAME, ds["id"], f"admin:{SEED_NAME}"]

    @schema.hook("flatmap_path_parameters")
    def aim_at_real_data(context: Any, path_parameters: Any) -> Any:
        """Half the time, swap in the seeded dataset, its files and a real user."""
        op = context.operation
        if not isinstance(path_parameters, dict) or op is None:
            return st.just(path_parameters)
        deleting = op.method.upper() == "DELETE"
        real: dict[str, Any] = {}
        if "ref" in path_parameters:
            doomed = deleting and op.path == "/api/v1/datasets/{ref}"
            real["ref"] = st.sampled_from([DOOMED_NAME] if doomed else real_refs)
        if "path" in path_parameters:
            real["path"] = st.sampled_from(DELETABLE_PATHS if deleting else READ_PATHS)
        if "username" in path_parameters:
            real["username"] = st.sampled_from(["bob", "admin"])
        if not real:
            return st.just(path_parameters)
        return st.one_of(st.just(path_parameters),
                         st.fixed_dictionaries(real).map(lambda r: {**path_parameters, **r}))

    @schema.hook("flatmap_body")
    def hostile_values(context: Any, body: Any) -> Any:
        """Sometimes add what JSON can carry but storage or responses may not (a NUL, a lone
        surrogate, deep nesting, a huge number), or a (corrupt) zip to unpack: random
        generation rarely makes these."""
        op = context.operation
        if op is None or not isinstance(body, dict):
            return st.just(body)
        if op.path.endswith("/archive") and "file" in body:
            # Random bytes are never a zip: send real and corrupt ones too.
            return st.one_of(st.just(body), st.sampled_from(sorted(ARCHIVES)).map(
                lambda name: {**body, "file": ARCHIVES[name]}))
        if not any(b.media_type == "application/json" for b in op.body):
            return st.just(body)  # multipart bodies cannot even encode a lone surrogate
        options = [st.just(body)]
        texts = [k for k, v in body.items() if isinstance(v, str)]
        if texts:
            options.append(st.tuples(st.sampled_from(texts), st.sampled_from(HOSTILE_TEXT))
                           .map(lambda kv: {**body, kv[0]: body[kv[0]] + kv[1]}))
        if isinstance(body.get("metadata"), dict):
            options.append(st.sampled_from(HOSTILE_JSON).map(
                lambda v: {**body, "metadata": {**body["metadata"], "fuzz": v}}))
        return st.one_of(options)

    @schema.hook("flatmap_query")
    def aim_at_real_versions(context: Any, query: Any) -> Any:
        if not isinstance(query, dict) or "version" not in query:
            return st.just(query)
        return st.one_of(st.just(query),
                         st.integers(1, 4).map(lambda v: {**query, "version": v}))

    yield schema
    asgi.shutdown_lifespans()  # the lifespan schemathesis started for its own client


def check_error_shape(response: Any) -> None:
    """4xx and 5xx answers are JSON ``{"error": {"code", "message", "hint"}}``."""
    status = response.status_code
    if status < 400:
        return
    text = response.text
    assert "Traceback" not in text, f"{status} leaks a traceback: {text[:500]}"
    ctype = (response.headers.get("content-type") or [""])[0]
    assert ctype.startswith("application/json"), f"{status} answered {ctype!r}: {text[:300]}"
    body = json.loads(text)
    assert isinstance(body, dict) and set(body) == {"error"}, f"{status} body: {body!r}"
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"code", "message", "hint"}, f"{status}: {err!r}"
    assert err["code"] in ERRORS_BY_CODE and err["code"] != ClowderMLError.code, \
        f"{status} has an unknown or generic code: {err!r}"
    assert isinstance(err["message"], str) and err["message"], err
    assert err["hint"] is None or isinstance(err["hint"], str), err


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                     # No shrinking: a failure is reported as found (with a curl line), so a
                     # failing run stays as quick as a passing one.
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                     suppress_health_check=list(HealthCheck))
def test_api_fuzz(case: schemathesis.Case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    check_error_shape(response)


# Regression tests for what the fuzz run found ------------------------------------------

JSON = {"content-type": "application/json"}


def _err(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code, err
    return err


def test_http_errors_carry_a_specific_code(sqlite_api: Api) -> None:
    """Starlette's own 400s (unparsable JSON, multipart without a boundary) answered with the
    root class's code "error"; they are "bad_request" now."""
    c, h = sqlite_api.client, sqlite_api.h()
    _err(c.post("/api/v1/datasets", content=b"\x9b,\x88", headers={**h, **JSON}),
         400, "bad_request")
    sqlite_api.dataset("d")
    _err(c.post("/api/v1/datasets/d/files", content=b"x",
                headers={**h, "content-type": "multipart/form-data"}), 400, "bad_request")


@pytest.mark.parametrize("url", [
    "/api/v1/datasets/d/versions/9223372036854775808",  # SQLite: OverflowError
    "/api/v1/datasets/d/versions/4645038472404466/archive",  # PostgreSQL: integer out of range
    "/api/v1/datasets/d/versions/-351124274143",
    "/api/v1/datasets/d/files?version=22505385444017254170624",
    "/api/v1/datasets/d/tree?version=71856582753",
    "/api/v1/datasets/d/files/a.csv?version=2147483648",
    "/api/v1/datasets/d/preview/a.csv?version=2147483648",
])
def test_version_numbers_beyond_the_database_integer_are_422(api: Api, url: str) -> None:
    api.dataset("d", files={"a.csv": b"x\n1\n"})
    err = _err(api.client.get(url, headers=api.h()), 422, "validation_failed")
    assert "version" in err["message"] or "number" in err["message"]
    r = api.client.get("/api/v1/datasets/d/versions/2147483647", headers=api.h())
    _err(r, 404, "not_found")  # the largest number is still a (missing) version


@pytest.mark.parametrize(("method", "url"), [
    ("GET", "/api/v1/datasets/a%00b"),
    ("GET", "/api/v1/datasets/ad%00min:d/files"),
    ("PUT", "/api/v1/datasets/d/shares/b%00b"),
    ("DELETE", "/api/v1/datasets/d/shares/b%00b"),
    ("DELETE", "/api/v1/tokens/a%00b"),
    ("GET", "/api/v1/uploads/a%00b"),
])
def test_nul_in_path_parameters_is_422(api: Api, method: str, url: str) -> None:
    """PostgreSQL cannot compare text with a NUL: these were 500s there."""
    api.dataset("d")
    r = api.client.request(method, url, json={"permission": "read"}, headers=api.h())
    assert "NUL" in _err(r, 422, "validation_failed")["message"]


@pytest.mark.parametrize(("method", "url", "body"), [
    ("POST", "/api/v1/auth/token", {"username": "ad\x00min", "password": "x"}),
    ("POST", "/api/v1/auth/login", {"username": "ad\x00min", "password": "x"}),
    ("POST", "/api/v1/auth/token", {"username": "admin", "password": "admin-password-1",
                                    "name": "t\x00"}),
    ("POST", "/api/v1/tokens", {"name": "t\x00"}),
    ("POST", "/api/v1/datasets", {"name": "e", "description": "\x00"}),
    ("PATCH", "/api/v1/datasets/d", {"description": "a\x00b"}),
])
def test_nul_in_stored_text_is_422(api: Api, method: str, url: str, body: Any) -> None:
    api.dataset("d")
    r = api.client.request(method, url, json=body, headers=api.h())
    assert "NUL" in _err(r, 422, "validation_failed")["message"]


@pytest.mark.parametrize("body", [
    b'{"metadata": {"k": "\\ud800"}}',  # stored, then every read of the dataset was a 500
    b'{"metadata": {"\\udc00": 1}}',
    b'{"metadata": {"k": [{"j": "a\\ud800"}]}}',
    b'{"description": "\\u00f7\\ud800"}',
    b'{"metadata": {"k": NaN}}',  # PostgreSQL refused it (500); SQLite turned it into null
    b'{"metadata": {"k": [1, -Infinity]}}',
    json.dumps({"metadata": {"k": _nested(300)}}).encode(),  # unserializable beyond ~255
])
def test_metadata_and_text_must_be_plain_json(api: Api, body: bytes) -> None:
    api.dataset("d")
    c, h = api.client, {**api.h(), **JSON}
    _err(c.patch("/api/v1/datasets/d", content=body, headers=h), 422, "validation_failed")
    if b"metadata" in body:
        _err(c.post("/api/v1/datasets", content=body[:-1] + b', "name": "e"}', headers=h),
             422, "validation_failed")
    r = c.get("/api/v1/datasets/d", headers=h)
    assert r.status_code == 200 and r.json()["metadata"] == {}, r.text


def test_metadata_still_takes_deep_big_and_nul_json(api: Api) -> None:
    """What JSON columns store and responses carry stays accepted."""
    api.dataset("d", files={"a.csv": b"x\n1\n"})
    meta = {"deep": _nested(60), "big": 10**40, "nul": "a\x00b", "inf": "Infinity",
            "pi": math.pi}
    c, h = api.client, api.h()
    r = c.patch("/api/v1/datasets/d", json={"metadata": meta}, headers=h)
    assert r.status_code == 200, r.text
    assert c.get("/api/v1/datasets/d", headers=h).json()["metadata"] == meta
    r = c.put("/api/v1/datasets/d/file-metadata/a.csv", json={"metadata": meta}, headers=h)
    assert r.status_code == 200 and r.json()["metadata"] == meta, r.text


def test_a_tiny_token_lifetime_still_expires(sqlite_api: Api) -> None:
    """expires_in_days=5e-324 (valid: > 0) rounded to a zero timedelta, which counted as
    "no expiry": the token never expired."""
    c, h = sqlite_api.client, sqlite_api.h()
    for r in (c.post("/api/v1/tokens", json={"name": "t", "expires_in_days": 5e-324}, headers=h),
              c.post("/api/v1/auth/token", json={"username": "admin",
                                                 "password": "admin-password-1",
                                                 "expires_in_days": 1e-12})):
        assert r.status_code == 201, r.text
        assert r.json()["expires_at"] is not None
        me = c.get("/api/v1/users/me", headers={"Authorization": f"Bearer {r.json()['token']}"})
        _err(me, 401, "authentication_required")


@pytest.mark.parametrize("name", sorted(CORRUPT_ARCHIVES))
def test_corrupt_archives_are_refused_not_500(sqlite_api: Api, name: str) -> None:
    sqlite_api.dataset("d")
    r = sqlite_api.client.post("/api/v1/datasets/d/archive",
                               files={"file": ("x.zip", CORRUPT_ARCHIVES[name])},
                               headers=sqlite_api.h())
    _err(r, 422, "unsafe_archive")
    versions = sqlite_api.client.get("/api/v1/datasets/d/versions", headers=sqlite_api.h())
    assert versions.json() == []
