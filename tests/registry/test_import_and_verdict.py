"""Importing an external Hugging Face folder (safetensors only) and the reproduce verdict."""

from __future__ import annotations

import json
from typing import Any

from clowder_ml.db.models import ModelVersion
from clowder_ml.registry.reproduction import compute_verdict
from tests.conftest import Api
from tests.registry.registry_helpers import manifest, platform_of, weights_bytes

CONFIG = json.dumps({"model_type": "bert", "architectures": ["BertModel"]}).encode()


def _import(api: Api, path: str, name: str = "ext") -> Any:
    return api.client.post("/api/v1/models/import",
                           json={"name": name, "dataset": "hf", "path": path},
                           headers=api.h())


def test_import_registers_a_safetensors_folder_and_leaves_pickles_out(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("hf", files={
        "good/config.json": CONFIG, "good/model.safetensors": weights_bytes(1.0),
        "good/vocab.txt": b"[PAD]\n[UNK]\n", "good/pytorch_model.bin": b"\x80\x04pickle",
        "pickled/config.json": CONFIG, "pickled/pytorch_model.bin": b"\x80\x04pickle",
        "fake/config.json": CONFIG, "fake/model.safetensors": b"not really safetensors",
        "noconfig/model.safetensors": weights_bytes(1.0)})
    r = _import(api, "good")
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["skipped"] == ["pytorch_model.bin"]
    v = out["version"]
    assert (v["version"], v["source"], v["base_model"]) == (1, "import", "bert")
    files = api.client.get("/api/v1/models/ext/versions/1/files", headers=api.h()).json()
    assert sorted(f["path"] for f in files) == ["config.json", "model.safetensors", "vocab.txt"]
    lineage = api.client.get("/api/v1/models/ext/versions/1/lineage", headers=api.h()).json()
    assert lineage["parent"]["kind"] == "import" and lineage["parent"]["path"] == "good"
    assert lineage["parent"]["dataset"]["name"] == "hf"

    # The request is fine; the folder it names is not a usable model (409 unusable_content).
    r = _import(api, "pickled")
    assert r.status_code == 409 and r.json()["error"]["code"] == "unusable_content"
    err = r.json()["error"]
    assert "pickle" in err["message"] and "pytorch_model.bin" in err["message"]
    assert "safe_serialization=True" in err["hint"]  # how to convert
    r = _import(api, "fake")
    assert r.status_code == 409 and "not a safetensors file" in r.json()["error"]["message"]
    r = _import(api, "noconfig")
    assert r.status_code == 409 and "config.json" in r.json()["error"]["message"]
    r = _import(api, "missing")
    assert r.status_code == 409 and "no files" in r.json()["error"]["message"]
    # Nothing but the good import was registered.
    assert [m["versions"] for m in api.client.get("/api/v1/models",
                                                  headers=api.h()).json()] == [1]


def test_imported_version_is_accepted_as_a_base_model(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("hf", files={"m/config.json": CONFIG, "m/model.safetensors": weights_bytes(1.0)})
    assert _import(api, "m").status_code == 201
    api.dataset("reviews", files={"train.csv": b"text,label\na,pos\nb,neg\n"})
    r = api.client.post("/api/v1/jobs", json={
        "task": "text-classification-finetune", "inputs": [{"kind": "dataset",
                                                            "ref": "reviews"}],
        "params": {"model_name": "mine", "base_model": "ext@latest"}}, headers=api.h())
    assert r.status_code == 201, r.text
    pinned = [i for i in r.json()["spec"]["inputs"] if i["kind"] == "model"]
    assert pinned and pinned[0]["version"] == 1


def _version(api: Api, digest: str, metrics: dict[str, Any]) -> ModelVersion:
    return ModelVersion(number=1, digest=digest, metrics=metrics)


def test_verdict_identical_differs_and_why(sqlite_api: Api) -> None:
    blobs = platform_of(sqlite_api).blobs
    w1 = blobs.put_bytes(weights_bytes(1.0)).sha256
    w2 = blobs.put_bytes(weights_bytes(1.25)).sha256
    m2 = blobs.put_bytes(json.dumps(manifest(threads=2)).encode()).sha256
    m1 = blobs.put_bytes(json.dumps(manifest(threads=1)).encode()).sha256
    metrics = {"eval_accuracy": 0.75, "train_samples_per_s": 10.0}
    original = _version(sqlite_api, w1, metrics)

    same = compute_verdict(blobs, original, {"model.safetensors": w1, "manifest.json": m2},
                           {"model.safetensors": w1, "manifest.json": m2},
                           {**metrics, "train_samples_per_s": 12.0})  # timings don't count
    assert same["verdict"] == "identical" and same["differences"] == []

    moved = compute_verdict(blobs, original, {"model.safetensors": w1, "manifest.json": m2},
                            {"model.safetensors": w2, "manifest.json": m1},
                            {"eval_accuracy": 0.5})
    assert moved["verdict"] == "differs"
    kinds = {d["kind"]: d for d in moved["differences"]}
    assert kinds["weights"]["max_abs_diff"] == 0.25
    assert kinds["weights"]["tensors_differing"] == 1
    assert kinds["weights"]["largest"][0]["tensor"] == "classifier.weight"
    assert kinds["metric"] == {"kind": "metric", "name": "eval_accuracy", "original": 0.75,
                               "reproduced": 0.5, "abs_diff": 0.25}
    assert kinds["environment"]["fact"] == "determinism.threads"
    assert "determinism.threads: 2 -> 1" in moved["why"]

    unexplained = compute_verdict(blobs, original,
                                  {"model.safetensors": w1, "manifest.json": m2},
                                  {"model.safetensors": w2, "manifest.json": m2}, metrics)
    assert unexplained["verdict"] == "differs"
    assert "not deterministic" in unexplained["why"]
