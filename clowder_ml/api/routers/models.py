"""The model registry (versions, aliases, best rule, compare, lineage, download, export,
import, reproduce, sharing) and the task catalogue with each task's params schema."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, model_validator
from sqlalchemy import select

from clowder_ml.api.deps import AuditDep, PlatformDep, UserDep
from clowder_ml.api.fields import (
    AliasPath,
    DatasetRefField,
    DatasetRefPath,
    FilePathPath,
    FolderField,
    ModelName,
    ModelNamePath,
    ModelRefPath,
    UsernamePath,
)
from clowder_ml.api.job_schemas import OutputOut
from clowder_ml.api.responses import (
    READS_DATASET,
    READS_MODEL,
    SHARES,
    WRITES_DATASET,
    WRITES_MODEL,
    errors,
)
from clowder_ml.api.schemas import Metadata, Strict, Text
from clowder_ml.clowder import export as clowder_export
from clowder_ml.clowder.messages import OBJECT_ID
from clowder_ml.clowder.rest import ClowderNotConfigured, ClowderRefused, ClowderUnreachable
from clowder_ml.db.models import Model, ModelVersion, Permission, User
from clowder_ml.engine.spec import MAX_CPUS, MAX_GPUS
from clowder_ml.errors import Conflict, NotFound, StorageError, UnusableContent
from clowder_ml.registry import artifacts, lineage, models, reproduction
from clowder_ml.services import audit, datasets, files, users

router = APIRouter(prefix="/api/v1", tags=["models"])
NumberP = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version or reproduction number")]
ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}}


class ModelOut(BaseModel):
    id: str
    name: str
    owner: str
    ref: str
    description: str
    tags: dict[str, Any]
    versions: int
    latest: int | None
    aliases: dict[str, int]
    best_metric: str | None
    best_mode: str | None
    permission: str


class ModelVersionOut(BaseModel):
    model: str
    version: int
    ref: str
    job_id: str | None
    source: str
    task: str
    base_model: str
    parent: str | None
    inputs: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    digest: str
    size: int
    status: str
    aliases: list[str]
    tags: dict[str, Any]
    description: str
    created_at: str


class TaskOut(BaseModel):
    name: str
    summary: str
    params_schema: dict[str, Any]


class ModelUpdate(Strict):
    """Fields left out are unchanged. ``best_metric`` + ``best_mode`` set the best-version
    rule (``best`` then follows it); ``clear_best_rule`` removes it."""

    # A best_metric needs its best_mode, said where the schema can say it.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"best_metric": {"type": "string"}},
               "required": ["best_metric"]},
        "then": {"properties": {"best_mode": {"enum": ["max", "min"]}},
                 "required": ["best_mode"]}})

    description: Text | None = None
    tags: Metadata | None = None
    best_metric: Text | None = Field(default=None, min_length=1, max_length=128)
    best_mode: Literal["max", "min"] | None = None
    clear_best_rule: StrictBool = False

    @model_validator(mode="after")
    def _rule_has_mode(self) -> ModelUpdate:
        if self.best_metric is not None and self.best_mode is None:
            raise ValueError("a best_metric needs best_mode 'max' or 'min'")
        return self


class VersionUpdate(Strict):
    description: Text | None = None
    tags: Metadata | None = None


class AliasSet(Strict):
    version: int = Field(ge=1, le=2**31 - 1)
    reason: Text = Field(default="", max_length=500)


class AliasOut(BaseModel):
    alias: str
    version: int


class AliasEventOut(BaseModel):
    alias: str
    from_version: int | None
    to_version: int | None
    by: str | None
    reason: str
    at: str


class AliasesOut(BaseModel):
    aliases: list[AliasOut]
    history: list[AliasEventOut]


class ShareRequest(Strict):
    permission: Permission = Permission.READ


class ExportRequest(Strict):
    dataset: DatasetRefField
    path: FolderField = Field(default="", description="Folder in the dataset "
                                                      "(default models/NAME-vN)")


class ClowderExportRequest(Strict):
    dataset_id: str = Field(pattern=OBJECT_ID,
                            description="The Clowder dataset (its 24-hex id) to add the "
                                        "model to")
    api_key: SecretStr = Field(min_length=1, max_length=4096,
                               description="Your Clowder API key: used for this upload only, "
                                           "never stored or logged")


class ClowderExportOut(BaseModel):
    clowder_url: str
    dataset_id: str
    file_id: str | None
    file: str
    bytes: int | None
    metadata_id: str | None
    model: str


class ImportRequest(Strict):
    name: ModelName
    dataset: DatasetRefField
    path: FolderField = Field(default="", description="The folder with config.json")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    description: Text = ""


class ImportOut(BaseModel):
    version: ModelVersionOut
    skipped: list[str]


class ReproduceRequest(Strict):
    """Resources for the re-run; unset: as recorded. Changing them changes the thread count
    (a recorded environment fact), which is how to see its effect on purpose."""

    cpus: float | None = Field(default=None, gt=0, le=MAX_CPUS)
    gpus: float | None = Field(default=None, ge=0, le=MAX_GPUS)


class ReproductionOut(BaseModel):
    id: int
    job_id: str
    state: str
    version: int | None
    ref: str | None
    verdict: str
    why: str
    differences: list[dict[str, Any]]
    environment_differences: list[dict[str, Any]] = []
    original_digest: str | None = None
    reproduced_digest: str | None = None


def _model_out(s: Any, user: User, m: Model) -> ModelOut:
    vs = models.versions(s, m)
    owner = s.get(User, m.owner_id)
    numbers = {v.id: v.number for v in vs}
    perm = models.permission_of(s, user, m)
    return ModelOut(id=m.id, name=m.name, owner=owner.username if owner else "?",
                    ref=f"{owner.username if owner else '?'}:{m.name}",
                    description=m.description, tags=m.tags or {}, versions=len(vs),
                    latest=vs[-1].number if vs else None,
                    aliases={a.alias: numbers[a.version_id] for a in models.aliases(s, m)},
                    best_metric=m.best_metric, best_mode=m.best_mode,
                    permission=perm.value if perm else "read")


def _version_out(s: Any, v: ModelVersion, by_version: dict[int, list[str]] | None = None
                 ) -> ModelVersionOut:
    model = models.model_of(s, v)
    if by_version is None:
        by_version = models.aliases_by_version(s, model)
    parent = s.get(ModelVersion, v.parent_id) if v.parent_id else None
    return ModelVersionOut(
        model=model.name, version=v.number, ref=models.ref_of(s, v), job_id=v.job_id,
        source=v.source, task=v.task, base_model=v.base_model,
        parent=models.ref_of(s, parent) if parent is not None else None, inputs=v.inputs,
        params=v.params, metrics=v.metrics, digest=v.digest, size=v.size, status=v.status,
        aliases=by_version.get(v.number, []), tags=v.tags or {}, description=v.description,
        created_at=v.created_at.isoformat())


def _version(s: Any, user: User, name: str, number: NumberP,
             need: Permission = Permission.READ) -> ModelVersion:
    model = models.get_model_ref(s, user, name, need)
    return models.version_of(s, model, number)


def _aliases_out(s: Any, m: Model) -> AliasesOut:
    numbers = {v.id: v.number for v in models.versions(s, m)}
    history = models.alias_history(s, m)
    actors = {e.actor_id for e in history if e.actor_id is not None}
    names = {u.id: u.username for u in s.scalars(select(User).where(User.id.in_(actors)))}
    return AliasesOut(
        aliases=[AliasOut(alias=a.alias, version=numbers[a.version_id])
                 for a in models.aliases(s, m)],
        history=[AliasEventOut(alias=e.alias, from_version=e.from_number,
                               to_version=e.to_number,
                               by=names.get(e.actor_id) if e.actor_id else None,
                               reason=e.reason, at=e.at.isoformat())
                 for e in history])


@router.get("/tasks", response_model=list[TaskOut])
def list_tasks(user: UserDep, platform: PlatformDep) -> list[TaskOut]:
    """Every task a job can run, with the JSON schema of its params (for forms and editors)."""
    return [TaskOut(name=t.name, summary=t.summary, params_schema=t.params.model_json_schema())
            for t in (platform.tasks.get(n) for n in platform.tasks.names())]


@router.get("/models", response_model=list[ModelOut])
def list_models(user: UserDep, platform: PlatformDep) -> list[ModelOut]:
    """Models you own or that are shared with you."""
    with platform.db.session() as s:
        return [_model_out(s, user, m) for m in models.list_models(s, user)]


@router.post("/models/import", response_model=ImportOut, status_code=201,
             responses=errors(*READS_DATASET, UnusableContent, StorageError))
def import_model(body: ImportRequest, user: UserDep, platform: PlatformDep) -> ImportOut:
    """Register a Hugging Face folder from a dataset as a new version (usable as a base
    model). Safetensors only: pickle-based weights are refused or left out."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, body.dataset)
        done = artifacts.import_folder(s, platform.blobs, user, ds, body.version,
                                             body.path, body.name, body.description)
        return ImportOut(version=_version_out(s, done.version), skipped=done.skipped)


@router.get("/model-refs/{ref:path}", response_model=ModelVersionOut,
            responses=errors(*READS_MODEL))
def resolve_ref(ref: ModelRefPath, user: UserDep, platform: PlatformDep) -> ModelVersionOut:
    """The version a reference names: NAME, NAME@latest, NAME@ALIAS, NAME/N, OWNER:NAME/N."""
    with platform.db.session() as s:
        return _version_out(s, models.resolve(s, user, ref))


@router.get("/models/{name}", response_model=ModelOut, responses=errors(*READS_MODEL))
def show_model(name: ModelNamePath, user: UserDep, platform: PlatformDep) -> ModelOut:
    with platform.db.session() as s:
        return _model_out(s, user, models.get_model_ref(s, user, name))


@router.patch("/models/{name}", response_model=ModelOut, responses=errors(*WRITES_MODEL))
def update_model(name: ModelNamePath, body: ModelUpdate, user: UserDep,
                 platform: PlatformDep) -> ModelOut:
    """Description, tags, or the best-version rule (``best`` is moved at once)."""
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name, Permission.WRITE)
        models.update_model(s, user, m, description=body.description, tags=body.tags,
                            best_metric=body.best_metric, best_mode=body.best_mode,
                            clear_rule=body.clear_best_rule)
        return _model_out(s, user, m)


@router.get("/models/{name}/versions", response_model=list[ModelVersionOut],
            responses=errors(*READS_MODEL))
def list_versions(name: ModelNamePath, user: UserDep, platform: PlatformDep,
                  ) -> list[ModelVersionOut]:
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name)
        by_version = models.aliases_by_version(s, m)
        return [_version_out(s, v, by_version) for v in models.versions(s, m)]


@router.get("/models/{name}/versions/{number}", response_model=ModelVersionOut,
            responses=errors(*READS_MODEL))
def show_version(name: ModelNamePath, number: NumberP, user: UserDep,
                 platform: PlatformDep) -> ModelVersionOut:
    with platform.db.session() as s:
        return _version_out(s, _version(s, user, name, number))


@router.patch("/models/{name}/versions/{number}", response_model=ModelVersionOut,
              responses=errors(*WRITES_MODEL))
def update_version(name: ModelNamePath, number: NumberP, body: VersionUpdate, user: UserDep,
                   platform: PlatformDep) -> ModelVersionOut:
    with platform.db.session() as s:
        v = _version(s, user, name, number, Permission.WRITE)
        models.update_version(s, v, description=body.description, tags=body.tags)
        return _version_out(s, v)


@router.delete("/models/{name}/versions/{number}", status_code=204,
               responses=errors(*WRITES_MODEL))
def delete_version(name: ModelNamePath, number: NumberP, user: UserDep, platform: PlatformDep,
                   force: bool = False) -> None:
    """Refused (409) while an alias points at the version, unless ``force``."""
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name, Permission.WRITE)
        models.delete_version(s, user, m, number, force)


@router.get("/models/{name}/aliases", response_model=AliasesOut,
            responses=errors(*READS_MODEL))
def list_aliases(name: ModelNamePath, user: UserDep, platform: PlatformDep) -> AliasesOut:
    """Current aliases and every move (``latest`` is implicit: the newest version)."""
    with platform.db.session() as s:
        return _aliases_out(s, models.get_model_ref(s, user, name))


@router.put("/models/{name}/aliases/{alias}", response_model=AliasesOut,
            responses=errors(*WRITES_MODEL))
def set_alias(name: ModelNamePath, alias: AliasPath, body: AliasSet, user: UserDep,
              platform: PlatformDep) -> AliasesOut:
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name, Permission.WRITE)
        models.set_alias(s, user, m, alias, body.version, body.reason)
        return _aliases_out(s, m)


@router.delete("/models/{name}/aliases/{alias}", response_model=AliasesOut,
               responses=errors(*WRITES_MODEL))
def remove_alias(name: ModelNamePath, alias: AliasPath, user: UserDep, platform: PlatformDep,
                 ) -> AliasesOut:
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name, Permission.WRITE)
        models.remove_alias(s, user, m, alias)
        return _aliases_out(s, m)


@router.get("/models/{name}/compare", responses=errors(*READS_MODEL))
def compare(name: ModelNamePath, user: UserDep, platform: PlatformDep,
            versions: Annotated[str, Query(pattern=r"^[0-9]{1,9}(,[0-9]{1,9})+$",
                                           description="Two or more: 1,3,4")],
            ) -> dict[str, Any]:
    """Versions side by side: params that differ, metrics, data, base model."""
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name)
        return models.compare(s, [models.version_of(s, m, int(n))
                                  for n in versions.split(",")])


@router.get("/models/{name}/versions/{number}/lineage", responses=errors(*READS_MODEL))
def version_lineage(name: ModelNamePath, number: NumberP, user: UserDep,
                    platform: PlatformDep) -> dict[str, Any]:
    """Where the version came from (job, data, parent) and what used it (predictions...)."""
    with platform.db.session() as s:
        return lineage.version_lineage(s, user, _version(s, user, name, number))


@router.get("/datasets/{ref}/versions/{number}/lineage", responses=errors(*READS_DATASET))
def dataset_lineage(ref: DatasetRefPath, number: NumberP, user: UserDep,
                    platform: PlatformDep) -> dict[str, Any]:
    """The job that wrote this dataset version and the jobs (and models) that read it."""
    with platform.db.session() as s:
        ds = datasets.resolve(s, user, ref)
        if datasets.get_version(s, ds, number) is None:
            raise NotFound(f"Dataset {ref!r} has no version {number}.")
        return lineage.dataset_lineage(s, user, ds, number)


@router.get("/models/{name}/versions/{number}/files", response_model=list[OutputOut],
            responses=errors(*READS_MODEL))
def version_files(name: ModelNamePath, number: NumberP, user: UserDep,
                  platform: PlatformDep) -> list[OutputOut]:
    with platform.db.session() as s:
        v = _version(s, user, name, number)
        return [OutputOut(path=f.path, sha256=f.sha256, size=f.size)
                for f in models.files(s, v)]


@router.get("/models/{name}/versions/{number}/files/{path:path}",
            response_class=FileResponse,
            responses={200: {"content": {"*/*": {
                "schema": {"type": "string", "format": "binary"}}}},
                       **errors(*READS_MODEL)})
def version_file(name: ModelNamePath, number: NumberP, path: FilePathPath, user: UserDep,
                 platform: PlatformDep) -> FileResponse:
    with platform.db.session() as s:
        v = _version(s, user, name, number)
        row = next((f for f in models.files(s, v) if f.path == path), None)
    if row is None or not platform.blobs.path(row.sha256).is_file():
        raise NotFound(f"Model {name}/{number} has no file {path!r}.")
    return FileResponse(platform.blobs.path(row.sha256), filename=PurePosixPath(path).name)


@router.get("/models/{name}/versions/{number}/archive", response_class=StreamingResponse,
            responses={**ZIP, **errors(*READS_MODEL)})
def download_version(name: ModelNamePath, number: NumberP, user: UserDep,
                     platform: PlatformDep) -> StreamingResponse:
    """The version's Hugging Face folder as a zip, streamed as it is built."""
    with platform.db.session() as s:
        v = _version(s, user, name, number)
        model = models.model_of(s, v)
        entries = [(f.path, f.sha256) for f in models.files(s, v)]
        filename = f"{model.name}-v{v.number}.zip"
    return StreamingResponse(files.stream_zip(platform.blobs, entries),
                             media_type="application/zip",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{filename}"'})


@router.post("/models/{name}/versions/{number}/export", status_code=201,
             responses=errors(*READS_MODEL, *WRITES_DATASET, StorageError))
def export_version(name: ModelNamePath, number: NumberP, body: ExportRequest, user: UserDep,
                   platform: PlatformDep) -> dict[str, Any]:
    """Add the version's files to a dataset you can write (a new dataset version)."""
    with platform.db.session() as s:
        v = _version(s, user, name, number)
        ds = datasets.resolve(s, user, body.dataset, Permission.WRITE)
        folder = body.path or f"models/{models.model_of(s, v).name}-v{v.number}"
        dv = artifacts.export_to_dataset(s, platform.db, user, v, ds, folder)
        return {"dataset": ds.name, "dataset_id": ds.id, "version": dv.number,
                "path": folder.strip("/"), "files": len(models.files(s, v))}


@router.post("/models/{name}/versions/{number}/export-to-clowder", status_code=201,
             response_model=ClowderExportOut,
             responses=errors(*READS_MODEL, ClowderNotConfigured, ClowderRefused,
                              ClowderUnreachable, StorageError))
def export_version_to_clowder(name: ModelNamePath, number: NumberP, body: ClowderExportRequest,
                              user: UserDep, platform: PlatformDep) -> ClowderExportOut:
    """Upload the version (zip of its folder and model card) into a Clowder dataset, with
    its metrics and lineage as metadata, on the Clowder this server is configured for."""
    out = clowder_export.export_to_clowder(platform, user, f"{name}/{number}", body.dataset_id,
                                           body.api_key.get_secret_value())
    return ClowderExportOut(**out)


@router.post("/models/{name}/versions/{number}/reproduce", response_model=ReproductionOut,
             status_code=202, responses=errors(*READS_MODEL, Conflict))
def reproduce(name: ModelNamePath, number: NumberP, body: ReproduceRequest, user: UserDep,
              platform: PlatformDep) -> ReproductionOut:
    """Re-run the version's job; the verdict is ready when that job ends."""
    with platform.db.session() as s:
        v = _version(s, user, name, number)
        row, _ = reproduction.start(s, user, platform.tasks, v, cpus=body.cpus,
                                       gpus=body.gpus)
        out = ReproductionOut(**reproduction.describe(s, row))
    platform.wake_dispatcher()
    return out


@router.get("/models/{name}/versions/{number}/reproductions",
            response_model=list[ReproductionOut], responses=errors(*READS_MODEL))
def list_reproductions(name: ModelNamePath, number: NumberP, user: UserDep,
                       platform: PlatformDep) -> list[ReproductionOut]:
    with platform.db.session() as s:
        v = _version(s, user, name, number)
        return [ReproductionOut(**reproduction.describe(s, r))
                for r in reproduction.list_for(s, v)]


@router.get("/models/{name}/versions/{number}/reproductions/{rid}",
            response_model=ReproductionOut, responses=errors(*READS_MODEL))
def show_reproduction(name: ModelNamePath, number: NumberP, rid: NumberP, user: UserDep,
                      platform: PlatformDep) -> ReproductionOut:
    with platform.db.session() as s:
        v = _version(s, user, name, number)
        return ReproductionOut(**reproduction.describe(s, reproduction.get(s, v, rid)))


@router.put("/models/{name}/shares/{username}", status_code=204, responses=errors(*SHARES))
def share_model(name: ModelNamePath, username: UsernamePath, body: ShareRequest, user: UserDep,
                platform: PlatformDep, ctx: AuditDep) -> None:
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name)
        models.share(s, user, m, users.get_user_by_name(s, username), body.permission)
        audit.record_share(s, ctx, user, f"model:{m.id}", username, body.permission.value)


@router.delete("/models/{name}/shares/{username}", status_code=204,
               responses=errors(*SHARES))
def unshare_model(name: ModelNamePath, username: UsernamePath, user: UserDep, platform: PlatformDep,
                  ctx: AuditDep) -> None:
    with platform.db.session() as s:
        m = models.get_model_ref(s, user, name)
        models.unshare(s, user, m, users.get_user_by_name(s, username))
        audit.record_share(s, ctx, user, f"model:{m.id}", username, None)
