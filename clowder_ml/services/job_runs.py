"""What the runner reads and writes through the API, on behalf of one job.

Reads: the job's pinned inputs (manifests) and the blobs in them, nothing else. Writes: the
"started" mark, events, metrics, progress, the log, output files, and the final status. All of
it is safe to replay, because a runner retries a batch whose answer it did not get.

Logs are files (``<data>/jobs/<id>/log``), written at the byte offset the runner sends, so a
replayed batch overwrites itself instead of appearing twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clowder_ml.db.models import (
    Dataset,
    DatasetVersion,
    Job,
    JobEvent,
    JobMetric,
    JobOutput,
    ModelFile,
    ModelVersion,
    User,
    VersionFile,
    utcnow,
)
from clowder_ml.db.session import Database
from clowder_ml.engine.states import JobState
from clowder_ml.errors import ClowderMLError, InvalidJobTransition, NotFound, StorageFull
from clowder_ml.registry import models, publish
from clowder_ml.services import jobs
from clowder_ml.services.job_views import JobOut, RunnerFile, RunnerInput, RunnerJob
from clowder_ml.services.paths import normalize_path
from clowder_ml.settings import Settings
from clowder_ml.storage.blobstore import BlobInfo

if TYPE_CHECKING:
    from clowder_ml.services.platform import Platform

MAX_LOG_BYTES = 64 << 20  # per job; beyond this the log is cut (the runner keeps going)
LOG_TAIL_LINES = 40


# inputs --------------------------------------------------------------------------------------

def _version(s: Session, item: dict[str, Any]) -> DatasetVersion:
    dataset_id, number = item["ref"], int(item["version"])
    v = s.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id,
                                              DatasetVersion.number == number))
    if v is None or s.get(Dataset, dataset_id) is None:
        name = item.get("mount") or dataset_id
        raise NotFound(f"Input dataset {name!r} ({dataset_id}) version {number} no longer "
                       "exists.", "It was deleted after the job was submitted.")
    return v


def _model_input(s: Session, item: dict[str, Any]) -> RunnerInput:
    version = s.get(ModelVersion, models.model_version_id(item["ref"]))
    if version is None:
        raise NotFound(f"Input model {item.get('mount')!r} version {item['version']} no "
                       "longer exists.", "It was deleted after the job was submitted.")
    return RunnerInput(
        kind="model", ref=item["ref"], version=item["version"], mount=item.get("mount"),
        name=models.ref_of(s, version),
        files=[RunnerFile(path=f.path, sha256=f.sha256, size=f.size)
               for f in models.files(s, version)])


def runner_job(s: Session, job: Job) -> RunnerJob:
    """The spec and every input's file manifest (path, sha256, size)."""
    inputs: list[RunnerInput] = []
    for item in job.spec.get("inputs", []):
        if item["kind"] == "model":
            inputs.append(_model_input(s, item))
            continue
        v = _version(s, item)
        q = select(VersionFile).where(VersionFile.version_id == v.id)
        if item["kind"] == "file":
            q = q.where(VersionFile.path == item["path"])
        rows = s.scalars(q.order_by(VersionFile.path))
        ds = s.get(Dataset, item["ref"])
        owner = s.get(User, ds.owner_id) if ds else None
        inputs.append(RunnerInput(
            kind=item["kind"], ref=item["ref"], version=item["version"], mount=item.get("mount"),
            name=f"{owner.username}:{ds.name}" if ds and owner else item["ref"],
            files=[RunnerFile(path=r.path, sha256=r.sha256, size=r.size) for r in rows]))
    return RunnerJob(id=job.id, task=job.task, attempt=job.attempt, spec=job.spec,
                     inputs=inputs)


def can_read_blob(s: Session, job: Job, sha256: str) -> bool:
    """Whether ``sha256`` is the content of one of the job's input files."""
    for item in job.spec.get("inputs", []):
        if item["kind"] == "model":
            hit = s.scalar(select(ModelFile.path).where(
                ModelFile.version_id == models.model_version_id(item["ref"]),
                ModelFile.sha256 == sha256).limit(1))
            if hit is not None:
                return True
            continue
        v = s.scalar(select(DatasetVersion.id).join(Dataset).where(
            Dataset.id == item["ref"], DatasetVersion.number == int(item["version"])))
        if v is None:
            continue
        q = select(VersionFile.path).where(VersionFile.version_id == v,
                                           VersionFile.sha256 == sha256)
        if item["kind"] == "file":
            q = q.where(VersionFile.path == item["path"])
        if s.scalar(q.limit(1)) is not None:
            return True
    return False


# reports -------------------------------------------------------------------------------------

def log_path(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id / "log"


def _write_log(settings: Settings, db: Database, job: Job, offset: int, data: bytes) -> int:
    """Place ``data`` at ``offset`` of the job's log; returns the log's size afterwards."""
    size = job.log_size
    if offset > size:  # a gap would be garbage: ask the runner to resend from ``size``
        return size
    end = offset + len(data)
    if end <= size or not data:
        return size  # a replay of what we already have
    if end > MAX_LOG_BYTES:
        data = data[: max(0, MAX_LOG_BYTES - offset)]
        end = offset + len(data)
        if end <= size:
            return size
    path = log_path(settings, job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.pwrite(fd, data, offset)
    except OSError as exc:
        raise StorageFull("The server could not store the job's log.", str(exc)) from exc
    finally:
        os.close(fd)
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job.id, Job.log_size == size)
                  .values(log_size=end))
    return end


def append_log(settings: Settings, db: Database, job: Job, data: bytes) -> int:
    """Add ``data`` at the end of the job's log (for the server's own notes)."""
    return _write_log(settings, db, job, job.log_size, data)


def _mark_started(db: Database, job: Job, started_at: datetime) -> None:
    """SUBMITTED -> RUNNING (from PENDING too, when the runner beat the dispatcher's write)."""
    state = JobState(job.state)
    try:
        if state is JobState.PENDING:
            jobs.transition(db, job.id, JobState.SUBMITTED, "submitted (the runner started)")
            state = JobState.SUBMITTED
        if state is JobState.SUBMITTED:
            jobs.transition(db, job.id, JobState.RUNNING, "runner started",
                            extra={"started_at": started_at})
    except InvalidJobTransition:
        pass  # somebody else moved it (already running, or cancelled): nothing to do


@dataclass(frozen=True)
class Report:
    """One batch of the runner's reports (every part optional; see ``record_report``)."""

    started_at: datetime | None = None
    events: Sequence[str] = ()
    metrics: Sequence[tuple[int, str, float | None]] = ()  # (step, name, value)
    log: tuple[int, bytes] | None = None  # (offset the runner writes at, bytes)
    progress: dict[str, Any] | None = None


def record_report(settings: Settings, db: Database, job: Job, report: Report
                  ) -> tuple[bool, int]:
    """Apply one batch; returns (cancel requested, log bytes accepted so far)."""
    if report.started_at is not None:
        _mark_started(db, job, report.started_at)
    log_size = job.log_size
    if report.log is not None:
        log_size = _write_log(settings, db, job, *report.log)
    with db.session() as s:
        state = s.scalar(select(Job.state).where(Job.id == job.id)) or job.state
        for message in report.events:
            s.add(JobEvent(job_id=job.id, state=state, message=message))
        s.add_all(JobMetric(job_id=job.id, step=step, name=name, value=value)
                  for step, name, value in report.metrics)
        if report.progress is not None:
            s.execute(update(Job).where(Job.id == job.id)
                      .values(progress=report.progress, updated_at=utcnow()))
        cancel = bool(s.scalar(select(Job.cancel_requested).where(Job.id == job.id)))
    return cancel, log_size


def record_output(db: Database, job: Job, path: str, info: BlobInfo) -> JobOutput:
    """Record a stored blob as the job's output ``path`` (replacing an earlier upload)."""
    p = normalize_path(path)
    with db.session() as s:
        row = s.get(JobOutput, (job.id, p))
        if row is None:
            row = JobOutput(job_id=job.id, path=p, sha256=info.sha256, size=info.size)
            s.add(row)
        else:
            row.sha256, row.size, row.created_at = info.sha256, info.size, utcnow()
        s.flush()
        s.expunge(row)
    return row


def finish(platform: Platform, job: Job, status: Literal["succeeded", "failed"],
           result: dict[str, Any] | None = None, reason: str | None = None) -> Job:
    """The runner's final word: SUCCEEDED with its result, or FAILED with its reason.

    On success the job's outputs are published first (:mod:`clowder_ml.registry.publish`:
    register the model, add predictions to a dataset); if that fails the job fails with its
    message. Publishing is idempotent, so a runner retrying this call after a lost answer
    publishes once.
    """
    db = platform.db
    if status == "succeeded":
        result = dict(result or {})
        try:
            with db.session() as s:
                row = s.get(Job, job.id)
                assert row is not None
                result = publish.publish(s, platform, row, result)
        except ClowderMLError as exc:
            return jobs.transition(db, job.id, JobState.FAILED,
                                   f"publishing failed: {exc.message}",
                                   reason=exc.message, result=result)
        return jobs.transition(db, job.id, JobState.SUCCEEDED, "task finished",
                               result=result)
    reason = (reason or "The task failed.").strip().splitlines()[0][:500]
    return jobs.transition(platform.db, job.id, JobState.FAILED, f"task failed: {reason}",
                           reason=reason)


# reading -------------------------------------------------------------------------------------

def read_log(settings: Settings, job_id: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
    """Up to ``limit`` bytes of the job's log from ``offset`` (empty when none yet)."""
    try:
        with open(log_path(settings, job_id), "rb") as f:
            f.seek(offset)
            return f.read(limit)
    except FileNotFoundError:
        return b""


def log_tail(settings: Settings, job: Job, lines: int = LOG_TAIL_LINES) -> str:
    start = max(0, job.log_size - 64 * 1024)
    text = read_log(settings, job.id, start, job.log_size - start).decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def describe(s: Session, settings: Settings, job: Job) -> JobOut:
    """The job as the API shows it (the log tail only for a failed job)."""
    owner = s.get(User, job.owner_id)
    return JobOut(
        id=job.id, task=job.task, owner=owner.username if owner else "?", state=job.state,
        reason=job.reason, waiting_for=job.waiting_for,
        queue_position=jobs.queue_position(s, job), attempt=job.attempt,
        cancel_requested=job.cancel_requested, spec=job.spec, progress=job.progress,
        result=job.result,
        log_tail=log_tail(settings, job) if job.state == JobState.FAILED.value else None,
        created_at=job.created_at, started_at=job.started_at, ended_at=job.ended_at,
        updated_at=job.updated_at)


def metrics(s: Session, job: Job, name: str | None, after: int, limit: int = 10_000
            ) -> list[JobMetric]:
    q = select(JobMetric).where(JobMetric.job_id == job.id, JobMetric.id > after)
    if name:
        q = q.where(JobMetric.name == name)
    return list(s.scalars(q.order_by(JobMetric.id).limit(limit)))


def outputs(s: Session, job: Job) -> list[JobOutput]:
    return list(s.scalars(select(JobOutput).where(JobOutput.job_id == job.id)
                          .order_by(JobOutput.path)))


def get_output(s: Session, job: Job, path: str) -> JobOutput:
    row = s.get(JobOutput, (job.id, normalize_path(path)))
    if row is None:
        raise NotFound(f"Job {job.id} has no output {path!r}.")
    return row


