"""The job engine's port over the database: :class:`DbJobStore` is the ``engine.port.JobStore``
the server hands its dispatcher.

Each call is one transaction through the jobs services (``jobs.transition`` for every state
change, ``job_tokens`` for the runner's credential, ``job_runs`` for the log), so the engine
follows the same rules as every other writer and needs no database code of its own.
"""

from __future__ import annotations

from sqlalchemy import update

from clowder_ml.db.models import Job
from clowder_ml.db.session import Database
from clowder_ml.engine.port import JobRecord
from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState
from clowder_ml.errors import NotFound
from clowder_ml.services import job_runs, job_tokens, jobs
from clowder_ml.settings import Settings


def _record(job: Job) -> JobRecord:
    return JobRecord(
        id=job.id, owner_id=job.owner_id, state=JobState(job.state),
        spec=JobSpec.model_validate(job.spec), attempt=job.attempt,
        ray_submission_id=job.ray_submission_id, cancel_requested=job.cancel_requested,
        started_at=job.started_at, waiting_for=job.waiting_for, log_size=job.log_size)


class DbJobStore:
    """Jobs as the dispatcher sees them, kept in the server's database."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def pending(self) -> list[JobRecord]:
        with self.db.session() as s:
            return [_record(j) for j in jobs.pending(s)]

    def active(self) -> list[JobRecord]:
        with self.db.session() as s:
            return [_record(j) for j in jobs.active(s)]

    def state(self, job_id: str) -> JobState | None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            return JobState(job.state) if job is not None else None

    def transition(self, job_id: str, new: JobState, message: str, *,
                   reason: str | None = None) -> None:
        jobs.transition(self.db, job_id, new, message, reason=reason)

    def add_event(self, job_id: str, message: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                jobs.add_event(s, job, message)

    def set_waiting(self, job_id: str, message: str | None) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None and not JobState(job.state).is_terminal():
                job.waiting_for = message

    def set_waiting_all_pending(self, message: str) -> None:
        with self.db.session() as s:
            s.execute(update(Job).where(Job.state == JobState.PENDING.value)
                      .values(waiting_for=message))

    def claim_submission(self, job_id: str, submission_id: str, token_ttl_s: float
                         ) -> str | None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.state != JobState.PENDING.value:
                return None
            token = job_tokens.issue(s, job, token_ttl_s)
            job.ray_submission_id = submission_id
            return token

    def append_log(self, job_id: str, text: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"Job {job_id!r} not found.")
            s.expunge(job)
        job_runs.append_log(self.settings, self.db, job, text.encode("utf-8", "replace"))
