"""The model registry: models, their versions and files, and references to versions.

A version is registered from a successful fine-tune job: the job's outputs under ``model/``
become its files (a Hugging Face folder, by digest), and the job's result gives its metrics.
Registration is idempotent per job (a runner that retries its final report, or a server that
restarts mid-way, registers the version once).

References: ``name``, ``owner:name``, then ``@latest`` (default), ``@N`` or ``/N``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clowder_ml.db.models import Job, JobOutput, Model, ModelFile, ModelVersion, User
from clowder_ml.errors import NotFound, ValidationFailed
from clowder_ml.services.datasets import validate_name

ID_PREFIX = "mdl_"
MODEL_PREFIX = "model/"  # where a fine-tune job writes the model folder in its outputs
REF_RE = re.compile(r"^(?:(?P<owner>[^:/@]+):)?(?P<name>[^:/@]+)"
                    r"(?:(?:@(?P<alias>[A-Za-z0-9._-]+))|(?:/(?P<number>\d{1,9})))?$")


@dataclass(frozen=True)
class ModelRef:
    owner: str | None
    name: str
    number: int | None  # None: the latest


def parse_ref(ref: str) -> ModelRef:
    """``[owner:]name[@latest|@N|/N]`` -> parts; ``ValidationFailed`` otherwise."""
    m = REF_RE.match(ref.strip())
    if not m:
        raise ValidationFailed(f"Invalid model reference {ref!r}.",
                               "Use NAME, NAME@latest, NAME/3 or OWNER:NAME/3.")
    alias = m.group("alias")
    number = int(m.group("number")) if m.group("number") else None
    if alias is not None:
        if alias.isdigit():
            number = int(alias)
        elif alias != "latest":
            raise ValidationFailed(f"Unknown alias {alias!r} in {ref!r}.",
                                   "Use @latest or a version number.")
    return ModelRef(owner=m.group("owner"), name=m.group("name"), number=number)


def _not_found(ref: str) -> NotFound:
    return NotFound(f"Model {ref!r} not found.", "List yours with `clowder-ml models ls`.")


def get_model(s: Session, user: User, name: str, owner: str | None = None) -> Model:
    """A model the user can see (own, or any as admin); NotFound otherwise."""
    q = select(Model).join(User, User.id == Model.owner_id).where(Model.name == name)
    q = q.where(User.username == owner) if owner else q.where(Model.owner_id == user.id)
    model = s.scalar(q)
    if model is None or not (user.is_admin or model.owner_id == user.id):
        raise _not_found(f"{owner}:{name}" if owner else name)
    return model


def resolve(s: Session, user: User, ref: str) -> ModelVersion:
    """The version ``ref`` names, if the user may read it."""
    r = parse_ref(ref)
    model = get_model(s, user, r.name, r.owner)
    q = select(ModelVersion).where(ModelVersion.model_id == model.id)
    q = q.where(ModelVersion.number == r.number) if r.number is not None \
        else q.order_by(ModelVersion.number.desc())
    version = s.scalar(q.limit(1))
    if version is None:
        raise NotFound(f"Model {model.name!r} has no version "
                       f"{r.number if r.number is not None else 'yet'}.",
                       "Fine-tune one with a text-classification-finetune job.")
    return version


def list_models(s: Session, user: User) -> list[Model]:
    q = select(Model).order_by(Model.name)
    if not user.is_admin:
        q = q.where(Model.owner_id == user.id)
    return list(s.scalars(q))


def versions(s: Session, model: Model) -> list[ModelVersion]:
    return list(s.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id)
                          .order_by(ModelVersion.number)))


def files(s: Session, version: ModelVersion) -> list[ModelFile]:
    return list(s.scalars(select(ModelFile).where(ModelFile.version_id == version.id)
                          .order_by(ModelFile.path)))


def model_of(s: Session, version: ModelVersion) -> Model:
    model = s.get(Model, version.model_id)
    assert model is not None
    return model


def ref_of(s: Session, version: ModelVersion) -> str:
    """``owner:name/N`` — how messages and lineage name a version."""
    model = model_of(s, version)
    owner = s.get(User, model.owner_id)
    return f"{owner.username if owner else '?'}:{model.name}/{version.number}"


def register_from_job(s: Session, job: Job, name: str, result: Mapping[str, Any]
                      ) -> ModelVersion:
    """Register the job's ``model/`` outputs as the next version of the owner's model
    ``name`` (created if new). Idempotent: a job registers at most one version."""
    existing = s.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if existing is not None:
        return existing
    validate_name(name)
    outputs = list(s.scalars(select(JobOutput).where(
        JobOutput.job_id == job.id, JobOutput.path.startswith(MODEL_PREFIX))))
    weights = [o for o in outputs if o.path == MODEL_PREFIX + "model.safetensors"]
    if not weights:
        raise ValidationFailed("The job produced no model/model.safetensors to register.")
    model = s.scalar(select(Model).where(Model.owner_id == job.owner_id, Model.name == name))
    if model is None:
        model = Model(id=ID_PREFIX + secrets.token_hex(8), owner_id=job.owner_id, name=name)
        s.add(model)
        s.flush()
    number = int(s.scalar(select(func.max(ModelVersion.number))
                          .where(ModelVersion.model_id == model.id)) or 0) + 1
    spec = job.spec
    version = ModelVersion(
        model_id=model.id, number=number, job_id=job.id, task=job.task,
        base_model=str(spec.get("params", {}).get("base_model", "")),
        inputs={"inputs": spec.get("inputs", [])}, params=dict(spec.get("params", {})),
        metrics=dict(result.get("metrics") or {}), digest=weights[0].sha256,
        size=sum(o.size for o in outputs))
    s.add(version)
    s.flush()
    s.add_all(ModelFile(version_id=version.id, path=o.path[len(MODEL_PREFIX):],
                        sha256=o.sha256, size=o.size) for o in outputs)
    s.flush()
    return version


def file_digests(s: Session) -> set[str]:
    """Digests of every model file (kept by the blob garbage collector)."""
    return set(s.scalars(select(ModelFile.sha256).distinct()))
