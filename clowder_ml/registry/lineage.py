"""Lineage both ways: dataset version -> job -> model version -> predictions dataset version,
and a model version's parent (the registered version it was fine-tuned from, or the built-in
base model).

Built on ``job_links`` (what each job read and produced, written when the job is created and
when it publishes), so each hop is an indexed query. Only what the asking user may see is
listed: their own jobs (all for an admin), models and datasets they can read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from clowder_ml.db.models import Dataset, Job, JobLink, ModelVersion, User
from clowder_ml.registry import models
from clowder_ml.services import datasets


def link_inputs(s: Session, job: Job) -> None:
    """Record what a new job reads (its pinned dataset and model inputs)."""
    seen: set[tuple[str, str, int]] = set()
    for item in job.spec.get("inputs", []):
        if item.get("kind") not in ("dataset", "file", "model") or not item.get("version"):
            continue
        kind = "model" if item["kind"] == "model" else "dataset"
        ref = str(models.model_version_id(item["ref"])) if kind == "model" else str(item["ref"])
        key = (kind, ref, int(item["version"]))
        if key not in seen:
            seen.add(key)
            s.add(JobLink(job_id=job.id, direction="in", kind=kind, ref=ref, number=key[2]))


def link_output_dataset(s: Session, job: Job, dataset_id: str, number: int) -> None:
    """Record a dataset version a job wrote (predictions); idempotent."""
    if s.get(JobLink, (job.id, "out", "dataset", dataset_id, number)) is None:
        s.add(JobLink(job_id=job.id, direction="out", kind="dataset", ref=dataset_id,
                      number=number))


def _visible_job(user: User, job: Job | None) -> bool:
    return job is not None and (user.is_admin or job.owner_id == user.id)


def _dataset_node(s: Session, user: User, ref: str, number: int) -> dict[str, Any] | None:
    ds = s.get(Dataset, ref)
    if ds is None or datasets.permission_of(s, user, ds) is None:
        return None
    owner = s.get(User, ds.owner_id)
    return {"kind": "dataset", "id": ds.id, "name": ds.name,
            "owner": owner.username if owner else None, "version": number}


def _model_node(s: Session, user: User, version_id: int) -> dict[str, Any] | None:
    v = s.get(ModelVersion, version_id)
    if v is None:
        return None
    model = models.model_of(s, v)
    if models.permission_of(s, user, model) is None:
        return None
    return {"kind": "model", "ref": models.ref_of(s, v), "name": model.name,
            "version": v.number, "digest": v.digest}


def _node(s: Session, user: User, link: JobLink) -> dict[str, Any] | None:
    if link.kind == "model":
        return _model_node(s, user, int(link.ref))
    return _dataset_node(s, user, link.ref, link.number)


def _job_entry(s: Session, user: User, job: Job) -> dict[str, Any]:
    links = list(s.scalars(select(JobLink).where(JobLink.job_id == job.id)))
    return {
        "job": {"id": job.id, "task": job.task, "state": job.state,
                "created_at": job.created_at.isoformat()},
        "inputs": [n for lk in links if lk.direction == "in" if (n := _node(s, user, lk))],
        "outputs": [n for lk in links if lk.direction == "out" if (n := _node(s, user, lk))],
    }


def _jobs_linked(s: Session, user: User, direction: str, kind: str, ref: str, number: int
                 ) -> list[dict[str, Any]]:
    rows = s.scalars(select(JobLink).where(JobLink.direction == direction,
                                           JobLink.kind == kind, JobLink.ref == ref,
                                           JobLink.number == number))
    out = []
    for link in rows:
        job = s.get(Job, link.job_id)
        if job is not None and _visible_job(user, job):
            out.append(_job_entry(s, user, job))
    return sorted(out, key=lambda e: str(e["job"]["created_at"]))


def version_lineage(s: Session, user: User, version: ModelVersion) -> dict[str, Any]:
    """Where a model version came from (its job, that job's inputs, its parent) and what
    came of it (jobs that used it: predictions, fine-tunes from it)."""
    parent: dict[str, Any] | None = None
    if version.parent_id is not None:
        parent = _model_node(s, user, version.parent_id)
    elif version.source == "import":
        src = (version.inputs.get("inputs") or [{}])[0]
        parent = {"kind": "import", "path": src.get("path"),
                  "dataset": _dataset_node(s, user, str(src.get("ref", "")),
                                           int(src.get("version") or 0))}
    elif version.base_model:
        parent = {"kind": "builtin", "ref": version.base_model}
    job = s.get(Job, version.job_id) if version.job_id else None
    return {
        "model": _model_node(s, user, version.id),
        "source": version.source,
        "parent": parent,
        "produced_by": _job_entry(s, user, job) if job is not None and _visible_job(user, job)
        else None,
        "used_by": _jobs_linked(s, user, "in", "model", str(version.id), version.number),
    }


def dataset_lineage(s: Session, user: User, ds: Dataset, number: int) -> dict[str, Any]:
    """Which job wrote a dataset version (and from what), and which jobs read it (and what
    they produced: model versions, predictions)."""
    produced = _jobs_linked(s, user, "out", "dataset", ds.id, number)
    return {
        "dataset": _dataset_node(s, user, ds.id, number),
        "produced_by": produced[0] if produced else None,
        "used_by": _jobs_linked(s, user, "in", "dataset", ds.id, number),
    }
