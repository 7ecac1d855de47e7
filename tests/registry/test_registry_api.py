"""The model registry through the API: aliases with history, the best rule, compare,
lineage both ways, delete guarded by aliases, sharing, download and export."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from tests.conftest import Api
from tests.registry.registry_helpers import fake_finetune, fake_predict, weights_bytes

CSV = b"text,label\ngood,pos\nbad,neg\n"
M = "/api/v1/models/sentiment"


def _setup(api: Api, metrics: list[float]) -> None:
    api.dataset("reviews", files={"train.csv": CSV})
    for i, acc in enumerate(metrics):
        fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": acc, "eval_loss": 1 - acc},
                      seed=float(i), params={"learning_rate": 1e-5 * (i + 1)})


def _aliases(api: Api, user: str = "admin") -> dict[str, Any]:
    r = api.client.get(f"{M}/aliases", headers=api.h(user))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_versions_list_aliases_and_refs_resolve(api: Api) -> None:
    _setup(api, [0.7, 0.8])
    r = api.client.put(f"{M}/aliases/production", json={"version": 1, "reason": "first"},
                       headers=api.h())
    assert r.status_code == 200, r.text
    vs = api.client.get(f"{M}/versions", headers=api.h()).json()
    assert [(v["version"], v["aliases"]) for v in vs] == [(1, ["production"]), (2, ["latest"])]
    assert all(len(v["digest"]) == 64 and v["metrics"]["eval_accuracy"] for v in vs)
    assert vs[0]["source"] == "job" and vs[0]["job_id"]
    for ref, number in (("sentiment@production", 1), ("sentiment", 2), ("sentiment/1", 1),
                        ("sentiment@latest", 2), ("admin:sentiment@production", 1)):
        got = api.client.get(f"/api/v1/model-refs/{ref}", headers=api.h()).json()
        assert got["version"] == number, ref
    r = api.client.get("/api/v1/model-refs/sentiment@staging", headers=api.h())
    assert r.status_code == 404 and "production" in r.json()["error"]["hint"]


def test_alias_moves_are_kept_as_history_and_latest_cannot_be_set(api: Api) -> None:
    _setup(api, [0.7, 0.8, 0.9])
    for v in (1, 3, 2):
        assert api.client.put(f"{M}/aliases/production", json={"version": v},
                              headers=api.h()).status_code == 200
    out = _aliases(api)
    assert out["aliases"] == [{"alias": "production", "version": 2}]
    moves = [(e["from_version"], e["to_version"], e["by"]) for e in out["history"]
             if e["alias"] == "production"]
    assert moves == [(None, 1, "admin"), (1, 3, "admin"), (3, 2, "admin")]
    r = api.client.put(f"{M}/aliases/latest", json={"version": 1}, headers=api.h())
    assert r.status_code == 422
    r = api.client.put(f"{M}/aliases/Bad Name", json={"version": 1}, headers=api.h())
    assert r.status_code in (404, 422)
    r = api.client.put(f"{M}/aliases/staging", json={"version": 9}, headers=api.h())
    assert r.status_code == 404
    assert api.client.delete(f"{M}/aliases/production", headers=api.h()).status_code == 200
    assert _aliases(api)["history"][-1]["to_version"] is None


def test_best_rule_follows_new_versions(api: Api) -> None:
    _setup(api, [0.7, 0.9])
    r = api.client.patch(M, json={"best_metric": "eval_accuracy", "best_mode": "max"},
                         headers=api.h())
    assert r.status_code == 200, r.text
    assert r.json()["aliases"]["best"] == 2
    fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.95}, seed=5.0)  # v3
    assert _aliases(api)["aliases"] == [{"alias": "best", "version": 3}]
    fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.95}, seed=6.0)  # tie
    fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.5}, seed=7.0)  # worse
    hist = [(e["from_version"], e["to_version"], e["reason"]) for e in _aliases(api)["history"]]
    assert hist == [(None, 2, "best rule: max eval_accuracy"),
                    (2, 3, "best rule: max eval_accuracy")]
    assert api.client.get("/api/v1/model-refs/sentiment@best",
                          headers=api.h()).json()["version"] == 3
    # min mode on another metric moves it; 'best' cannot be set by hand under a rule.
    r = api.client.patch(M, json={"best_metric": "eval_loss", "best_mode": "min"},
                         headers=api.h())
    # Only v1 (0.3) and v2 (0.1) recorded eval_loss: versions without it are no candidates.
    assert r.json()["aliases"]["best"] == 2
    r = api.client.put(f"{M}/aliases/best", json={"version": 1}, headers=api.h())
    assert r.status_code == 409 and "rule" in r.json()["error"]["message"]
    r = api.client.patch(M, json={"best_metric": "eval_loss"}, headers=api.h())
    assert r.status_code == 422  # a rule needs its mode


def test_compare_shows_differing_params_and_metrics(api: Api) -> None:
    _setup(api, [0.7, 0.8])
    r = api.client.get(f"{M}/compare", params={"versions": "1,2"}, headers=api.h())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["versions"] == [1, 2]
    assert out["params_differing"] == {"learning_rate": [1e-5, 2e-5]}
    assert "model_name" in out["params_same"]
    assert out["metrics"]["eval_accuracy"] == [0.7, 0.8]
    assert out["data"] == [["reviews@1"], ["reviews@1"]]
    assert out["base_model"] == ["minilm-l6", "minilm-l6"]
    assert api.client.get(f"{M}/compare", params={"versions": "1"},
                          headers=api.h()).status_code == 422
    assert api.client.get(f"{M}/compare", params={"versions": "1,7"},
                          headers=api.h()).status_code == 404


def test_lineage_both_ways(api: Api) -> None:
    _setup(api, [0.7])
    pred = fake_predict(api, "reviews", "sentiment/1")
    out_version = pred["predictions"]["version"]
    # Fine-tune from the registered version: its parent.
    child = fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.75}, seed=9.0,
                          base_model="sentiment/1")
    assert child["model"]["version"] == 2
    r = api.client.get(f"{M}/versions/1/lineage", headers=api.h())
    assert r.status_code == 200, r.text
    lin = r.json()
    assert lin["parent"] == {"kind": "builtin", "ref": "minilm-l6"}
    made = lin["produced_by"]
    assert made["job"]["task"] == "text-classification-finetune"
    assert made["inputs"] == [{"kind": "dataset", "id": made["inputs"][0]["id"],
                               "name": "reviews", "owner": "admin", "version": 1}]
    used = {u["job"]["task"]: u for u in lin["used_by"]}
    assert used["text-classification-predict"]["outputs"][0]["version"] == out_version
    assert used["text-classification-finetune"]["outputs"][0]["ref"] == "admin:sentiment/2"
    v2 = api.client.get(f"{M}/versions/2", headers=api.h()).json()
    assert v2["parent"] == "admin:sentiment/1"
    # From the data side: v1 of the dataset fed both fine-tunes and the predict; the
    # predictions version was written by the predict job from the model.
    d1 = api.client.get("/api/v1/datasets/reviews/versions/1/lineage", headers=api.h()).json()
    assert {u["job"]["task"] for u in d1["used_by"]} == {"text-classification-finetune",
                                                          "text-classification-predict"}
    d2 = api.client.get(f"/api/v1/datasets/reviews/versions/{out_version}/lineage",
                        headers=api.h()).json()
    assert d2["produced_by"]["job"]["task"] == "text-classification-predict"
    assert {n.get("ref") for n in d2["produced_by"]["inputs"]} >= {"admin:sentiment/1"}


def test_delete_refused_while_aliased_unless_forced(api: Api) -> None:
    _setup(api, [0.7, 0.8])
    api.client.put(f"{M}/aliases/production", json={"version": 1}, headers=api.h())
    r = api.client.delete(f"{M}/versions/1", headers=api.h())
    assert r.status_code == 409 and "production" in r.json()["error"]["message"]
    assert api.client.get(f"{M}/versions/1", headers=api.h()).status_code == 200
    r = api.client.delete(f"{M}/versions/1", params={"force": "true"}, headers=api.h())
    assert r.status_code == 204
    assert api.client.get(f"{M}/versions/1", headers=api.h()).status_code == 404
    hist = _aliases(api)["history"]
    assert hist[-1]["to_version"] is None and "deleted" in hist[-1]["reason"]
    # An unaliased version goes at once; the next version number is never reused.
    assert api.client.delete(f"{M}/versions/2", headers=api.h()).status_code == 204
    fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.1}, seed=3.0)
    assert [v["version"] for v in api.client.get(f"{M}/versions",
                                                 headers=api.h()).json()] == [1]


def test_sharing_as_for_datasets(api: Api) -> None:
    _setup(api, [0.7])
    bob = api.user("bob")
    for method, path in (("GET", M), ("GET", f"{M}/versions"), ("GET", f"{M}/versions/1"),
                         ("GET", "/api/v1/models/admin:sentiment/versions/1/lineage")):
        assert api.client.request(method, path.replace("sentiment", "admin:sentiment")
                                  if "admin:" not in path else path,
                                  headers=bob).status_code == 404, path
    r = api.client.put(f"{M}/shares/bob", json={"permission": "read"}, headers=api.h())
    assert r.status_code == 204, r.text
    shared = "/api/v1/models/admin:sentiment"
    assert api.client.get(f"{shared}/versions/1", headers=bob).status_code == 200
    assert [m["name"] for m in api.client.get("/api/v1/models", headers=bob).json()] == \
        ["sentiment"]
    r = api.client.put(f"{shared}/aliases/prod", json={"version": 1}, headers=bob)
    assert r.status_code == 403
    api.client.put(f"{M}/shares/bob", json={"permission": "write"}, headers=api.h())
    assert api.client.put(f"{shared}/aliases/prod", json={"version": 1},
                          headers=bob).status_code == 200


def test_download_zip_and_export_into_a_dataset(api: Api) -> None:
    _setup(api, [0.7])
    r = api.client.get(f"{M}/versions/1/archive", headers=api.h())
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert sorted(zf.namelist()) == ["config.json", "manifest.json", "model.safetensors"]
        assert zf.read("model.safetensors") == weights_bytes(0.0)
    api.dataset("exports")
    r = api.client.post(f"{M}/versions/1/export", json={"dataset": "exports"},
                        headers=api.h())
    assert r.status_code == 201, r.text
    assert r.json()["path"] == "models/sentiment-v1"
    files = api.client.get("/api/v1/datasets/exports/files", headers=api.h()).json()
    paths = sorted(f["path"] for f in (files["files"] if isinstance(files, dict) else files))
    assert paths == ["models/sentiment-v1/config.json", "models/sentiment-v1/manifest.json",
                     "models/sentiment-v1/model.safetensors"]
    meta = api.client.get("/api/v1/datasets/exports/file-metadata/models/sentiment-v1/"
                          "model.safetensors", headers=api.h()).json()
    meta = meta.get("metadata", meta)
    assert meta["model"] == "admin:sentiment/1" and meta["metrics"]["eval_accuracy"] == 0.7
    # Export needs write access to the dataset.
    bob = api.user("bob")
    api.client.put(f"{M}/shares/bob", json={"permission": "read"}, headers=api.h())
    api.dataset("bobs", user="bob")
    r = api.client.post("/api/v1/models/admin:sentiment/versions/1/export",
                        json={"dataset": "exports"}, headers=bob)
    assert r.status_code == 404  # bob cannot see admin's dataset
