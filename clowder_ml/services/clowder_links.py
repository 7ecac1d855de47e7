"""What this server remembers about Clowder: whom it runs jobs for, and which extraction
requests it has taken (so a redelivered message never runs a job twice).

A Clowder user gets a local account of their own the first time they run an extractor,
named after their e-mail with a digest of their Clowder identity appended, and linked to
that identity by a :class:`ClowderAccount` row: the link, not the name, decides the
account, so no Clowder user can land on an existing local account (an ``admin`` included).
The account has a random password nobody knows; it is reached only through Clowder.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clowder_ml.db.models import ClowderAccount, ClowderRequest, User, utcnow
from clowder_ml.db.session import Database
from clowder_ml.errors import NotFound
from clowder_ml.services import users

_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def _username(clowder_url: str, clowder_user_id: str, email: str) -> str:
    """``clowder-<email's local part>-<8 hex of the identity>``, within the username rules."""
    local = _UNSAFE.sub("-", email.split("@", 1)[0].lower()).strip("-._") or "user"
    digest = hashlib.sha256(f"{clowder_url}\n{clowder_user_id}".encode()).hexdigest()[:8]
    return f"clowder-{local[:40]}-{digest}"


def account_user(db: Database, clowder_url: str, clowder_user_id: str, email: str) -> User:
    """The local user that runs jobs for this Clowder user, created on first use (safe
    against a concurrent first use by another listener). Detached from any session."""
    for _ in range(2):
        with db.session() as s:
            user = s.scalar(select(User).join(ClowderAccount,
                                              ClowderAccount.user_id == User.id)
                            .where(ClowderAccount.clowder_url == clowder_url,
                                   ClowderAccount.clowder_user_id == clowder_user_id))
            if user is not None:
                s.expunge(user)
                return user
        try:
            with db.session() as s:
                user = users.create_user(s, _username(clowder_url, clowder_user_id, email),
                                         secrets.token_urlsafe(32))
                s.add(ClowderAccount(clowder_url=clowder_url, clowder_user_id=clowder_user_id,
                                     email=email, user_id=user.id))
                s.flush()
                s.expunge(user)
                return user
        except IntegrityError:  # another listener linked them first: read theirs
            continue
    raise RuntimeError("could not link the Clowder user")  # pragma: no cover


def take_request(db: Database, clowder_url: str, clowder_job_id: str, extractor: str,
                 clowder_dataset_id: str) -> ClowderRequest:
    """The record of this extraction request: a new one, or the one an earlier delivery of
    the same message made (its ``job_id``/``written_back``/``done`` say how far it got)."""
    for _ in range(2):
        with db.session() as s:
            found = _find(s, clowder_url, clowder_job_id)
            if found is not None:
                s.expunge(found)
                return found
        try:
            with db.session() as s:
                req = ClowderRequest(clowder_url=clowder_url, clowder_job_id=clowder_job_id,
                                     extractor=extractor,
                                     clowder_dataset_id=clowder_dataset_id, written_back=[])
                s.add(req)
                s.flush()
                s.refresh(req)
                s.expunge(req)
                return req
        except IntegrityError:  # a concurrent delivery recorded it first
            continue
    raise RuntimeError("could not record the Clowder request")  # pragma: no cover


def _find(s: Session, clowder_url: str, clowder_job_id: str) -> ClowderRequest | None:
    return s.scalar(select(ClowderRequest).where(
        ClowderRequest.clowder_url == clowder_url,
        ClowderRequest.clowder_job_id == clowder_job_id))


def _update(db: Database, request_id: int, **changes: object) -> ClowderRequest:
    with db.session() as s:
        req = s.get(ClowderRequest, request_id)
        if req is None:
            raise NotFound(f"Clowder request {request_id} not found.")
        for key, value in changes.items():
            setattr(req, key, value)
        req.updated_at = utcnow()
        s.flush()
        s.refresh(req)
        s.expunge(req)
        return req


def attach_job(db: Database, request_id: int, job_id: str) -> ClowderRequest:
    """Record the job started for the request (before anything else can fail)."""
    return _update(db, request_id, job_id=job_id)


def mark_written(db: Database, request_id: int, item: str) -> ClowderRequest:
    """Record that result ``item`` (e.g. ``"predictions"``) is now in Clowder."""
    with db.session() as s:
        req = s.get(ClowderRequest, request_id)
        done = list(req.written_back) if req is not None else []
    return _update(db, request_id, written_back=[*done, item] if item not in done else done)


def mark_done(db: Database, request_id: int, status: str, message: str) -> ClowderRequest:
    """The request is answered with ``status`` (``SUCCEEDED``/``ERROR``) and ``message``: a
    redelivery only repeats them."""
    return _update(db, request_id, done=True, final_status=status, final_message=message)


def acquire_lease(db: Database, request_id: int, owner: str, ttl_s: float) -> bool:
    """Make ``owner`` (one delivery) the only one working on the request for ``ttl_s``
    seconds, if nobody else holds a lease that is still running. One conditional UPDATE, so
    two deliveries racing for it cannot both win, on SQLite or PostgreSQL."""
    now = utcnow()
    with db.session() as s:
        got = s.execute(
            update(ClowderRequest)
            .where(ClowderRequest.id == request_id,
                   or_(ClowderRequest.lease_owner.is_(None),
                       ClowderRequest.lease_owner == owner,
                       ClowderRequest.lease_until < now))
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=ttl_s)))
        return bool(got.rowcount)  # type: ignore[attr-defined]


def renew_lease(db: Database, request_id: int, owner: str, ttl_s: float) -> bool:
    """Extend ``owner``'s lease; False when it is no longer theirs (it ran out and another
    delivery took the request over)."""
    with db.session() as s:
        got = s.execute(
            update(ClowderRequest)
            .where(ClowderRequest.id == request_id, ClowderRequest.lease_owner == owner)
            .values(lease_until=utcnow() + timedelta(seconds=ttl_s)))
        return bool(got.rowcount)  # type: ignore[attr-defined]


def release_lease(db: Database, request_id: int, owner: str) -> None:
    """Give the request up at once (a listener stopping), if ``owner`` still holds it."""
    with db.session() as s:
        s.execute(update(ClowderRequest)
                  .where(ClowderRequest.id == request_id, ClowderRequest.lease_owner == owner)
                  .values(lease_owner=None, lease_until=None))


def get_request(db: Database, request_id: int) -> ClowderRequest:
    """The request's record as it is now (detached)."""
    with db.session() as s:
        req = s.get(ClowderRequest, request_id)
        if req is None:
            raise NotFound(f"Clowder request {request_id} not found.")
        s.expunge(req)
        return req
