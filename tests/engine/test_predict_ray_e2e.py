"""Prediction across workers on the real Ray head: a predict job with ``workers=2`` runs Ray
Data ``map_batches`` over two model actors and writes the same predictions.csv, row by row,
as the one-worker in-process path, for text and for images. Two workers of one CPU each
take the whole 2-CPU head (the runner reserves none), so these jobs also show that the
actors' CPU booking cannot deadlock."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_server
from tests.engine.jobs_helpers import JobsApi
from tests.engine.test_finetune_e2e import reviews_csv
from tests.engine.test_image_e2e import pictures

pytestmark = pytest.mark.timeout(600)

# The smallest real fine-tunes: the predictions only have to be the same on both paths.
TEXT = {"model_name": "tiny", "base_model": "minilm-l6", "epochs": 1, "max_steps": 2,
        "batch_size": 8, "max_length": 32, "validation_split": 0.25, "seed": 7}
IMAGE = {"model_name": "tiny-cnn", "base_model": "small-cnn", "image_size": 16, "epochs": 1,
         "max_steps": 2, "batch_size": 8, "validation_split": 0.25, "seed": 3}


@pytest.fixture(scope="module")
def served(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    with engine_server(ray_head, tmp_path_factory.mktemp("predict-ray")) as served_:
        yield served_


@pytest.fixture(scope="module")
def text_model(served: tuple[ServerProcess, JobsApi]) -> str:
    _, api = served
    api.dataset("reviews", {"train.csv": reviews_csv(48)})
    job = api.wait(api.submit("text-classification-finetune", datasets=("reviews",),
                              params=TEXT, resources={"cpus": 1})["id"], timeout=300)
    assert job["state"] == "succeeded", job
    return "tiny@latest"


@pytest.fixture(scope="module")
def image_model(served: tuple[ServerProcess, JobsApi]) -> str:
    _, api = served
    api.dataset("pictures", pictures(6))
    job = api.wait(api.submit("image-classification-finetune", datasets=("pictures",),
                              params=IMAGE, resources={"cpus": 1})["id"], timeout=300)
    assert job["state"] == "succeeded", job
    return "tiny-cnn@latest"


def _predict(api: JobsApi, task: str, dataset: str, cpus: float, **params: Any
             ) -> tuple[dict[str, Any], list[list[str]]]:
    job = api.wait(api.submit(task, datasets=(dataset,), params=params,
                              resources={"cpus": cpus})["id"], timeout=300)
    assert job["state"] == "succeeded", job
    text = api.http.get(f"/api/v1/jobs/{job['id']}/outputs/predictions.csv").text
    return job, list(csv.reader(io.StringIO(text)))


def _same_rows(one: list[list[str]], two: list[list[str]]) -> None:
    assert one[0] == two[0] and len(one) == len(two)
    for a, b in zip(one[1:], two[1:], strict=True):
        assert a[:3] == b[:3], (a, b)  # id, input, predicted
        # Scores are written with six decimals; the paths batch rows differently, so the
        # last digit may round the other way.
        diffs = [abs(float(x) - float(y)) for x, y in zip(a[3:], b[3:], strict=True)]
        assert max(diffs) <= 2e-6, (a, b)


def _ray_data_events(api: JobsApi, job_id: str) -> list[str]:
    return [e["message"] for e in api.events(job_id) if "Ray Data" in e["message"]]


def test_text_predict_on_two_workers_matches_one_worker_row_by_row(
        served: tuple[ServerProcess, JobsApi], text_model: str) -> None:
    _, api = served
    params = {"model": text_model, "label_column": "label", "files": ["train.csv"],
              "batch_size": 4}  # blocks of 32 of the 48 rows: both actors get one
    one, rows_one = _predict(api, "text-classification-predict", "reviews", 1, **params)
    two, rows_two = _predict(api, "text-classification-predict", "reviews", 1, workers=2,
                             **params)
    assert len(rows_one) == 49 and rows_one[1][:2] == ["train.csv:1", "train.csv:1"]
    assert [r[1] for r in rows_one[1:]] == [f"train.csv:{i}" for i in range(1, 49)]
    _same_rows(rows_one, rows_two)
    for key in ("rows", "labels", "label_counts", "accuracy", "confusion_matrix",
                "unknown_true_labels"):
        assert one["result"][key] == two["result"][key], key
    assert one["result"]["workers"] == 1 and two["result"]["workers"] == 2
    assert two["spec"]["resources"]["workers"] == 2  # the param set the job's workers
    assert _ray_data_events(api, one["id"]) == []
    assert _ray_data_events(api, two["id"]) == [
        "predicting with Ray Data map_batches on 2 workers (1 CPU booked, 1 thread(s) each)"]


def test_image_predict_on_two_workers_matches_one_worker_row_by_row(
        served: tuple[ServerProcess, JobsApi], image_model: str) -> None:
    _, api = served
    params = {"model": image_model, "batch_size": 1}  # blocks of 8: both actors get images
    one, rows_one = _predict(api, "image-classification-predict", "pictures", 1, **params)
    two, rows_two = _predict(api, "image-classification-predict", "pictures", 1, workers=2,
                             **params)
    assert len(rows_one) == 13
    _same_rows(rows_one, rows_two)
    assert one["result"]["accuracy"] == two["result"]["accuracy"]
    assert one["result"]["confusion_matrix"] == two["result"]["confusion_matrix"]
    assert _ray_data_events(api, two["id"]) == [
        "predicting with Ray Data map_batches on 2 workers (1 CPU booked, 1 thread(s) each)"]


def test_an_image_that_does_not_decode_fails_two_workers_naming_the_file(
        served: tuple[ServerProcess, JobsApi], image_model: str) -> None:
    _, api = served
    api.dataset("broken-pictures", {**pictures(2), "red/broken.png": b"\x89PNG truncated"})
    done = api.wait(api.submit("image-classification-predict", datasets=("broken-pictures",),
                               params={"model": image_model, "workers": 2},
                               resources={"cpus": 1})["id"], timeout=300)
    assert done["state"] == "failed", done
    # The one-worker path's message, raised by the runner from the actor's report.
    assert "red/broken.png" in done["reason"] and "cannot be decoded" in done["reason"]
    assert "Traceback" not in (done["log_tail"] or "")
