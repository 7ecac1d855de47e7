"""Data-parallel fine-tuning: the resources rule for ``workers`` (unit), and a
``text-classification-finetune`` on 2 Ray Train workers of 1 CPU each on the 2-CPU test head,
through the CLI, the real API and a real Ray head (end to end).

The end-to-end run only fits because a job with ``workers > 1`` reserves no CPUs for its
entrypoint: were the runner to hold 1 CPU, the second worker would wait forever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from clowder_ml.engine.feasibility import shortfalls
from clowder_ml.engine.ray_backend import ClusterResources
from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from clowder_ml.engine.spec import JobSpec
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_server
from tests.engine.jobs_helpers import JobsApi
from tests.engine.test_finetune_e2e import reviews_csv
from tests.engine.test_jobs_e2e import cli

TASK = "text-classification-finetune"
# A few optimizer steps of the real minilm-l6 on short texts: 18 training rows, batches of 4.
PARAMS = {"model_name": "dp", "base_model": "minilm-l6", "epochs": 1, "max_steps": 4,
          "batch_size": 4, "max_length": 16, "checkpoint_every_steps": 2,
          "validation_split": 0.25, "learning_rate": 1e-4, "seed": 11,
          "launcher": "ray-train"}


def spec(**resources: object) -> JobSpec:
    return JobSpec.model_validate({"task": TASK, "resources": resources})


# --------------------------------------------------------------------------- the rule (unit)


def test_workers_reserve_the_cpus_and_the_entrypoint_none() -> None:
    one = spec(cpus=2, gpus=1, memory_bytes="1G")
    assert one.entrypoint_resources() == {"entrypoint_num_cpus": 2.0,
                                          "entrypoint_num_gpus": 1.0,
                                          "entrypoint_memory": 1 << 30}
    two = spec(cpus=2, gpus=1, memory_bytes="1G", workers=2)
    assert two.entrypoint_resources() == {"entrypoint_num_cpus": 0.0,
                                          "entrypoint_memory": 1 << 30}
    assert (two.resources.total_cpus(), two.resources.total_gpus()) == (4.0, 2.0)


def test_feasibility_counts_every_worker() -> None:
    laptop = ClusterResources(cpus=2, gpus=0, memory_bytes=8 << 30, nodes=1)
    assert shortfalls(spec(cpus=1, workers=2), laptop) == []
    assert shortfalls(spec(cpus=2, workers=2), laptop) == [
        "needs 4 CPUs (2 workers x 2); cluster has 2"]
    assert shortfalls(spec(cpus=2), laptop) == []


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def ml(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    with engine_server(ray_head, tmp_path_factory.mktemp("dp"),
                       {"reviews": {"train.csv": reviews_csv(24)}}) as served:
        yield served


def test_submission_makes_workers_agree(ml: tuple[ServerProcess, JobsApi]) -> None:
    _, api = ml
    body = {"datasets": ("reviews",), "expect": 422}
    # The param and the resources disagree.
    r = api.submit(TASK, params={**PARAMS, "workers": 3}, resources={"workers": 2}, **body)
    assert "disagree" in r["error"]["message"]
    # One process cannot be two workers.
    r = api.submit(TASK, params={**PARAMS, "launcher": "local"}, resources={"workers": 2},
                   **body)
    assert "local launcher" in r["error"]["message"]
    # A task that does not train on workers refuses them.
    r = api.submit("dataset-profile", params={}, resources={"workers": 2}, **body)
    assert "one process" in r["error"]["message"]
    # More than the cluster has: fails at once, naming the per-worker arithmetic.
    job = api.submit(TASK, datasets=("reviews",), params={**PARAMS, "workers": 2},
                     resources={"cpus": 2})
    assert job["spec"]["resources"]["workers"] == 2  # the param set the resources
    done = api.wait(job["id"], timeout=60)
    assert done["state"] == "failed"
    assert "needs 4 CPUs (2 workers x 2); cluster has 2" in done["reason"], done


def test_two_ray_train_workers_fine_tune_and_register_a_version(
        ml: tuple[ServerProcess, JobsApi]) -> None:
    srv, api = ml
    token = api.http.headers["Authorization"].split()[1]
    args = [a for k, v in PARAMS.items() for a in ("--param", f"{k}={v}")]
    p = cli(srv, token, "jobs", "submit", TASK, "--dataset", "reviews", *args,
            "--workers", "2", "--cpus", "1", "--wait", "--json", timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    job = json.loads(p.stdout)
    assert job["state"] == "succeeded", job
    assert job["spec"]["resources"]["workers"] == 2 and job["spec"]["params"]["workers"] == 2
    result = job["result"]
    assert result["launcher"] == "ray-train" and result["workers"] == 2
    assert result["model"]["name"] == "dp" and result["model"]["version"] == 1
    assert result["metrics"]["global_step"] == 4
    assert 0.0 <= result["metrics"]["eval_accuracy"] <= 1.0
    events = [e["message"] for e in api.events(job["id"])]
    assert any("(ray-train launcher, 2 worker(s)" in m for m in events), events
    # Rank 0 streamed the training metrics, once per step (not once per worker).
    points = [m for m in api.http.get(f"/api/v1/jobs/{job['id']}/metrics").json()
              if m["name"] == "loss"]
    assert sorted(m["step"] for m in points) == [1, 2, 3, 4], points
    versions = api.http.get("/api/v1/models/dp/versions").json()
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["digest"] == result["digest"]
