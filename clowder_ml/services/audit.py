"""The audit trail: security-relevant actions, who did them, when, from where, how it went.

Recorded (``Action``): log-ins (succeeded, failed, or refused by the throttle), API tokens
created and revoked, sessions ended, sharing granted and revoked, users created, log-in
failures cleared by an administrator. Each record is a row of ``audit_events`` (admins
query it: ``GET /api/v1/audit``, ``clowder-ml audit``) and one structured log line on the
``clowder_ml.audit`` logger.

A record never holds a secret: no password, no token, only a token's id. For a log-in the
actor is the name that was tried, existing or not (as in Keycloak's login events); a name
longer than any real one is cut.

Records are written in the caller's session, so an action and its record commit together;
the ones that must outlive a refused action (a failed log-in) get a session of their own.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from clowder_ml.db.models import AuditEvent, User, utcnow
from clowder_ml.errors import ValidationFailed
from clowder_ml.services.users import require_admin

log = logging.getLogger("clowder_ml.audit")

MAX_PAGE = 500
ACTION_FILTER_RE = re.compile(r"^[a-z][a-z_.]{0,31}$")


class Action(enum.StrEnum):
    LOGIN = "login"
    LOGIN_UNLOCKED = "login.unlocked"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"
    SESSION_ENDED = "session.ended"
    SHARE_GRANTED = "share.granted"
    SHARE_REVOKED = "share.revoked"
    USER_CREATED = "user.created"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    REFUSED = "refused"  # not even tried (the log-in throttle)


@dataclass(frozen=True)
class AuditContext:
    """Where an action came from: the client's address (as the API determined it, proxies
    considered) and the request's id (as in the request log line)."""

    client: str | None = None
    request_id: str | None = None


# Actions the server takes on its own (the first admin at start-up).
SERVER = AuditContext(client=None, request_id=None)
SERVER_ACTOR = "(server)"


def record(s: Session, ctx: AuditContext, action: Action, outcome: Outcome, *,
           actor: User | str, target: str = "", detail: dict[str, Any] | None = None,
           ) -> AuditEvent:
    """Add one audit record to the session and write its log line."""
    name = actor.username if isinstance(actor, User) else actor
    event = AuditEvent(
        at=utcnow(), action=action.value, outcome=outcome.value, actor=name[:64],
        actor_id=actor.id if isinstance(actor, User) else None,
        client=ctx.client[:64] if ctx.client else None,
        target=target[:255], detail=dict(detail or {}), request_id=ctx.request_id)
    s.add(event)
    log.info("audit", extra={
        "action": event.action, "outcome": event.outcome, "actor": event.actor,
        "client": event.client, "target": event.target, "detail": event.detail,
        "request_id": event.request_id})
    return event


def record_share(s: Session, ctx: AuditContext, actor: User, resource: str, username: str,
                 permission: str | None) -> AuditEvent:
    """A share of ``resource`` (``dataset:<id>``, ``model:<id>``) with ``username``
    granted or changed (``permission``), or revoked (None)."""
    if permission is None:
        return record(s, ctx, Action.SHARE_REVOKED, Outcome.SUCCESS, actor=actor,
                      target=resource, detail={"user": username})
    return record(s, ctx, Action.SHARE_GRANTED, Outcome.SUCCESS, actor=actor, target=resource,
                  detail={"user": username, "permission": permission})


@dataclass(frozen=True)
class AuditQuery:
    """Filters for :func:`query`; all optional. ``action`` also matches its sub-actions
    (``share`` finds ``share.granted`` and ``share.revoked``)."""

    action: str | None = None
    actor: str | None = None
    outcome: Outcome | None = None
    client: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int = 100


def query(s: Session, viewer: User, q: AuditQuery) -> list[AuditEvent]:
    """Records matching ``q``, newest first; admins only. Page with ``before_id`` (the
    last id of the previous page)."""
    require_admin(viewer)
    if not 1 <= q.limit <= MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}.")
    for name, text in (("actor", q.actor), ("client", q.client)):
        if text and "\x00" in text:
            raise ValidationFailed(f"{name} contains a NUL (\\x00) character.")
    since, until = _utc(q.since), _utc(q.until)
    stmt = select(AuditEvent)
    if q.action:
        if not ACTION_FILTER_RE.match(q.action):
            raise ValidationFailed(f"Unknown action {q.action!r}.",
                                   f"Actions: {', '.join(a.value for a in Action)}.")
        stmt = stmt.where(or_(AuditEvent.action == q.action,
                              AuditEvent.action.startswith(q.action + ".", autoescape=True)))
    if q.actor:
        stmt = stmt.where(AuditEvent.actor == q.actor)
    if q.outcome:
        stmt = stmt.where(AuditEvent.outcome == q.outcome.value)
    if q.client:
        stmt = stmt.where(AuditEvent.client == q.client)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    if q.before_id is not None:
        stmt = stmt.where(AuditEvent.id < q.before_id)
    return list(s.scalars(stmt.order_by(AuditEvent.id.desc()).limit(q.limit)))


def _utc(value: datetime | None) -> datetime | None:
    """``value`` in UTC (a time without a zone counts as UTC). A time whose UTC falls
    outside the years 1-9999 (its offset crosses an end) is the nearest end: the records
    before or after it are the same."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        end = datetime.min if value.year == datetime.min.year else datetime.max
        return end.replace(tzinfo=UTC)


def prune(s: Session, retention: timedelta, now: datetime | None = None) -> int:
    """Delete records older than ``retention``; returns how many."""
    cutoff = (now or utcnow()) - retention
    result = s.execute(sql_delete(AuditEvent).where(AuditEvent.at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
