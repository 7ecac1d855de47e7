"""Jobs in the database: creation, visibility, and the only way a job's state changes.

``transition`` is a compare-and-set on the current state: of two concurrent changes (say the
Ray watcher's SUCCEEDED and a user's CANCELLED) exactly one wins, the other gets
``InvalidJobTransition``; a terminal job never changes again. Every change writes an event.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clowder_ml.db.models import Job, JobEvent, User, utcnow
from clowder_ml.db.session import Database
from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState, check_transition
from clowder_ml.errors import InvalidJobTransition, NotFound

ID_PREFIX = "job_"


def create(s: Session, owner: User, spec: JobSpec) -> Job:
    """Record a new PENDING job for ``spec`` (with its first event)."""
    job = Job(id=ID_PREFIX + secrets.token_hex(8), owner_id=owner.id, task=spec.task,
              spec=spec.model_dump(mode="json"), state=JobState.PENDING.value)
    s.add(job)
    s.flush()
    s.add(JobEvent(job_id=job.id, state=JobState.PENDING.value, message="job created"))
    return job


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


def events(s: Session, job: Job) -> list[JobEvent]:
    return list(s.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                          .order_by(JobEvent.id)))


def transition(db: Database, job_id: str, new: JobState, message: str, *,
               reason: str | None = None, result: Mapping[str, Any] | None = None) -> Job:
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
        if current is not JobState.PENDING and new is JobState.PENDING:
            values["attempt"] = job.attempt + 1  # a retry
        # Compare-and-set: only if nobody changed the state since we read it.
        res = s.execute(update(Job).where(Job.id == job_id, Job.state == current.value)
                        .values(**values))
        if res.rowcount != 1:  # type: ignore[attr-defined]
            raise InvalidJobTransition(
                f"Job {job_id!r} changed state concurrently; {new.value} was not applied.")
        s.add(JobEvent(job_id=job_id, state=new.value, message=message))
        s.flush()
        s.expire(job)
        s.refresh(job)
        s.expunge(job)
        return job
