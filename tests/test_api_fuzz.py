"""Property-based fuzzing of the whole HTTP API against its own OpenAPI contract (schemathesis).

One app per database (SQLite and PostgreSQL) is driven in-process over ASGI as the admin. It is
seeded with datasets that hold a CSV and other files, a second user, an imported model version
and a (waiting) job, so that requests reach past "not found". Two runs per database:

* ``test_api_fuzz``, per operation: schemathesis's explicit and coverage cases plus
  MAX_EXAMPLES generated ones (valid and invalid), derandomized so a run is reproducible,
  without shrinking so a failing run is as quick as a passing one.
* ``test_api_stateful``: schemathesis's state machine chains operations through the
  document's OpenAPI links (create a dataset, upload to it, read the version and its files,
  submit a job on it, reach the model version a job made), STATEFUL_SCENARIOS scenarios.

Every answer is held to all of schemathesis's checks (no server error; every status, content
type, header and body as the operation declares it; schema-valid requests accepted and
invalid ones refused; ...), with ``tests/schemathesis.toml`` (the rules no JSON Schema can
state), and to the platform's own: every 4xx/5xx is ``{"error": {"code", "message", "hint"}}``
with a code the operation declares for that status (``x-error-codes``), never a traceback.

Hooks point valid path parameters and ``version`` at the seeded data half the time, and
sometimes add hostile values to bodies (NUL, lone surrogates, deep nesting, real and corrupt
zips). A valid case a hostile value made invalid is no longer the schema's valid data: it is
held to every check but "valid data is accepted".

Below the fuzz runs: focused regression tests for the bugs they found.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import hypothesis
import jsonschema_rs
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

from clowder_ml.api.app import create_app
from clowder_ml.api.responses import CODES_KEY, known_errors
from clowder_ml.api.schemas import plain_json
from clowder_ml.errors import ClowderMLError
from clowder_ml.settings import Settings
from tests.conftest import ADMIN_PW, Api

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
STATEFUL_SCENARIOS = int(os.environ.get("FUZZ_STATEFUL_SCENARIOS", "50"))
STATEFUL_STEPS = 8
CONFIG = Path(__file__).with_name("schemathesis.toml")  # shared with scripts/fuzz-api.sh
SEED_NAME = "fuzzset"
DOOMED_NAME = "doomed"  # the only dataset the fuzzer may delete
MODEL_NAME = "fuzzmodel"
SEED_CSV = b"id,text,label\n1,good,pos\n2,bad,neg\n3,\"quoted, comma\",pos\n"
READ_PATHS = ["train/data.csv", "data.jsonl", "data.parquet", "notes.txt", "bad.jsonl",
              "fake.parquet", "train", "missing.csv"]
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


def _safetensors(n: int = 4) -> bytes:
    """A minimal safetensors file: one float32 tensor of ``n`` zeros."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n],
                               "data_offsets": [0, 4 * n]}}).encode()
    return len(header).to_bytes(8, "little") + header + bytes(4 * n)


def _seed(api: Api) -> dict[str, Any]:
    """Datasets with files, a second user, an imported model version, a waiting job."""
    files = {
        "train/data.csv": SEED_CSV,
        "data.jsonl": b'{"a": 1, "b": "x"}\n{"a": 2.5, "b": null}\n',
        "data.parquet": _parquet_bytes(),
        "notes.txt": b"hello",
        "bad.jsonl": b'{"a": 1}\nnot json\n',
        "fake.parquet": b"PAR1 this is not parquet",
        "scratch/a.csv": b"a\n1\n",
        "scratch/b.csv": b"b\n2\n",
        "hf/config.json": json.dumps({"model_type": "bert"}).encode(),
        "hf/model.safetensors": _safetensors(),
    }
    ds = api.dataset(SEED_NAME, files=files)
    api.dataset(DOOMED_NAME, files={"x.csv": b"x\n1\n"})
    api.user("bob")
    c, h = api.client, api.h()
    r = c.post("/api/v1/models/import", json={"name": MODEL_NAME, "dataset": SEED_NAME,
                                              "path": "hf"}, headers=h)
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/jobs", json={"task": "dataset-profile", "inputs": [
        {"kind": "dataset", "ref": SEED_NAME}]}, headers=h)
    assert r.status_code == 201, r.text
    return {"dataset": ds, "job": r.json()["id"]}


@pytest.fixture(params=["sqlite", "postgresql"])
def fuzz_schema(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The schema of a seeded app, on each database.

    The app runs once, under the lifespan schemathesis starts for its own client: a second
    lifespan (a ``TestClient`` context) on the same app would start its co-editing hub twice.
    The seeding client is a plain ``TestClient`` outside any lifespan."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    settings = Settings(database_url=url, admin_password=ADMIN_PW, log_json=False,
                        data_dir=tmp_path / "data", engine_enabled=False)
    app = create_app(settings, announce=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app,
                                            config=SchemathesisConfig.from_path(CONFIG))
    client = TestClient(app)
    r = client.post("/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PW})
    assert r.status_code == 201, r.text
    api = Api(client, settings, r.json()["token"], app)
    seeded = _seed(api)
    schema.config.update(headers=api.h())
    ds = seeded["dataset"]
    real: dict[str, list[Any]] = {
        "ref": [SEED_NAME, ds["id"], f"admin:{SEED_NAME}"],
        "username": ["bob"],  # not the owner: sharing with oneself is another rule
        "job_id": [seeded["job"]],
        "name": [MODEL_NAME, f"admin:{MODEL_NAME}"],
        "number": [1],
    }

    @schema.hook("flatmap_path_parameters")
    def aim_at_real_data(context: Any, path_parameters: Any) -> Any:
        """Half the time, swap valid path parameters for the seeded dataset, its files,
        model, job and a user (invalid ones are left to be refused)."""
        op = context.operation
        if not isinstance(path_parameters, dict) or op is None \
                or not _path_valid(op, path_parameters):
            return st.just(path_parameters)
        deleting = op.method.upper() == "DELETE"
        swaps: dict[str, Any] = {k: st.sampled_from(v) for k, v in real.items()
                                 if k in path_parameters}
        if "ref" in path_parameters and op.path.startswith("/api/v1/model-refs/"):
            swaps["ref"] = st.sampled_from([MODEL_NAME, f"{MODEL_NAME}/1",
                                            f"admin:{MODEL_NAME}@latest"])
        elif "ref" in swaps and deleting and op.path == "/api/v1/datasets/{ref}":
            swaps["ref"] = st.just(DOOMED_NAME)
        if "path" in path_parameters:
            swaps["path"] = st.sampled_from(DELETABLE_PATHS if deleting else READ_PATHS)
        if not swaps:
            return st.just(path_parameters)
        return st.one_of(st.just(path_parameters),
                         st.fixed_dictionaries(swaps).map(lambda r: {**path_parameters, **r}))

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

    _TRUE = {"true", "1", "on", "t", "y", "yes"}  # what pydantic reads as true

    @schema.hook("flatmap_query")
    def aim_at_real_versions(context: Any, query: Any) -> Any:
        if isinstance(query, dict) and str(query.get("follow")).lower() in _TRUE:
            # A followed log stays open until its job ends, and no job runs here (the
            # schemathesis.toml entry for the logs says so; this is the same rule for the
            # in-process runs, which do not apply that entry).
            query = {**query, "follow": False}
        if not isinstance(query, dict) or "version" not in query:
            return st.just(query)
        return st.one_of(st.just(query),
                         st.integers(1, 4).map(lambda v: {**query, "version": v}))

    try:
        yield schema
    finally:
        client.close()
        asgi.shutdown_lifespans()  # the lifespan schemathesis started for its own client


# The platform's own checks ----------------------------------------------------------------

def error_envelope_declared(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """A 4xx or 5xx is JSON ``{"error": {"code", "message", "hint"}}`` (never a traceback or
    a bare ``{"detail"}``) whose code is one the operation declares for that status."""
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
    assert err["code"] in known_errors() and err["code"] != ClowderMLError.code, \
        f"{status} has an unknown or generic code: {err!r}"
    assert isinstance(err["message"], str) and err["message"], err
    assert err["hint"] is None or isinstance(err["hint"], str), err
    if case.method.upper() != case.operation.method.upper():
        return  # a method the path does not take (405, with Allow): no operation's answer
    declared = case.operation.definition.raw.get("responses", {}).get(str(status), {})
    assert err["code"] in declared.get(CODES_KEY, []), (
        f"{case.operation.label} answered {status} {err['code']!r}, which it does not declare "
        f"(declared: {declared.get(CODES_KEY)})")


def _validator(schema: Any, operation: Any) -> Any:
    # Local references ("#/components/...") resolve against the whole document.
    components = operation.schema.raw_schema.get("components", {})
    return jsonschema_rs.validator_for({**schema, "components": components})


def _path_valid(operation: Any, path_parameters: dict[str, Any]) -> bool:
    """Whether path parameters match the operation's document (percent-encoding undone)."""
    for param in operation.definition.raw.get("parameters", []):
        if param.get("in") == "path" and param["name"] in path_parameters:
            value = path_parameters[param["name"]]
            value = unquote(value) if isinstance(value, str) else value
            if not _validator(param["schema"], operation).is_valid(value):
                return False
    return True


def _body_valid(case: schemathesis.Case) -> bool:
    """Whether a JSON body matches the operation's document (other media: not judged)."""
    raw = case.operation.definition.raw
    media = (raw.get("requestBody") or {}).get("content", {}).get(case.media_type or "")
    if not media or case.media_type != "application/json" or "schema" not in media:
        return True
    try:
        if not _validator(media["schema"], case.operation).is_valid(case.body):
            return False
        # What no JSON Schema states but every request body must be: plain JSON text
        # (no lone surrogate, in a key or a value) nested no deeper than the server reads.
        plain_json(case.body)
    except ValueError:  # a lone surrogate cannot even be read as JSON text
        return False
    return True


def mode_checks_to_skip(case: schemathesis.Case) -> list[Any]:
    """The acceptance check of a valid case that a hook made invalid (a hostile value in
    its body): such a case is held to every other check. (Hooks never make an invalid case
    valid: real data replaces only valid path parameters.)"""
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative:
        return []
    if _path_valid(case.operation, case.path_parameters or {}) and _body_valid(case):
        return []
    return [positive_data_acceptance]


def validate(case: schemathesis.Case, response: Any, **kwargs: Any) -> None:
    case.validate_response(response, additional_checks=[error_envelope_declared],
                           excluded_checks=mode_checks_to_skip(case), **kwargs)


# The runs -----------------------------------------------------------------------------------

schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                     # No shrinking: a failure is reported as found (with a curl line), so a
                     # failing run stays as quick as a passing one.
                     phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                     suppress_health_check=list(HealthCheck))
def test_api_fuzz(case: schemathesis.Case) -> None:
    validate(case, case.call())


# How many of the document's own links (not schemathesis's inferred ones) the stateful phase
# must have followed to a 2xx answer: without it the run would pass while the links led
# nowhere. (Which ones a random walk over ~300 transitions takes varies; the four from a new
# dataset to a job are followed one by one by test_links_chain_a_dataset_to_a_job.)
MIN_LINKS_FOLLOWED = 2


def test_api_stateful(fuzz_schema: Any) -> None:
    """Scenarios along the OpenAPI links: dataset, upload, version, files, job, model.

    Scenarios start only at the operations of that chain (the per-operation run covers the
    rest); the run's own token is never revoked (nor its session logged out), or every later
    step would be a 401."""
    chain = (fuzz_schema.include(path_regex=r"^/api/v1/(datasets|jobs|model-refs)(/|$)")
             .exclude(path_regex=r"^/api/v1/(tokens/\{token_id\}|auth/logout)$"))
    base = chain.as_state_machine()
    followed: set[str] = set()
    scenarios = 0

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            nonlocal scenarios
            scenarios += 1

        def step(self, input: Any) -> Any:
            output = super().step(input)
            link = input.transition
            if link is not None and not link.is_inferred and input.is_applied \
                    and output is not None and output.response.status_code < 300:
                followed.add(link.id)
            return output

        def validate_response(self, response: Any, case: schemathesis.Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            validate(case, response, transport_kwargs=kwargs)

    # Which steps a scenario may take depends on the server's earlier answers (a link is
    # followed only once its source answered), so Hypothesis can find that a choice it made
    # before is now forced: FlakyStrategyDefinition, a generation artefact and not a
    # failure (schemathesis's own runner starts the suite again on it). So do we, randomly
    # seeded, until the scenarios are run. A check that fails raises anything else.
    for attempt in range(4):
        try:
            Machine.run(settings=hypothesis.settings(
                max_examples=STATEFUL_SCENARIOS - scenarios, derandomize=attempt == 0,
                stateful_step_count=STATEFUL_STEPS, deadline=None, database=None,
                phases=[hypothesis.Phase.generate], suppress_health_check=list(HealthCheck)))
            break
        except hypothesis.errors.FlakyStrategyDefinition:
            if scenarios >= STATEFUL_SCENARIOS:
                break
    assert len(followed) >= MIN_LINKS_FOLLOWED, f"links followed to a 2xx: {sorted(followed)}"


def _follow(document: dict[str, Any], source: tuple[str, str, int], link: str,
            request_path: dict[str, Any], response: Any) -> tuple[str, str, Any]:
    """The method, URL and body of the operation that ``link`` of ``source``'s answer leads
    to, its runtime expressions resolved against that request and answer (OpenAPI 3)."""
    method, path, status = source
    entry = document["paths"][path][method.lower()]["responses"][str(status)]["links"][link]
    target = next((m.upper(), p) for p, item in document["paths"].items()
                  for m, op in item.items() if op.get("operationId") == entry["operationId"])

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, str) and value.startswith("$request.path."):
            return request_path[value.removeprefix("$request.path.")]
        if isinstance(value, str) and value.startswith("$response.body#"):
            found = response.json()
            for part in value.removeprefix("$response.body#").split("/")[1:]:
                found = found[int(part)] if isinstance(found, list) else found[part]
            return found
        return value

    params = resolve(entry.get("parameters", {}))
    url = target[1].format(**{k.removeprefix("path."): v for k, v in params.items()})
    return target[0], url, resolve(entry.get("requestBody"))


def test_links_chain_a_dataset_to_a_job(sqlite_api: Api) -> None:
    """The document's links, followed as a client would: a new dataset, files uploaded to it,
    the version that made, a job on exactly that version, the job."""
    c, h = sqlite_api.client, sqlite_api.h()
    doc = c.get("/openapi.json").json()
    r = c.post("/api/v1/datasets", json={"name": "linked"}, headers=h)
    assert r.status_code == 201, r.text
    method, url, _ = _follow(doc, ("POST", "/api/v1/datasets", 201), "UploadFilesDataset", {}, r)
    ref = r.json()["id"]
    assert (method, url) == ("POST", f"/api/v1/datasets/{ref}/files")
    r = c.post(url, files={"file": ("a.csv", SEED_CSV)}, headers=h)
    assert r.status_code == 201, r.text
    method, url, _ = _follow(doc, ("POST", "/api/v1/datasets/{ref}/files", 201),
                             "GetNewVersion", {"ref": ref}, r)
    assert (method, url) == ("GET", f"/api/v1/datasets/{ref}/versions/1")
    r = c.get(url, headers=h)
    assert r.status_code == 200, r.text
    method, url, body = _follow(doc, ("GET", "/api/v1/datasets/{ref}/versions/{number}", 200),
                                "SubmitJobOnVersion", {"ref": ref, "number": 1}, r)
    assert body["inputs"] == [{"kind": "dataset", "ref": ref, "version": 1}]
    r = c.request(method, url, json=body, headers=h)
    assert r.status_code == 201, r.text
    method, url, _ = _follow(doc, ("POST", "/api/v1/jobs", 201), "GetJob", {}, r)
    r = c.request(method, url, headers=h)
    assert r.status_code == 200 and r.json()["state"] == "pending", r.text


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


def test_metric_ids_beyond_the_database_integer_are_422(api: Api) -> None:
    """PostgreSQL: 'integer out of range' (a 500) for ?after=5110500152."""
    api.dataset("d", files={"a.csv": b"x\n1\n"})
    r = api.client.post("/api/v1/jobs", json={"task": "dataset-profile", "inputs": [
        {"kind": "dataset", "ref": "d"}]}, headers=api.h())
    url = f"/api/v1/jobs/{r.json()['id']}/metrics"
    _err(api.client.get(f"{url}?after=5110500152", headers=api.h()), 422, "validation_failed")
    r = api.client.get(f"{url}?after=2147483647", headers=api.h())
    assert r.status_code == 200 and r.json() == [], r.text


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
