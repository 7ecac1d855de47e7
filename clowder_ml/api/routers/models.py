"""The model registry (read side) and the task catalogue with each task's params schema."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from clowder_ml.api.deps import PlatformDep, UserDep
from clowder_ml.api.job_schemas import OutputOut
from clowder_ml.db.models import Model, ModelVersion, User
from clowder_ml.errors import NotFound
from clowder_ml.services import models

router = APIRouter(prefix="/api/v1", tags=["models"])


class ModelOut(BaseModel):
    id: str
    name: str
    owner: str
    description: str
    versions: int
    latest: int | None


class ModelVersionOut(BaseModel):
    model: str
    version: int
    ref: str
    job_id: str | None
    task: str
    base_model: str
    inputs: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    digest: str
    size: int
    status: str
    aliases: list[str]
    created_at: str


class TaskOut(BaseModel):
    name: str
    summary: str
    params_schema: dict[str, Any]


def _model_out(s: Any, m: Model) -> ModelOut:
    vs = models.versions(s, m)
    owner = s.get(User, m.owner_id)
    return ModelOut(id=m.id, name=m.name, owner=owner.username if owner else "?",
                    description=m.description, versions=len(vs),
                    latest=vs[-1].number if vs else None)


def _version_out(s: Any, v: ModelVersion, latest: int) -> ModelVersionOut:
    return ModelVersionOut(
        model=models.model_of(s, v).name, version=v.number, ref=models.ref_of(s, v),
        job_id=v.job_id, task=v.task, base_model=v.base_model, inputs=v.inputs,
        params=v.params, metrics=v.metrics, digest=v.digest, size=v.size, status=v.status,
        aliases=["latest"] if v.number == latest else [], created_at=v.created_at.isoformat())


@router.get("/tasks", response_model=list[TaskOut])
def list_tasks(user: UserDep, platform: PlatformDep) -> list[TaskOut]:
    """Every task a job can run, with the JSON schema of its params (for forms and editors)."""
    return [TaskOut(name=t.name, summary=t.summary, params_schema=t.params.model_json_schema())
            for t in (platform.tasks.get(n) for n in platform.tasks.names())]


@router.get("/models", response_model=list[ModelOut])
def list_models(user: UserDep, platform: PlatformDep) -> list[ModelOut]:
    with platform.db.session() as s:
        return [_model_out(s, m) for m in models.list_models(s, user)]


@router.get("/models/{name}/versions", response_model=list[ModelVersionOut])
def list_versions(name: str, user: UserDep, platform: PlatformDep) -> list[ModelVersionOut]:
    with platform.db.session() as s:
        ref = models.parse_ref(name)
        vs = models.versions(s, models.get_model(s, user, ref.name, ref.owner))
        latest = vs[-1].number if vs else 0
        return [_version_out(s, v, latest) for v in vs]


@router.get("/models/{name}/versions/{number}", response_model=ModelVersionOut)
def show_version(name: str, number: int, user: UserDep,
                 platform: PlatformDep) -> ModelVersionOut:
    with platform.db.session() as s:
        v = models.resolve(s, user, f"{name}/{number}")
        latest = models.resolve(s, user, name).number
        return _version_out(s, v, latest)


@router.get("/models/{name}/versions/{number}/files", response_model=list[OutputOut])
def version_files(name: str, number: int, user: UserDep,
                  platform: PlatformDep) -> list[OutputOut]:
    with platform.db.session() as s:
        v = models.resolve(s, user, f"{name}/{number}")
        return [OutputOut(path=f.path, sha256=f.sha256, size=f.size)
                for f in models.files(s, v)]


@router.get("/models/{name}/versions/{number}/files/{path:path}",
            response_class=FileResponse)
def version_file(name: str, number: int, path: str, user: UserDep,
                 platform: PlatformDep) -> FileResponse:
    with platform.db.session() as s:
        v = models.resolve(s, user, f"{name}/{number}")
        row = next((f for f in models.files(s, v) if f.path == path), None)
    if row is None or not platform.blobs.path(row.sha256).is_file():
        raise NotFound(f"Model {name}/{number} has no file {path!r}.")
    return FileResponse(platform.blobs.path(row.sha256), filename=PurePosixPath(path).name)
