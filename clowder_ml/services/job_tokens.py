"""Job-scoped tokens: the runner's only credential.

A job token is minted for one attempt of one job and handed to the runner through its
environment. It resolves to the job, never to a user, so none of the user endpoints accept
it (they only know ``cml_`` tokens); the runner endpoints accept only it. It stops working
when the attempt ends (``jobs.transition`` revokes it) or at its expiry, whichever is first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy.orm import Session

from clowder_ml.db.models import Job, JobToken, utcnow
from clowder_ml.engine.states import JobState
from clowder_ml.errors import AuthenticationRequired

PREFIX = "cmlj_"
# Past the job's own timeout: room for queueing before it starts and for the final upload.
EXPIRY_SLACK = timedelta(hours=24)


def issue(s: Session, job: Job, timeout_s: float) -> str:
    """Mint a token for ``job``'s current attempt; returns the plaintext (stored hashed)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    s.add(JobToken(id=token_id, job_id=job.id,
                   secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
                   expires_at=utcnow() + timedelta(seconds=timeout_s) + EXPIRY_SLACK))
    s.flush()
    return f"{PREFIX}{token_id}_{secret}"


def resolve(s: Session, plaintext: str) -> Job:
    """The job a live token belongs to; ``AuthenticationRequired`` for anything else
    (unknown, malformed, revoked, expired, or the job already ended)."""
    refused = AuthenticationRequired("Invalid, expired or revoked job token.",
                                     "Job tokens work only while their job runs.")
    if not plaintext.startswith(PREFIX):
        raise refused
    token_id, _, secret = plaintext[len(PREFIX):].partition("_")
    row = s.get(JobToken, token_id) if token_id and secret else None
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise refused
    if not hmac.compare_digest(row.secret_hash, hashlib.sha256(secret.encode()).hexdigest()):
        raise refused
    job = s.get(Job, row.job_id)
    if job is None or JobState(job.state).is_terminal():
        raise refused
    return job
