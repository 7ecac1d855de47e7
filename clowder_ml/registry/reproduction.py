"""Reproduce a model version: run its job again from what was recorded, then say whether the
result is bit-identical and, if not, where and why.

``start`` submits a new job with the version's recorded spec (task, params, the same pinned
dataset and model versions, the same resources unless overridden on purpose). When that job
finishes, its publish step calls ``conclude`` instead of registering a version: the verdict
compares the weights (sha256, then the largest absolute difference per tensor), the
deterministic metrics, and every environment fact both manifests recorded (package
versions, Python, platform, hardware, thread count, determinism flags).

Verdict object: ``verdict`` (``identical`` | ``differs`` | ``pending`` | ``failed``),
``differences`` (one entry per difference: ``kind`` weights | metric | environment | file),
``environment_differences`` (also when identical: facts that changed without effect),
``why`` (one sentence), and both sides' digests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clowder_ml.db.models import Job, JobOutput, ModelReproduction, ModelVersion, User
from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState
from clowder_ml.errors import Conflict, NotFound
from clowder_ml.registry import models
from clowder_ml.services import jobs
from clowder_ml.storage.blobstore import LocalBlobStore
from clowder_ml.tasks.registry import TaskRegistry

if TYPE_CHECKING:
    from clowder_ml.services.platform import Platform

# Timings, not results: they differ between any two runs.
TIMING_METRICS = frozenset({"train_samples_per_s", "seconds", "samples_per_s"})
# Manifest facts that identify the run rather than describe its environment.
_NOT_ENVIRONMENT = ("job_id", "metrics", "weights_sha256")


def start(s: Session, user: User, registry: TaskRegistry, version: ModelVersion, *,
          cpus: float | None = None, gpus: float | None = None) -> tuple[ModelReproduction, Job]:
    """Submit the version's job again (``cpus``/``gpus`` override the recorded resources,
    e.g. to show what a different thread count does)."""
    source = s.get(Job, version.job_id) if version.job_id else None
    if source is None:
        raise Conflict(f"Version {version.number} was not made by a job here "
                       f"({version.source}); there is nothing to re-run.",
                       "Only fine-tuned versions can be reproduced.")
    spec = JobSpec.model_validate(source.spec)
    resources = spec.resources.model_copy(update={
        k: v for k, v in (("cpus", cpus), ("gpus", gpus)) if v is not None})
    job = jobs.submit(s, user, spec.model_copy(update={"resources": resources}), registry)
    row = ModelReproduction(version_id=version.id, job_id=job.id)
    s.add(row)
    jobs.add_event(s, job, f"reproduces {models.ref_of(s, version)}")
    s.flush()
    return row, job


def of_job(s: Session, job: Job) -> ModelReproduction | None:
    return s.scalar(select(ModelReproduction).where(ModelReproduction.job_id == job.id))


def list_for(s: Session, version: ModelVersion) -> list[ModelReproduction]:
    return list(s.scalars(select(ModelReproduction)
                          .where(ModelReproduction.version_id == version.id)
                          .order_by(ModelReproduction.id)))


def get(s: Session, version: ModelVersion, reproduction_id: int) -> ModelReproduction:
    row = s.get(ModelReproduction, reproduction_id)
    if row is None or row.version_id != version.id:
        raise NotFound(f"Reproduction {reproduction_id} of this version not found.")
    return row


def describe(s: Session, row: ModelReproduction) -> dict[str, Any]:
    """The verdict object (``pending``/``failed`` until the job has concluded)."""
    job = s.get(Job, row.job_id)
    version = s.get(ModelVersion, row.version_id)
    base = {"id": row.id, "job_id": row.job_id, "state": job.state if job else "unknown",
            "version": version.number if version else None,
            "ref": models.ref_of(s, version) if version else None}
    if row.verdict is not None:
        return {**base, **row.verdict}
    if job is not None and job.state in (JobState.FAILED.value, JobState.CANCELLED.value):
        return {**base, "verdict": "failed", "differences": [],
                "why": f"The reproduce job {job.state}: {job.reason or 'no reason given'}"}
    return {**base, "verdict": "pending", "differences": [], "why": "The job is still running."}


# the verdict ------------------------------------------------------------------------------


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def environment_facts(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's environment and determinism facts as ``dotted.key -> value``."""
    return _flat("", {"environment": manifest.get("environment", {}),
                      "determinism": manifest.get("determinism", {})}, {})


def _environment_differences(a: Mapping[str, Any], b: Mapping[str, Any]
                             ) -> list[dict[str, Any]]:
    fa, fb = environment_facts(a), environment_facts(b)
    return [{"kind": "environment", "fact": k, "original": fa.get(k), "reproduced": fb.get(k)}
            for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _metric_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name in sorted((set(a) | set(b)) - TIMING_METRICS):
        va, vb = a.get(name), b.get(name)
        if va == vb:
            continue
        entry: dict[str, Any] = {"kind": "metric", "name": name, "original": va,
                                 "reproduced": vb}
        if isinstance(va, int | float) and isinstance(vb, int | float):
            entry["abs_diff"] = abs(float(va) - float(vb))
        out.append(entry)
    return out


def weight_differences(blobs: LocalBlobStore, original: str, reproduced: str
                       ) -> dict[str, Any]:
    """Compare two safetensors files tensor by tensor: the largest absolute difference,
    how many tensors differ, the worst ones, and tensors present on one side only."""
    from safetensors import safe_open

    worst: list[tuple[float, str]] = []
    only: list[str] = []
    with safe_open(str(blobs.path(original)), framework="pt") as fa, \
            safe_open(str(blobs.path(reproduced)), framework="pt") as fb:
        keys_a, keys_b = set(fa.keys()), set(fb.keys())
        only = sorted(keys_a ^ keys_b)
        for key in sorted(keys_a & keys_b):
            ta, tb = fa.get_tensor(key), fb.get_tensor(key)
            if ta.shape != tb.shape:
                worst.append((math.inf, key))
                continue
            diff = float((ta.double() - tb.double()).abs().max()) if ta.numel() else 0.0
            if diff > 0 or math.isnan(diff):
                worst.append((diff, key))
    worst.sort(reverse=True)
    return {"kind": "weights", "max_abs_diff": worst[0][0] if worst else 0.0,
            "tensors_differing": len(worst),
            "largest": [{"tensor": k, "max_abs_diff": d} for d, k in worst[:5]],
            "only_in_one": only}


def _manifest(blobs: LocalBlobStore, sha256: str | None) -> dict[str, Any]:
    if not sha256:
        return {}
    try:
        loaded = json.loads(blobs.path(sha256).read_bytes())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _why(verdict: str, env: list[dict[str, Any]]) -> str:
    if verdict == "identical":
        return ("Same weights (sha256) and metrics." if not env else
                f"Same weights and metrics, although {len(env)} recorded environment "
                "fact(s) differ.")
    if env:
        named = "; ".join(f"{d['fact']}: {d['original']!r} -> {d['reproduced']!r}"
                          for d in env[:5])
        return f"Recorded environment facts differ: {named}."
    return ("No recorded environment fact differs, so the run was not deterministic: "
            "report it with both manifests.")


def compute_verdict(blobs: LocalBlobStore, original: ModelVersion,
                    original_files: Mapping[str, str], reproduced_files: Mapping[str, str],
                    reproduced_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict for two model folders given as ``path -> sha256``."""
    new_digest = reproduced_files.get("model.safetensors", "")
    differences: list[dict[str, Any]] = []
    if new_digest != original.digest:
        if new_digest:
            differences.append(weight_differences(blobs, original.digest, new_digest))
        else:
            differences.append({"kind": "file", "path": "model.safetensors",
                                "original": original.digest, "reproduced": None})
    differences += _metric_differences(original.metrics, reproduced_metrics)
    env = _environment_differences(_manifest(blobs, original_files.get("manifest.json")),
                                   _manifest(blobs, reproduced_files.get("manifest.json")))
    verdict = "differs" if differences else "identical"
    if verdict == "differs":
        differences += env
    return {"verdict": verdict, "differences": differences, "environment_differences": env,
            "why": _why(verdict, env), "original_digest": original.digest,
            "reproduced_digest": new_digest or None}


def conclude(s: Session, platform: Platform, job: Job, row: ModelReproduction,
             result: dict[str, Any]) -> dict[str, Any]:
    """The reproduce job's publish step: store and return the verdict (idempotent)."""
    version = s.get(ModelVersion, row.version_id)
    if version is None:
        raise NotFound("The version being reproduced was deleted meanwhile.")
    if row.verdict is None:
        outputs = s.scalars(select(JobOutput).where(
            JobOutput.job_id == job.id, JobOutput.path.startswith(models.MODEL_PREFIX)))
        reproduced = {o.path[len(models.MODEL_PREFIX):]: o.sha256 for o in outputs}
        original = {f.path: f.sha256 for f in models.files(s, version)}
        row.verdict = compute_verdict(platform.blobs, version, original, reproduced,
                                      dict(result.get("metrics") or {}))
        s.flush()
    return {**result, "reproduction": {"id": row.id, "of": models.ref_of(s, version),
                                       **(row.verdict or {})}}
