"""Versions registered through the real publish step, without training: a job row is
submitted (inputs pinned and linked as for any job), its outputs are a small real
safetensors folder, and the publish step (``registry.publish``) registers it. Lets registry
tests (aliases, best rule, compare, lineage, export, delete) run in milliseconds."""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import save

from clowder_ml.db.models import Job, JobOutput, User
from clowder_ml.engine.spec import InputRef, JobSpec
from clowder_ml.registry import publish
from clowder_ml.services import jobs
from clowder_ml.services.platform import Platform
from tests.conftest import Api


def platform_of(api: Api) -> Platform:
    platform: Platform = api.app.state.platform
    return platform


def weights_bytes(seed: float, size: int = 16) -> bytes:
    return save({"classifier.weight": torch.full((2, size), seed),
                 "classifier.bias": torch.zeros(2)})


def manifest(threads: int = 2, torch_version: str = "2.13.0") -> dict[str, Any]:
    return {"format": 1, "environment": {"python": "3.11.7", "packages": {
        "torch": torch_version}, "hardware": {"cpu": "x", "cpu_count": 2}},
        "determinism": {"threads": threads, "deterministic_algorithms": True}}


def add_outputs(platform: Platform, job_id: str, files: dict[str, bytes]) -> None:
    with platform.db.session() as s:
        for path, data in files.items():
            info = platform.blobs.put_bytes(data)
            s.merge(JobOutput(job_id=job_id, path=path, sha256=info.sha256, size=info.size))


def submit(platform: Platform, username: str, task: str, params: dict[str, Any],
           inputs: list[InputRef]) -> str:
    with platform.db.session() as s:
        user = s.query(User).filter_by(username=username).one()
        job = jobs.submit(s, user, JobSpec(task=task, params=params, inputs=inputs),
                          platform.tasks)
        return job.id


def fake_finetune(api: Api, dataset: str, name: str, metrics: dict[str, Any], *,
                  seed: float = 0.0, params: dict[str, Any] | None = None,
                  base_model: str = "minilm-l6", user: str = "admin",
                  threads: int = 2) -> dict[str, Any]:
    """Register a version of ``name`` as a fine-tune of ``dataset`` would; returns the
    publish result (``result["model"]`` names the version)."""
    platform = platform_of(api)
    job_id = submit(platform, user, "text-classification-finetune",
                    {"model_name": name, "base_model": base_model, **(params or {})},
                    [InputRef(kind="dataset", ref=dataset)])
    add_outputs(platform, job_id, {
        "model/model.safetensors": weights_bytes(seed),
        "model/config.json": json.dumps({"model_type": "bert"}).encode(),
        "model/manifest.json": json.dumps(manifest(threads)).encode()})
    with platform.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return publish.publish(s, platform, job, {"metrics": metrics})


def fake_predict(api: Api, dataset: str, model_ref: str, user: str = "admin"
                 ) -> dict[str, Any]:
    platform = platform_of(api)
    job_id = submit(platform, user, "text-classification-predict", {"model": model_ref},
                    [InputRef(kind="dataset", ref=dataset)])
    add_outputs(platform, job_id, {"predictions.csv": b"id,predicted\n1,pos\n"})
    with platform.db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return publish.publish(s, platform, job, {"model": model_ref, "rows": 1})
