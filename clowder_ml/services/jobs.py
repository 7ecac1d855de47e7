"""Jobs in the database: submission, visibility, cancel requests, and the only way a job's
state changes.

``transition`` is a compare-and-set on the current state: of two concurrent changes (say the
Ray watcher's SUCCEEDED and a user's CANCELLED) exactly one wins, the other gets
``InvalidJobTransition``; a terminal job never changes again. Every change writes an event, and
the terminal one revokes the job's runner tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from clowder_ml.db.models import (
    Dataset,
    Job,
    JobEvent,
    JobOutput,
    JobToken,
    Permission,
    User,
    utcnow,
)
from clowder_ml.db.session import Database
from clowder_ml.engine.spec import InputRef, JobSpec
from clowder_ml.engine.states import JobState, check_transition
from clowder_ml.errors import (
    InvalidJobTransition,
    NotFound,
    PermissionDenied,
    UnusableContent,
    ValidationFailed,
)
from clowder_ml.registry import lineage, models
from clowder_ml.services import datasets
from clowder_ml.tasks.outputs import Publish
from clowder_ml.tasks.params import TaskParams
from clowder_ml.tasks.registry import BUILTIN_MODELS, TaskDef, TaskRegistry

ID_PREFIX = "job_"


def create(s: Session, owner: User, spec: JobSpec) -> Job:
    """Record a new PENDING job for ``spec`` (with its first event)."""
    job = Job(id=ID_PREFIX + secrets.token_hex(8), owner_id=owner.id, task=spec.task,
              spec=spec.model_dump(mode="json"), state=JobState.PENDING.value)
    s.add(job)
    s.flush()
    s.add(JobEvent(job_id=job.id, state=JobState.PENDING.value, message="job created"))
    lineage.link_inputs(s, job)
    return job


def _pin(s: Session, user: User, item: InputRef) -> InputRef:
    """The input with its dataset named by id and its version fixed (latest when unset).

    A dataset the user cannot read is NotFound, exactly as everywhere else.
    """
    if item.kind == "model":
        mv = models.resolve(s, user, item.ref)
        return item.model_copy(update={
            "ref": f"{models.MODEL_VERSION_PREFIX}{mv.id}", "version": mv.number,
            "mount": item.mount or models.model_of(s, mv).name})
    ds = datasets.resolve(s, user, item.ref)
    version = datasets.get_version(s, ds, item.version)
    if version is None:
        raise UnusableContent(f"Dataset {item.ref!r} has no files yet.",
                              "Upload files to it before running a job on it.")
    if item.kind == "file":
        if not item.path:
            raise ValidationFailed("A file input needs 'path'.")
        datasets.get_file(s, ds, item.path, version.number)
    return item.model_copy(update={"ref": ds.id, "version": version.number,
                                   "mount": item.mount or ds.name})


def _agree_on_workers(task: TaskDef, spec: JobSpec, params: TaskParams
                      ) -> tuple[JobSpec, TaskParams]:
    """One number of training workers per job: ``resources.workers`` (what the engine
    reserves, see ``Resources``, and what the runner tells the task).

    A task that trains on several Ray Train workers names the param that mirrors it
    (``JOB_WORKERS_PARAM`` on its params model): when only one of the two is given the other
    is set to it, when both are given they must agree, and the params are validated again
    with it. Any other task runs in its job's one process and refuses ``workers > 1`` (the
    entrypoint of such a job reserves no CPUs).
    """
    mirror: str | None = getattr(task.params, "JOB_WORKERS_PARAM", None)
    r = spec.resources
    if mirror is None:
        if r.workers > 1:
            raise ValidationFailed(f"Task {task.name!r} runs in one process; it cannot use "
                                   f"{r.workers} workers.",
                                   "Leave workers at 1 and ask for more CPUs instead.")
        return spec, params
    given = mirror in spec.params
    value = int(getattr(params, mirror))
    explicit = "workers" in r.model_fields_set
    if explicit and given and value != r.workers:
        raise ValidationFailed(f"The {mirror} param ({value}) and the job's resources.workers "
                               f"({r.workers}) disagree.",
                               "Give the number of workers once: resources.workers or "
                               "the param (the CLI's --workers sets the param).")
    workers = r.workers if explicit else value
    if value == workers and r.workers == workers:
        return spec, params
    new_params = {**spec.params, mirror: workers} if value != workers else spec.params
    spec = spec.model_copy(update={"params": new_params,
                                   "resources": r.model_copy(update={"workers": workers})})
    return spec, task.parse_params(new_params)


def _agree_on_gpus(task: TaskDef, spec: JobSpec, params: TaskParams
                   ) -> tuple[JobSpec, TaskParams]:
    """A task that can train on a GPU (a ``use_gpu`` param) gets one only when the job
    reserves one: when only one of the two is given the other follows it (``use_gpu=true``
    reserves 1 GPU; reserved GPUs set ``use_gpu``), and when both are given and disagree the
    job is refused, instead of silently training on the CPU or holding an idle GPU."""
    if "use_gpu" not in type(params).model_fields:
        return spec, params
    r = spec.resources
    given = "use_gpu" in spec.params
    explicit = "gpus" in r.model_fields_set
    use_gpu = bool(params.model_dump(include={"use_gpu"})["use_gpu"])
    if given and explicit and use_gpu != (r.gpus > 0):
        raise ValidationFailed(
            f"use_gpu={str(use_gpu).lower()} disagrees with the job's resources.gpus "
            f"({r.gpus:g}).",
            "Ask for a GPU once: --gpus N (resources.gpus) or --param use_gpu=true.")
    if given and use_gpu and not explicit:
        return spec.model_copy(update={"resources": r.model_copy(update={"gpus": 1.0})}), params
    if not given and r.gpus > 0:
        new_params = {**spec.params, "use_gpu": True}
        return spec.model_copy(update={"params": new_params}), task.parse_params(new_params)
    return spec, params


def _check_can_add_predictions(s: Session, user: User, pinned: list[InputRef]) -> None:
    """Predictions are added to the input dataset as a new version: refuse the job now,
    not after it ran, when the user cannot write to that dataset."""
    item = next((i for i in pinned if i.kind == "dataset"), None)
    if item is None:
        raise ValidationFailed("This job adds predictions to a dataset, and it has none.",
                               "Name the dataset with --dataset NAME.")
    ds = s.get(Dataset, item.ref)
    if ds is None or datasets.permission_of(s, user, ds) != Permission.WRITE:
        raise PermissionDenied("Predictions are added to the dataset as a new version, and "
                               "you have read-only access to it.",
                               "Copy the data to a dataset of yours, or ask for write access.")


def submit(s: Session, user: User, spec: JobSpec, registry: TaskRegistry) -> Job:
    """Validate ``spec`` (task, params, inputs the user can read; write access to the dataset
    when the task adds predictions to it) and record a PENDING job.

    Dataset inputs are pinned to a version now, so the job reads exactly what the user saw
    when submitting, whatever is uploaded later; params are recorded with the task's
    defaults filled in, so later changes to the defaults do not change what it runs. The
    task's workers param and ``resources.workers`` are made to agree
    (:func:`_agree_on_workers`).
    """
    task = registry.get(spec.task)
    params = task.parse_params(spec.params)
    spec, params = _agree_on_workers(task, spec, params)
    spec, params = _agree_on_gpus(task, spec, params)
    refs = [InputRef(kind="model", ref=str(value), mount=name) for name in task.model_params
            if (value := getattr(params, name, None)) and value not in BUILTIN_MODELS]
    pinned = [_pin(s, user, item) for item in [*spec.inputs, *refs]]
    n = sum(1 for item in pinned if item.kind == "dataset")
    if n < task.min_datasets or (task.max_datasets is not None and n > task.max_datasets):
        want = (str(task.min_datasets) if task.min_datasets == task.max_datasets
                else f"at least {task.min_datasets}")
        raise ValidationFailed(f"Task {task.name!r} takes {want} dataset input(s); got {n}.",
                               "Name the dataset with --dataset NAME.")
    if params.publishes() is Publish.PREDICTIONS:
        _check_can_add_predictions(s, user, pinned)
    # Params are recorded whole, defaults filled in: a reproduce (or a retry after an
    # upgrade) runs with what this job ran with, not with whatever the defaults are then.
    full = params.model_dump(mode="json", by_alias=True)
    return create(s, user, spec.model_copy(update={"inputs": pinned, "params": full}))


def get(s: Session, user: User, job_id: str) -> Job:
    """The job if ``user`` owns it (or is an admin); otherwise NotFound, as if it did not
    exist."""
    job = s.get(Job, job_id)
    if job is None or not (user.is_admin or job.owner_id == user.id):
        raise NotFound(f"Job {job_id!r} not found.", "List yours with `clowder-ml jobs ls`.")
    return job


def list_visible(s: Session, user: User, state: JobState | None = None) -> list[Job]:
    q = select(Job).order_by(Job.created_at)
    if not user.is_admin:
        q = q.where(Job.owner_id == user.id)
    if state is not None:
        q = q.where(Job.state == state.value)
    return list(s.scalars(q))


def active(s: Session) -> list[Job]:
    """Jobs Ray has (SUBMITTED or RUNNING), oldest first."""
    return list(s.scalars(select(Job).where(Job.state.in_(
        (JobState.SUBMITTED.value, JobState.RUNNING.value))).order_by(Job.created_at)))


def pending(s: Session) -> list[Job]:
    """Jobs waiting to be handed to Ray, in submission order (the queue)."""
    return list(s.scalars(select(Job).where(Job.state == JobState.PENDING.value)
                          .order_by(Job.created_at, Job.id)))


def queue_position(s: Session, job: Job) -> int | None:
    """1-based place of a PENDING job among all pending jobs; None for other states."""
    if job.state != JobState.PENDING.value:
        return None
    ahead = s.scalar(select(func.count()).select_from(Job).where(
        Job.state == JobState.PENDING.value, Job.created_at < job.created_at))
    return int(ahead or 0) + 1


def request_cancel(db: Database, user: User, job_id: str) -> Job:
    """Cancel a job: a PENDING one at once; a submitted or running one is flagged, and the
    dispatcher stops it on Ray and records CANCELLED when Ray reports it stopped.

    Cancelling a terminal job is a no-op that returns it (idempotent for retrying clients).
    """
    with db.session() as s:
        job = get(s, user, job_id)
        state = JobState(job.state)
        if state.is_terminal() or job.cancel_requested:
            s.expunge(job)
            return job
        if state is not JobState.PENDING:
            job.cancel_requested = True
            s.add(JobEvent(job_id=job.id, state=job.state,
                           message=f"cancel requested by {user.username}"))
            s.flush()
            s.refresh(job)
            s.expunge(job)
            return job
    try:
        return transition(db, job_id, JobState.CANCELLED, f"cancelled by {user.username}",
                          reason=f"Cancelled by {user.username} before it started.")
    except InvalidJobTransition:  # the dispatcher submitted it meanwhile: flag it instead
        return request_cancel(db, user, job_id)


def add_event(s: Session, job: Job, message: str) -> None:
    """A notable moment that is not a state change (shown in the job's event list)."""
    s.add(JobEvent(job_id=job.id, state=job.state, message=message[:2000]))


def output_digests(s: Session) -> set[str]:
    """Digests of every stored job output (kept by the blob garbage collector)."""
    return set(s.scalars(select(JobOutput.sha256).distinct()))


def events(s: Session, job: Job) -> list[JobEvent]:
    return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                          .order_by(JobEvent.id)))


def transition(db: Database, job_id: str, new: JobState, message: str, *,
               reason: str | None = None, result: Mapping[str, Any] | None = None,
               extra: Mapping[str, Any] | None = None) -> Job:
    """Move a job to ``new`` if the state machine allows it from its current state.

    Raises ``InvalidJobTransition`` when it does not, including when a concurrent change
    got there first; ``NotFound`` for an unknown job.
    """
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"Job {job_id!r} not found.")
        current = JobState(job.state)
        check_transition(current, new)
        now = utcnow()
        values: dict[str, Any] = {"state": new.value, "updated_at": now}
        if reason is not None:
            values["reason"] = reason
        if result is not None:
            values["result"] = dict(result)
        if new.is_terminal():
            values["ended_at"] = now
        if new is not JobState.PENDING:
            values["waiting_for"] = None
        values.update(extra or {})
        if current is not JobState.PENDING and new is JobState.PENDING:
            values["attempt"] = job.attempt + 1  # a retry
        # Compare-and-set: only if nobody changed the state since we read it.
        res = s.execute(update(Job).where(Job.id == job_id, Job.state == current.value)
                        .values(**values))
        if res.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidJobTransition(
                f"Job {job_id!r} changed state concurrently; {new.value} was not applied.")
        s.add(JobEvent(job_id=job_id, state=new.value, message=message))
        if new.is_terminal() or new is JobState.PENDING:
            # The runner's credential ends with its attempt (a retry gets a new one).
            s.execute(update(JobToken).where(JobToken.job_id == job_id,
                                             JobToken.revoked_at.is_(None))
                      .values(revoked_at=now))
        s.flush()
        s.expire(job)
        s.refresh(job)
        s.expunge(job)
        return job
