"""The model registry: models, their versions and files, and references to versions.

A version is registered from a successful fine-tune job: the job's outputs under ``model/``
become its files (a Hugging Face folder, by digest), and the job's result gives its metrics.
Registration is idempotent per job (a runner that retries its final report, or a server that
restarts mid-way, registers the version once).

References: ``name``, ``owner:name``, then ``@latest`` (default), ``@ALIAS``, ``@N`` or
``/N``. ``latest`` always names the newest version; other aliases (``production``,
``best``...) point at the version they were given, and every move is kept as history. A model
with a best-version rule (a metric and ``max``/``min``) has its ``best`` alias moved by the
registry whenever a version arrives or the rule changes.

Access is as for datasets: the owner and admins write; others only through a share (read or
write); everyone else gets NotFound, never a hint that the model exists.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from clowder_ml.db.models import (
    Job,
    JobLink,
    JobOutput,
    Model,
    ModelAlias,
    ModelAliasEvent,
    ModelFile,
    ModelShare,
    ModelVersion,
    Permission,
    User,
    utcnow,
)
from clowder_ml.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from clowder_ml.services.datasets import validate_name
from clowder_ml.tasks.outputs import MODEL_DIR

ID_PREFIX = "mdl_"
MODEL_VERSION_PREFIX = "mv_"  # a pinned model input's ref: mv_<version row id>
MODEL_PREFIX = f"{MODEL_DIR}/"  # where a fine-tune job writes the model folder in its outputs
REF_RE = re.compile(r"^(?:(?P<owner>[^:/@]+):)?(?P<name>[^:/@]+)"
                    r"(?:(?:@(?P<alias>[A-Za-z0-9._-]+))|(?:/(?P<number>\d{1,9})))?$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
LATEST = "latest"
BEST = "best"
BEST_MODES = ("max", "min")


@dataclass(frozen=True)
class ModelRef:
    owner: str | None
    name: str
    number: int | None  # None: the alias (or the latest)
    alias: str | None = None  # None with number None: the latest


def parse_ref(ref: str) -> ModelRef:
    """``[owner:]name[@latest|@ALIAS|@N|/N]`` -> parts; ``ValidationFailed`` otherwise."""
    m = REF_RE.match(ref.strip())
    if not m:
        raise ValidationFailed(f"Invalid model reference {ref!r}.",
                               "Use NAME, NAME@latest, NAME@production, NAME/3 or "
                               "OWNER:NAME/3.")
    alias = m.group("alias")
    number = int(m.group("number")) if m.group("number") else None
    if alias is not None:
        if alias.isdigit():
            number, alias = int(alias), None
        elif alias == LATEST:
            alias = None
    return ModelRef(owner=m.group("owner"), name=m.group("name"), number=number, alias=alias)


def check_alias_name(alias: str) -> str:
    if not ALIAS_RE.match(alias):
        raise ValidationFailed(f"Invalid alias {alias!r}.",
                               "Use lower-case letters, digits, '.', '_' or '-', starting "
                               "with a letter (e.g. production).")
    if alias == LATEST:
        raise ValidationFailed("'latest' always names the newest version; it cannot be set.")
    return alias


def model_version_id(ref: str) -> int:
    """The row id in a pinned model input's ref (``mv_<id>``)."""
    return int(ref.removeprefix(MODEL_VERSION_PREFIX))


def _not_found(ref: str) -> NotFound:
    return NotFound(f"Model {ref!r} not found.", "List yours with `clowder-ml models ls`.")


def permission_of(s: Session, user: User, model: Model) -> Permission | None:
    """The user's permission on ``model``: owners and admins write, shares as granted."""
    if user.is_admin or model.owner_id == user.id:
        return Permission.WRITE
    share = s.get(ModelShare, (model.id, user.id))
    return Permission(share.permission) if share else None


def get_model(s: Session, user: User, name: str, owner: str | None = None,
              need: Permission = Permission.READ) -> Model:
    """A model the user may read (or write, with ``need``). Without ``owner`` the user's
    own model. NotFound when it does not exist or the user may not read it;
    PermissionDenied when they may read but ``need`` is write."""
    q = select(Model).join(User, User.id == Model.owner_id).where(Model.name == name)
    q = q.where(User.username == owner) if owner else q.where(Model.owner_id == user.id)
    model = s.scalar(q)
    perm = permission_of(s, user, model) if model is not None else None
    if model is None or perm is None:
        raise _not_found(f"{owner}:{name}" if owner else name)
    if need == Permission.WRITE and perm != Permission.WRITE:
        raise PermissionDenied(f"You have read-only access to model {name!r}.",
                               "Ask its owner for write access.")
    return model


def get_model_ref(s: Session, user: User, ref: str,
                  need: Permission = Permission.READ) -> Model:
    """The model a reference (``[owner:]name``, any version part ignored) names."""
    r = parse_ref(ref)
    return get_model(s, user, r.name, r.owner, need)


def alias_target(s: Session, model: Model, alias: str) -> ModelVersion | None:
    row = s.get(ModelAlias, (model.id, alias))
    return s.get(ModelVersion, row.version_id) if row is not None else None


def latest(s: Session, model: Model) -> ModelVersion | None:
    return s.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id)
                    .order_by(ModelVersion.number.desc()).limit(1))


def version_of(s: Session, model: Model, number: int) -> ModelVersion:
    v = s.scalar(select(ModelVersion).where(ModelVersion.model_id == model.id,
                                            ModelVersion.number == number))
    if v is None:
        raise NotFound(f"Model {model.name!r} has no version {number}.",
                       f"List them with `clowder-ml models versions {model.name}`.")
    return v


def resolve(s: Session, user: User, ref: str, need: Permission = Permission.READ
            ) -> ModelVersion:
    """The version ``ref`` names (number, alias or latest), if the user may read it."""
    r = parse_ref(ref)
    model = get_model(s, user, r.name, r.owner, need)
    if r.number is not None:
        return version_of(s, model, r.number)
    if r.alias is not None:
        target = alias_target(s, model, r.alias)
        if target is None:
            known = ", ".join(sorted(a.alias for a in aliases(s, model))) or "none"
            raise NotFound(f"Model {model.name!r} has no alias {r.alias!r}.",
                           f"Its aliases: {known} (and latest). Set one with "
                           f"`clowder-ml models alias {model.name} VERSION {r.alias}`.")
        return target
    version = latest(s, model)
    if version is None:
        raise NotFound(f"Model {model.name!r} has no version yet.",
                       "Fine-tune one with a text-classification-finetune job.")
    return version


def list_models(s: Session, user: User) -> list[Model]:
    """Models the user owns or that are shared with them (all for an admin)."""
    q = select(Model).order_by(Model.name)
    if not user.is_admin:
        shared = select(ModelShare.model_id).where(ModelShare.user_id == user.id)
        q = q.where(or_(Model.owner_id == user.id, Model.id.in_(shared)))
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


def _next_number(s: Session, model: Model) -> int:
    return int(s.scalar(select(func.max(ModelVersion.number))
                        .where(ModelVersion.model_id == model.id)) or 0) + 1


def model_for_new_version(s: Session, owner_id: int, name: str) -> Model:
    """The owner's model ``name``, created if new."""
    validate_name(name)
    model = s.scalar(select(Model).where(Model.owner_id == owner_id, Model.name == name))
    if model is None:
        model = Model(id=ID_PREFIX + secrets.token_hex(8), owner_id=owner_id, name=name)
        s.add(model)
        s.flush()
    return model


def add_version(s: Session, model: Model, files_: list[tuple[str, str, int]], *,
                job: Job | None = None, source: str = "job", task: str = "",
                base_model: str = "", params: Mapping[str, Any] | None = None,
                inputs: Mapping[str, Any] | None = None,
                metrics: Mapping[str, Any] | None = None, parent_id: int | None = None,
                description: str = "") -> ModelVersion:
    """Record the next version of ``model`` with ``files_`` ``(path, sha256, size)`` (a HF
    folder with ``model.safetensors``), link it to its job, and apply the best rule."""
    weights = [sha for path, sha, _ in files_ if path == "model.safetensors"]
    if not weights:
        raise ValidationFailed("A model version needs a model.safetensors.")
    version = ModelVersion(
        model_id=model.id, number=_next_number(s, model), job_id=job.id if job else None,
        task=task, base_model=base_model, inputs=dict(inputs or {}), params=dict(params or {}),
        metrics=dict(metrics or {}), digest=weights[0], size=sum(f[2] for f in files_),
        source=source, parent_id=parent_id, description=description)
    s.add(version)
    s.flush()
    s.add_all(ModelFile(version_id=version.id, path=path, sha256=sha, size=size)
              for path, sha, size in files_)
    if job is not None:
        s.add(JobLink(job_id=job.id, direction="out", kind="model", ref=str(version.id),
                      number=version.number))
    s.flush()
    apply_best_rule(s, model, None)
    return version


def register_from_job(s: Session, job: Job, name: str, result: Mapping[str, Any],
                      params: Mapping[str, Any] | None = None) -> ModelVersion:
    """Register the job's ``model/`` outputs as the next version of the owner's model
    ``name`` (created if new). Idempotent: a job registers at most one version. Its parent
    is the registered version it was fine-tuned from, if any. ``params``: the task's params
    with defaults filled in (what compare shows); the submitted ones when not given."""
    existing = s.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if existing is not None:
        return existing
    outputs = list(s.scalars(select(JobOutput).where(
        JobOutput.job_id == job.id, JobOutput.path.startswith(MODEL_PREFIX))))
    if not any(o.path == MODEL_PREFIX + "model.safetensors" for o in outputs):
        raise ValidationFailed("The job produced no model/model.safetensors to register.")
    model = model_for_new_version(s, job.owner_id, name)
    spec = job.spec
    parent_id = next((model_version_id(str(i["ref"])) for i in spec.get("inputs", [])
                      if i.get("kind") == "model"), None)
    if parent_id is not None and s.get(ModelVersion, parent_id) is None:
        parent_id = None  # deleted since
    return add_version(
        s, model, [(o.path[len(MODEL_PREFIX):], o.sha256, o.size) for o in outputs],
        job=job, task=job.task,
        base_model=str(result.get("base_model") or spec.get("params", {}).get("base_model")
                       or ""),
        inputs={"inputs": spec.get("inputs", [])},
        params=dict(params if params is not None else spec.get("params", {})),
        metrics=dict(result.get("metrics") or {}),
        parent_id=parent_id)


# aliases ----------------------------------------------------------------------------------


def aliases(s: Session, model: Model) -> list[ModelAlias]:
    return list(s.scalars(select(ModelAlias).where(ModelAlias.model_id == model.id)
                          .order_by(ModelAlias.alias)))


def aliases_by_version(s: Session, model: Model) -> dict[int, list[str]]:
    """Version number -> its aliases, ``latest`` included."""
    out: dict[int, list[str]] = {}
    numbers = {v.id: v.number for v in versions(s, model)}
    for a in aliases(s, model):
        out.setdefault(numbers[a.version_id], []).append(a.alias)
    newest = max(numbers.values(), default=None)
    if newest is not None:
        out.setdefault(newest, []).insert(0, LATEST)
    return out


def _move_alias(s: Session, model: Model, alias: str, version: ModelVersion | None,
                actor: User | None, reason: str) -> bool:
    """Point ``alias`` at ``version`` (None: remove it), recording the move; False when
    nothing changed."""
    row = s.get(ModelAlias, (model.id, alias))
    before = s.get(ModelVersion, row.version_id) if row is not None else None
    if (before.id if before else None) == (version.id if version else None):
        return False
    if version is None:
        assert row is not None
        s.delete(row)
    elif row is None:
        s.add(ModelAlias(model_id=model.id, alias=alias, version_id=version.id))
    else:
        row.version_id = version.id
        row.updated_at = utcnow()
    s.add(ModelAliasEvent(model_id=model.id, alias=alias,
                          from_number=before.number if before else None,
                          to_number=version.number if version else None,
                          actor_id=actor.id if actor else None, reason=reason))
    s.flush()
    return True


def set_alias(s: Session, user: User, model: Model, alias: str, number: int,
              reason: str = "") -> ModelVersion:
    """Point ``alias`` at version ``number`` (moving it if it exists). ``best`` is the
    registry's while the model has a best-version rule."""
    check_alias_name(alias)
    if alias == BEST and model.best_metric:
        raise Conflict(f"'best' follows the rule {model.best_metric} ({model.best_mode}) of "
                       f"model {model.name!r}.",
                       "Remove the rule first (best_metric: null) to set 'best' by hand.")
    version = version_of(s, model, number)
    _move_alias(s, model, alias, version, user, reason or "set")
    return version


def remove_alias(s: Session, user: User, model: Model, alias: str) -> None:
    check_alias_name(alias)
    if s.get(ModelAlias, (model.id, alias)) is None:
        raise NotFound(f"Model {model.name!r} has no alias {alias!r}.")
    if alias == BEST and model.best_metric:
        raise Conflict(f"'best' follows the rule {model.best_metric} of model "
                       f"{model.name!r}.", "Remove the rule first.")
    _move_alias(s, model, alias, None, user, "removed")


def alias_history(s: Session, model: Model, alias: str | None = None
                  ) -> list[ModelAliasEvent]:
    q = select(ModelAliasEvent).where(ModelAliasEvent.model_id == model.id)
    if alias is not None:
        q = q.where(ModelAliasEvent.alias == alias)
    return list(s.scalars(q.order_by(ModelAliasEvent.id)))


def _metric_value(version: ModelVersion, metric: str) -> float | None:
    value = version.metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def best_version(s: Session, model: Model) -> ModelVersion | None:
    """The version the rule picks: the best value of the metric; on a tie the earliest
    (a new version must beat the best, not equal it, to take the alias)."""
    if not model.best_metric:
        return None
    scored = [(value, v) for v in versions(s, model)
              if (value := _metric_value(v, model.best_metric)) is not None]
    if not scored:
        return None
    sign = -1.0 if model.best_mode == "max" else 1.0
    return min(scored, key=lambda item: (sign * item[0], item[1].number))[1]


def apply_best_rule(s: Session, model: Model, actor: User | None) -> None:
    """Move ``best`` to the version the rule picks (no-op without a rule)."""
    target = best_version(s, model)
    if target is not None:
        _move_alias(s, model, BEST, target, actor,
                    f"best rule: {model.best_mode} {model.best_metric}")


def update_model(s: Session, user: User, model: Model, *, description: str | None = None,
                 tags: Mapping[str, Any] | None = None, best_metric: str | None = None,
                 best_mode: str | None = None, clear_rule: bool = False) -> Model:
    """Change the description, tags or the best-version rule (applied at once)."""
    if description is not None:
        model.description = description
    if tags is not None:
        model.tags = dict(tags)
    if clear_rule:
        model.best_metric = model.best_mode = None
    elif best_metric is not None:
        if best_mode not in BEST_MODES:
            raise ValidationFailed("A best-version rule needs best_mode 'max' or 'min'.",
                                   "e.g. best_metric=eval_accuracy best_mode=max")
        model.best_metric, model.best_mode = best_metric, best_mode
        s.flush()
        apply_best_rule(s, model, user)
    s.flush()
    return model


def update_version(s: Session, version: ModelVersion, *, description: str | None = None,
                   tags: Mapping[str, Any] | None = None) -> ModelVersion:
    if description is not None:
        version.description = description
    if tags is not None:
        version.tags = dict(tags)
    s.flush()
    return version


def delete_version(s: Session, user: User, model: Model, number: int, force: bool = False
                   ) -> None:
    """Delete a version. Refused while an alias points at it, unless ``force`` (the aliases
    are then removed, recorded in their history). Its files go with the next blob
    collection unless another version or dataset holds them."""
    version = version_of(s, model, number)
    held = [a.alias for a in aliases(s, model) if a.version_id == version.id]
    if held and not force:
        raise Conflict(f"Version {number} of {model.name!r} is aliased as "
                       f"{', '.join(held)}.",
                       "Move the aliases first, or delete with force to remove them too.")
    for alias in held:
        _move_alias(s, model, alias, None, user, f"removed: version {number} deleted")
    s.delete(version)
    s.flush()
    apply_best_rule(s, model, user)


# sharing ----------------------------------------------------------------------------------


def share(s: Session, actor: User, model: Model, target: User, permission: Permission
          ) -> None:
    if not (actor.is_admin or model.owner_id == actor.id):
        raise PermissionDenied("Only the owner can share a model.")
    if target.id == model.owner_id:  # the request is fine; the user named is the owner
        raise Conflict("The owner always has full access.")
    row = s.get(ModelShare, (model.id, target.id))
    if row is None:
        s.add(ModelShare(model_id=model.id, user_id=target.id, permission=permission.value))
    else:
        row.permission = permission.value
    s.flush()


def unshare(s: Session, actor: User, model: Model, target: User) -> None:
    if not (actor.is_admin or model.owner_id == actor.id):
        raise PermissionDenied("Only the owner can change sharing.")
    row = s.get(ModelShare, (model.id, target.id))
    if row is None:
        raise NotFound(f"Model is not shared with {target.username!r}.")
    s.delete(row)
    s.flush()


# compare ----------------------------------------------------------------------------------


def _differing(values: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = sorted({k for v in values for k in v})
    return {k: [v.get(k) for v in values] for k in keys
            if len({repr(v.get(k)) for v in values}) > 1}


def compare(s: Session, versions_: list[ModelVersion]) -> dict[str, Any]:
    """Side by side: the params that differ, every metric, the data and the base model."""
    def data(v: ModelVersion) -> list[str]:
        return [f"{i.get('mount') or i['ref']}@{i.get('version')}"
                for i in v.inputs.get("inputs", []) if i.get("kind") == "dataset"]

    metric_names = sorted({k for v in versions_ for k in v.metrics})
    return {
        "versions": [v.number for v in versions_],
        "refs": [ref_of(s, v) for v in versions_],
        "params_differing": _differing([v.params for v in versions_]),
        "params_same": {k: val for k, val in versions_[0].params.items()
                        if all(repr(o.params.get(k)) == repr(val) for o in versions_[1:])},
        "metrics": {k: [v.metrics.get(k) for v in versions_] for k in metric_names},
        "data": [data(v) for v in versions_],
        "base_model": [v.base_model for v in versions_],
        "digest": [v.digest for v in versions_],
        "created_at": [v.created_at.isoformat() for v in versions_],
    }


def file_digests(s: Session) -> set[str]:
    """Digests of every model file (kept by the blob garbage collector)."""
    return set(s.scalars(select(ModelFile.sha256).distinct()))
