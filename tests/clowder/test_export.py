"""Export to Clowder through the API, against the Clowder v2 stand-in: the version lands as
one zip file in the Clowder dataset with its metadata; a refused key, a server with no
Clowder and a reader who may not see the model get clear errors, and the key is never echoed.
(The CLI path, `models export REF --to-clowder`, runs in test_listener_e2e.py.)"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.clowder.standin import ClowderStandin
from tests.conftest import Api
from tests.registry.registry_helpers import fake_finetune, weights_bytes

CSV = b"text,label\ngood,pos\nbad,neg\n"
EXPORT = "/api/v1/models/sentiment/versions/1/export-to-clowder"


@pytest.fixture(scope="module")
def clowder() -> Iterator[ClowderStandin]:
    with ClowderStandin() as standin:
        yield standin


@pytest.fixture
def api_with_clowder(make_api: Any, clowder: ClowderStandin) -> Api:
    api: Api = make_api(clowder_url=clowder.url)
    api.dataset("reviews", files={"train.csv": CSV})
    fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.75})
    return api


def _clowder_user(clowder: ClowderStandin, name: str) -> tuple[str, str]:
    key = clowder.add_user(f"{name}-{id(clowder)}-{name}@example.org")
    return key, clowder.add_dataset(key, f"{name} models")


def test_a_version_lands_in_clowder_as_a_zip_with_its_metadata(
        api_with_clowder: Api, clowder: ClowderStandin) -> None:
    api = api_with_clowder
    key, ds = _clowder_user(clowder, "export")
    r = api.client.post(EXPORT, json={"dataset_id": ds, "api_key": key}, headers=api.h())
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["file"] == "clowder-ml-model-sentiment-v1.zip" and out["model"] == \
        "admin:sentiment/1" and out["clowder_url"] == clowder.url
    [f] = clowder.files(ds)
    assert f["id"] == out["file_id"] and f["name"] == out["file"]
    with zipfile.ZipFile(io.BytesIO(clowder.file_bytes(f["id"]))) as zf:
        assert zf.read("model.safetensors") == weights_bytes(0.0)
        assert {"config.json", "manifest.json"} <= set(zf.namelist())
    [meta] = clowder.dataset_metadata(ds)
    assert meta["id"] == out["metadata_id"]
    assert meta["agent"]["listener"]["name"] == "clowder-ml.export"
    model = meta["content"]["model"]
    assert model["ref"] == "admin:sentiment/1" and model["file_id"] == f["id"]
    assert model["metrics"] == {"eval_accuracy": 0.75} and len(model["digest"]) == 64
    lineage = model["lineage"]  # where the version came from: its job and the data it read
    assert lineage["parent"] == {"kind": "builtin", "ref": "minilm-l6"}
    assert "reviews" in str(lineage["produced_by"])
    assert isinstance(meta["@context"], list) and meta["@context"]


def test_a_refused_key_is_a_clear_error_that_does_not_echo_it(
        api_with_clowder: Api, clowder: ClowderStandin) -> None:
    api = api_with_clowder
    _key, ds = _clowder_user(clowder, "refused")
    wrong = "not-a-real-clowder-key-1234567890"
    r = api.client.post(EXPORT, json={"dataset_id": ds, "api_key": wrong}, headers=api.h())
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "clowder_refused" and "401" in err["message"]
    assert wrong not in r.text
    assert clowder.files(ds) == []


def test_a_dataset_the_key_cannot_write_is_refused(api_with_clowder: Api,
                                                   clowder: ClowderStandin) -> None:
    api = api_with_clowder
    key, _ds = _clowder_user(clowder, "mine")
    _other_key, theirs = _clowder_user(clowder, "theirs")
    r = api.client.post(EXPORT, json={"dataset_id": theirs, "api_key": key}, headers=api.h())
    assert r.status_code == 502 and r.json()["error"]["code"] == "clowder_refused", r.text
    assert clowder.files(theirs) == []


def test_someone_who_cannot_read_the_model_gets_404(api_with_clowder: Api,
                                                    clowder: ClowderStandin) -> None:
    api = api_with_clowder
    key, ds = _clowder_user(clowder, "bob")
    r = api.client.post(EXPORT, json={"dataset_id": ds, "api_key": key}, headers=api.user("bob"))
    assert r.status_code == 404, r.text
    assert clowder.files(ds) == []


def test_a_server_without_clowder_says_so(make_api: Any) -> None:
    api: Api = make_api()
    api.dataset("reviews", files={"train.csv": CSV})
    fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.75})
    r = api.client.post(EXPORT, json={"dataset_id": "64f0c0ffee64f0c0ffee64f0",
                                      "api_key": "k"}, headers=api.h())
    assert r.status_code == 404, r.text  # there is no Clowder here to export to
    assert r.json()["error"]["code"] == "clowder_not_configured"
    assert "CLOWDER_ML_CLOWDER_URL" in r.json()["error"]["hint"]
