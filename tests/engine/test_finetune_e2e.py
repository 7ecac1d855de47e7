"""The main job end to end on the real Ray head: fine-tune the real minilm-l6 through the
CLI contract, predict with it, bit-identical reruns, a killed training worker resumed to the
same weights, and bad input failing before training with file/row/column named."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_server
from tests.engine.jobs_helpers import JobsApi, worker_pid
from tests.engine.test_jobs_e2e import cli

pytestmark = pytest.mark.timeout(600)

# Small but real: a few optimizer steps of the real model on short texts.
PARAMS = {"model_name": "sentiment", "base_model": "minilm-l6", "text_column": "text",
          "label_column": "label", "epochs": 1, "max_steps": 6, "batch_size": 8,
          "max_length": 32, "checkpoint_every_steps": 2, "validation_split": 0.25,
          "learning_rate": 1e-4, "seed": 7}


def reviews_csv(n: int = 48, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    good, bad = ["great", "lovely", "superb", "moving"], ["awful", "boring", "dull", "slow"]
    lines = ["text,label"]
    for i in range(n):
        pos = i % 2 == 0
        lines.append(f"the {rng.choice(['film', 'show', 'book'])} was "
                     f"{rng.choice(good if pos else bad)} {i},{'pos' if pos else 'neg'}")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def ml(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    with engine_server(ray_head, tmp_path_factory.mktemp("ml"),
                       {"reviews": {"train.csv": reviews_csv()}}) as served:
        yield served


def finetune(api: JobsApi, **overrides: Any) -> dict[str, Any]:
    return api.submit("text-classification-finetune", datasets=("reviews",),
                      params={**PARAMS, **overrides}, resources={"cpus": 1})


def test_finetune_then_predict_through_the_cli(ml: tuple[ServerProcess, JobsApi]) -> None:
    srv, api = ml
    token = api.http.headers["Authorization"].split()[1]
    args = [f"{k}={v}" for k, v in PARAMS.items()]
    p = cli(srv, token, "jobs", "submit", "text-classification-finetune", "--dataset",
            "reviews", *[a for kv in args for a in ("--param", kv)], "--wait", "--json",
            timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    job = json.loads(p.stdout)
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["model"]["name"] == "sentiment" and result["model"]["version"] == 1
    # 48 rows, a quarter held out: 36 to train on in batches of 8 -> 5 steps in the epoch.
    assert result["labels"] == ["neg", "pos"] and result["metrics"]["global_step"] == 5
    assert 0.0 <= result["metrics"]["eval_accuracy"] <= 1.0
    # The model folder: safetensors, config with the label mapping, tokenizer, manifest, card.
    outputs = {o["path"]: o for o in api.http.get(f"/api/v1/jobs/{job['id']}/outputs").json()}
    for name in ("model.safetensors", "config.json", "tokenizer.json", "manifest.json",
                 "metrics.json", "README.md"):
        assert f"model/{name}" in outputs, sorted(outputs)
    assert not [p for p in outputs if p.endswith((".bin", ".pt", ".pkl"))]
    assert outputs["model/model.safetensors"]["sha256"] == result["digest"]
    config = json.loads(api.http.get(f"/api/v1/jobs/{job['id']}/outputs/model/config.json").text)
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    man = json.loads(api.http.get(f"/api/v1/jobs/{job['id']}/outputs/model/manifest.json").text)
    assert man["determinism"]["seed"] == 7 and man["determinism"]["threads"] == 1
    assert man["environment"]["packages"]["torch"].startswith("2.13")
    assert man["inputs"][0]["files"]  # input digests
    # Training metrics streamed to the job as it ran.
    names = {m["name"] for m in api.http.get(f"/api/v1/jobs/{job['id']}/metrics").json()}
    assert {"loss", "learning_rate"} <= names, names

    p = cli(srv, token, "jobs", "submit", "text-classification-predict", "--dataset",
            "reviews", "--param", "model=sentiment@latest", "--param", "label_column=label",
            "--wait", "--json", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    pred = json.loads(p.stdout)
    assert pred["state"] == "succeeded", pred
    res = pred["result"]
    assert res["rows"] == 48 and sum(res["label_counts"].values()) == 48
    assert len(res["confusion_matrix"]) == 2 and 0.0 <= res["accuracy"] <= 1.0
    where = res["predictions"]
    assert where["version"] == 2  # added to the dataset as a new version
    text = api.http.get(f"/api/v1/datasets/reviews/files/{where['path']}").text
    rows = text.strip().splitlines()
    assert rows[0].startswith("id,input,predicted,score,score_neg,score_pos")
    assert len(rows) == 49 and rows[1].split(",")[1] == "train.csv:1"
    meta = api.http.get(f"/api/v1/datasets/reviews/file-metadata/{where['path']}").json()
    assert meta["metadata"]["label_counts"] == res["label_counts"]


def _worker_pid(job_id: str) -> int | None:
    return worker_pid(job_id, "clowder_ml.ml.finetune_worker")


def test_reruns_are_bit_identical_and_a_killed_worker_resumes_to_the_same_weights(
        ml: tuple[ServerProcess, JobsApi]) -> None:
    srv, api = ml
    first = api.wait(finetune(api, model_name="det")["id"], timeout=400)
    second = api.wait(finetune(api, model_name="det")["id"], timeout=400)
    assert first["state"] == second["state"] == "succeeded"
    assert first["result"]["digest"] == second["result"]["digest"]
    assert first["result"]["metrics"] == {**second["result"]["metrics"],
                                          "train_samples_per_s":
                                              first["result"]["metrics"]["train_samples_per_s"]}
    # Kill the training worker after its first checkpoint: it restarts from there.
    job = finetune(api, model_name="det")
    checkpoints = srv.data_dir / "shared" / "jobs" / job["id"] / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))):
        assert time.monotonic() < deadline, api.job(job["id"])
        time.sleep(0.05)
    pid = _worker_pid(job["id"])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    done = api.wait(job["id"], timeout=400)
    assert done["state"] == "succeeded", done
    assert done["result"]["resumed_from_step"] is not None
    assert any("training worker died (signal 9)" in e["message"]
               for e in api.events(job["id"]))
    assert done["result"]["digest"] == first["result"]["digest"]
    versions = [first, second, done]
    assert [v["result"]["model"]["version"] for v in versions] == [1, 2, 3]


def test_bad_input_fails_before_training_naming_file_row_and_column(
        ml: tuple[ServerProcess, JobsApi]) -> None:
    _, api = ml
    api.dataset("broken", {"train.csv": b"text,label\nfine,pos\n\xff\xfe bad,neg\nok,neg\n"})
    api.dataset("unseen", {"train.csv": b"text,label\na,pos\nb,neg\nc,pos\nd,neg\n",
                           "val.csv": b"text,label\nhm,pos\nwhat,maybe\n"})
    api.dataset("empty", {"train.csv": b"text,label\n"})
    cases = [
        ("reviews", {"text_column": "txt"}, ["train.csv", "'txt'", "text"]),
        ("broken", {}, ["train.csv", "row 2", "UTF-8"]),
        ("unseen", {"validation_file": "val.csv"}, ["val.csv", "row 2", "maybe"]),
        ("empty", {}, ["no rows"]),
    ]
    jobs = [(api.submit("text-classification-finetune", datasets=(ds,),
                        params={**PARAMS, **params}), words) for ds, params, words in cases]
    for job, words in jobs:
        done = api.wait(job["id"], timeout=120)
        assert done["state"] == "failed", done
        assert all(w in done["reason"] for w in words), done["reason"]
        assert "Traceback" not in (done["log_tail"] or "")
        assert not any(e["message"].startswith("training ") for e in api.events(job["id"]))
    # Invalid params never become a job.
    r = api.http.post("/api/v1/jobs", json={"task": "text-classification-finetune",
                                            "inputs": [{"kind": "dataset", "ref": "reviews"}],
                                            "params": {**PARAMS, "learning_rate": -1}})
    assert r.status_code == 422 and "learning_rate" in r.json()["error"]["message"]
    r = api.http.post("/api/v1/jobs", json={"task": "text-classification-predict",
                                            "inputs": [{"kind": "dataset", "ref": "reviews"}],
                                            "params": {"model": "nope@latest"}})
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]


def test_user_config_and_preprocess_run_in_the_sandbox(ml: tuple[ServerProcess, JobsApi],
                                                       tmp_path: Path) -> None:
    _, api = ml
    marker = tmp_path / "escaped"
    api.dataset("usercode", {
        "train.csv": reviews_csv(),
        "config.py": b"CONFIG = {'learning_rate': 2e-4, 'max_steps': 2}\n",
        "prep.py": (b"def preprocess(example):\n"
                    b"    if example['text'].endswith(' 0'):\n"
                    b"        return None\n"
                    b"    return {'text': example['text'].upper()}\n"),
        # Blocked by the scan (a literal path outside the sandbox's folders)...
        "evil.py": (f"def preprocess(example):\n"
                    f"    open({str(marker)!r}, 'w').write('x')\n"
                    f"    return example\n").encode(),
        # ...and one the scan cannot see (the path is computed): the sandbox contains it.
        "sly.py": (f"def preprocess(example):\n"
                   f"    path = ''.join(map(chr, {[ord(c) for c in str(marker)]!r}))\n"
                   f"    open(path, 'w').write('x')\n"
                   f"    return example\n").encode(),
    })
    ok = api.wait(api.submit("text-classification-finetune", datasets=("usercode",), params={
        **PARAMS, "files": ["train.csv"], "params_file": "config.py",
        "preprocess_file": "prep.py", "model_name": "usercode"})["id"], timeout=400)
    assert ok["state"] == "succeeded", ok
    assert ok["result"]["metrics"]["global_step"] == 2  # max_steps came from config.py
    assert ok["result"]["train_examples"] + ok["result"]["eval_examples"] == 47  # one dropped
    events = [e["message"] for e in api.events(ok["id"])]
    assert "params from config.py" in events
    assert any(m.startswith("preprocess: 36 -> 35") or m.startswith("preprocess:")
               for m in events), events
    bad = api.wait(api.submit("text-classification-finetune", datasets=("usercode",), params={
        **PARAMS, "files": ["train.csv"], "preprocess_file": "evil.py",
        "model_name": "usercode"})["id"], timeout=400)
    assert bad["state"] == "failed", bad
    assert bad["reason"].startswith("evil.py: The code scan blocked this run"), bad["reason"]
    sly = api.wait(api.submit("text-classification-finetune", datasets=("usercode",), params={
        **PARAMS, "files": ["train.csv"], "preprocess_file": "sly.py",
        "model_name": "usercode"})["id"], timeout=400)
    assert sly["state"] == "failed", sly
    # The user's own error, located: their file and line, and the example's file and row.
    assert "sly.py, line 3" in sly["reason"] and "train.csv, row 1" in sly["reason"]
    assert not marker.exists()  # the sandbox has no view of the host's folders


def test_registry_lists_versions_and_downloads_verified_files(
        ml: tuple[ServerProcess, JobsApi], tmp_path: Path) -> None:
    # Reads the three "det" versions the rerun test above registered (same module server).
    srv, api = ml
    token = api.http.headers["Authorization"].split()[1]
    p = cli(srv, token, "models", "versions", "det", "--json")
    assert p.returncode == 0, p.stderr
    versions = json.loads(p.stdout)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert len({v["digest"] for v in versions}) == 1  # the bit-identical runs
    assert versions[-1]["aliases"] == ["latest"] and versions[0]["aliases"] == []
    assert "eval_accuracy" in versions[0]["metrics"]
    from clowder_ml.client import Client

    with Client(srv.url, token) as c:
        out = c.download_model("det@latest", tmp_path / "det")
        assert (out / "model.safetensors").is_file()
        import hashlib

        digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
        assert digest == versions[-1]["digest"]
        tasks = {t["name"]: t for t in c.list_tasks()}
    assert {"text-classification-finetune", "text-classification-predict",
            "dataset-profile"} <= tasks.keys()
    schema = tasks["text-classification-finetune"]["params_schema"]
    assert "model_name" in schema["required"] and "learning_rate" in schema["properties"]


def test_reproduce_is_identical_and_differs_when_the_thread_count_changes(
        ml: tuple[ServerProcess, JobsApi]) -> None:
    # Reproduces "det" version 1 (from the rerun test above: 1 CPU, so 1 thread).
    srv, api = ml
    token = api.http.headers["Authorization"].split()[1]
    p = cli(srv, token, "models", "alias", "det", "1", "production")
    assert p.returncode == 0, p.stdout + p.stderr
    p = cli(srv, token, "models", "reproduce", "det/1", "--wait", "--json", timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    same = json.loads(p.stdout)
    assert same["verdict"] == "identical", same
    assert same["differences"] == [] and same["reproduced_digest"] == same["original_digest"]
    # On purpose: 2 CPUs -> 2 threads, a recorded environment fact that changes float sums.
    p = cli(srv, token, "models", "reproduce", "det/1", "--cpus", "2", "--wait", "--json",
            timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    moved = json.loads(p.stdout)
    assert moved["verdict"] == "differs", moved
    kinds = {d["kind"]: d for d in moved["differences"]}
    assert kinds["weights"]["max_abs_diff"] > 0
    threads = [d for d in moved["differences"] if d.get("fact") == "determinism.threads"]
    assert threads == [{"kind": "environment", "fact": "determinism.threads",
                        "original": 1, "reproduced": 2}]
    assert "determinism.threads: 1 -> 2" in moved["why"]
    # Reproduce runs register no version; the alias still names version 1.
    p = cli(srv, token, "models", "versions", "det", "--json")
    versions = json.loads(p.stdout)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert versions[0]["aliases"] == ["production"]
    listed = api.http.get("/api/v1/models/det/versions/1/reproductions").json()
    assert [r["verdict"] for r in listed] == ["identical", "differs"]
