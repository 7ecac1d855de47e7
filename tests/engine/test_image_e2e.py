"""Image classification end to end on the real Ray head: train small-cnn on generated class
folders, register the model, predict into the dataset with accuracy; a killed training
worker resumes from its checkpoint to the same weights; a bad image fails the job before
training, naming the file."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_server
from tests.engine.jobs_helpers import JobsApi, worker_pid

pytestmark = pytest.mark.timeout(300)

PARAMS = {"model_name": "colors", "base_model": "small-cnn", "image_size": 16, "epochs": 2,
          "max_steps": 4, "batch_size": 8, "learning_rate": 1e-2, "validation_split": 0.25,
          "checkpoint_every_steps": 2, "augment": True, "seed": 3}


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "PNG")
    return buf.getvalue()


def pictures(n: int = 12) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        files[f"red/{i}.png"] = png((200 + i, 20, 20))
        files[f"blue/{i}.png"] = png((20, 20, 200 + i))
    return files


@pytest.fixture(scope="module")
def images(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    with engine_server(ray_head, tmp_path_factory.mktemp("images"),
                       {"pictures": pictures()}) as served:
        yield served


def finetune(api: JobsApi, dataset: str, **overrides: Any) -> dict[str, Any]:
    return api.submit("image-classification-finetune", datasets=(dataset,),
                      params={**PARAMS, **overrides}, resources={"cpus": 1})


def test_small_cnn_finetune_then_predict(images: tuple[ServerProcess, JobsApi]) -> None:
    _, api = images
    job = api.wait(finetune(api, "pictures")["id"], timeout=200)
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["model"]["name"] == "colors" and result["model"]["version"] == 1
    assert result["labels"] == ["blue", "red"] and result["metrics"]["global_step"] == 4
    assert result["train_examples"] == 18 and result["eval_examples"] == 6
    outputs = {o["path"]: o for o in api.http.get(f"/api/v1/jobs/{job['id']}/outputs").json()}
    for name in ("model.safetensors", "config.json", "preprocessor_config.json",
                 "manifest.json", "metrics.json", "clowder_ml.json", "README.md"):
        assert f"model/{name}" in outputs, sorted(outputs)
    assert outputs["model/model.safetensors"]["sha256"] == result["digest"]

    pred = api.wait(api.submit("image-classification-predict", datasets=("pictures",),
                               params={"model": "colors@latest"})["id"], timeout=200)
    assert pred["state"] == "succeeded", pred
    res = pred["result"]
    assert res["rows"] == 24 and sum(res["label_counts"].values()) == 24
    assert 0.0 <= res["accuracy"] <= 1.0 and len(res["confusion_matrix"]) == 2
    where = res["predictions"]
    # Added to the dataset as a new version (each of the 24 uploads made one).
    assert where["version"] == len(pictures()) + 1
    text = api.http.get(f"/api/v1/datasets/pictures/files/{where['path']}").text
    rows = text.strip().splitlines()
    assert rows[0] == "id,input,predicted,score,score_blue,score_red"
    assert len(rows) == 25 and rows[1].startswith("blue/0.png,blue/0.png,")
    meta = api.http.get(f"/api/v1/datasets/pictures/file-metadata/{where['path']}").json()
    assert meta["metadata"]["accuracy"] == res["accuracy"]


# Long enough to kill mid-way (64x64 images: ~20 ms a step on one thread, so ~3 s of
# training), short enough for a test; a checkpoint every 10 steps.
RESUME_PARAMS = {"model_name": "resumed", "base_model": "small-cnn", "image_size": 64,
                 "epochs": 100, "max_steps": 150,
                 "checkpoint_every_steps": 10}


def _worker_pid(job_id: str) -> int | None:
    return worker_pid(job_id, "clowder_ml.ml.image_worker")


def test_a_killed_image_worker_resumes_to_the_same_weights(
        images: tuple[ServerProcess, JobsApi]) -> None:
    srv, api = images
    first = api.wait(finetune(api, "pictures", **RESUME_PARAMS)["id"], timeout=200)
    assert first["state"] == "succeeded", first
    assert first["result"]["metrics"]["global_step"] == 150
    assert first["result"]["resumed_from_step"] is None
    # Kill the training worker right after its first checkpoint: it restarts from there.
    job = finetune(api, "pictures", **RESUME_PARAMS)
    checkpoints = srv.data_dir / "shared" / "jobs" / job["id"] / "checkpoints"
    deadline = time.monotonic() + 150
    while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))):
        assert time.monotonic() < deadline, api.job(job["id"])
        time.sleep(0.01)
    pid = _worker_pid(job["id"])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    done = api.wait(job["id"], timeout=200)
    assert done["state"] == "succeeded", done
    resumed = done["result"]["resumed_from_step"]
    print(f"worker killed; resumed from step {resumed} of 150")
    assert resumed is not None and 10 <= resumed < 150, resumed  # mid-way, not at the end
    assert any("training worker died (signal 9); resuming from the last checkpoint"
               in e["message"] for e in api.events(job["id"]))
    assert done["result"]["digest"] == first["result"]["digest"]
    assert done["result"]["metrics"]["global_step"] == 150
    same = {k: v for k, v in done["result"]["metrics"].items() if k != "train_samples_per_s"}
    assert same == {k: v for k, v in first["result"]["metrics"].items()
                    if k != "train_samples_per_s"}
    assert [j["result"]["model"]["version"] for j in (first, done)] == [1, 2]


def test_bad_image_fails_before_training_naming_the_file(
        images: tuple[ServerProcess, JobsApi]) -> None:
    _, api = images
    api.dataset("broken-pictures", {**pictures(3), "red/broken.png": b"\x89PNG truncated"})
    done = api.wait(finetune(api, "broken-pictures", model_name="broken")["id"], timeout=120)
    assert done["state"] == "failed", done
    assert "red/broken.png" in done["reason"] and "cannot be decoded" in done["reason"]
    assert "Traceback" not in (done["log_tail"] or "")
    assert not any(e["message"].startswith("training ") for e in api.events(done["id"]))


# epochs=auto on small-cnn: the ceiling from 18 training images in batches of 8 is 60 epochs
# of 3 steps; patience 5; a checkpoint every 3 steps (each epoch's end).
AUTO_PARAMS = {"model_name": "auto", "base_model": "small-cnn", "image_size": 16,
               "batch_size": 8, "learning_rate": 1e-2, "validation_split": 0.25,
               "checkpoint_every_steps": 3, "seed": 3}


@pytest.mark.timeout(600)  # two runs of up to 180 steps each, on a busy machine
def test_auto_epochs_keep_the_best_epoch_and_a_killed_worker_resumes_to_it(
        images: tuple[ServerProcess, JobsApi]) -> None:
    srv, api = images
    submit = api.submit("image-classification-finetune", datasets=("pictures",),
                        params=AUTO_PARAMS, resources={"cpus": 1})
    first = api.wait(submit["id"], timeout=200)
    assert first["state"] == "succeeded", first
    training = first["result"]["training"]
    assert training["reason"] in ("early_stopping", "ceiling"), training
    assert f"best epoch {training['best_epoch']} of {training['epochs']}" in training["message"]
    assert first["result"]["metrics"]["eval_accuracy"] == training["best"]
    # The event says why it stopped and what the checkpoints (one every 3 steps) cost.
    written = first["result"]["checkpoints"]["written"]
    assert written == first["result"]["metrics"]["global_step"] // 3
    assert any(e["message"].startswith(f"training stopped: {training['message']} "
                                       f"({written} checkpoint(s), ")
               for e in api.events(first["id"]))
    card = api.http.get(f"/api/v1/jobs/{first['id']}/outputs/model/README.md").text
    assert "epochs=auto" in card and f"Stopped: {training['message']}" in card
    # Killed after its first checkpoint (and first kept best): resumes to the same end.
    job = api.submit("image-classification-finetune", datasets=("pictures",),
                     params=AUTO_PARAMS, resources={"cpus": 1})
    checkpoints = srv.data_dir / "shared" / "jobs" / job["id"] / "checkpoints"
    deadline = time.monotonic() + 150
    while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
               and (checkpoints / "best.safetensors").is_file()):
        assert time.monotonic() < deadline, api.job(job["id"])
        time.sleep(0.01)
    pid = _worker_pid(job["id"])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    done = api.wait(job["id"], timeout=200)
    assert done["state"] == "succeeded", done
    assert done["result"]["resumed_from_step"] is not None
    assert done["result"]["digest"] == first["result"]["digest"]
    assert done["result"]["training"] == training
