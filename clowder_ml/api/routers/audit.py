"""The audit trail, for administrators: who logged in (or tried), created or revoked
tokens, changed sharing, created users; when and from where."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from clowder_ml.api.deps import PlatformDep, UserDep
from clowder_ml.api.fields import NO_NUL_PATTERN, OptionalTimeQuery
from clowder_ml.api.responses import ADMIN_ONLY, errors
from clowder_ml.api.schemas import AuditEventOut, AuditPage
from clowder_ml.services import audit

router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", response_model=AuditPage, responses=errors(*ADMIN_ONLY))
def list_audit(
    user: UserDep, platform: PlatformDep,
    action: Annotated[str | None, Query(
        pattern=audit.ACTION_FILTER_RE.pattern, description="An action (login, "
        "token.created, ...); a prefix such as 'share' also finds its sub-actions")] = None,
    actor: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN,
                                       description="The account acting or tried")] = None,
    outcome: Annotated[audit.Outcome | None, Query()] = None,
    client: Annotated[str | None, Query(max_length=64, pattern=NO_NUL_PATTERN,
                                        description="Client address")] = None,
    since: OptionalTimeQuery = None,
    until: OptionalTimeQuery = None,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1,
                                        description="Older than this id (paging)")] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
) -> AuditPage:
    """Audit records, newest first (admins only)."""
    q = audit.AuditQuery(action=action, actor=actor, outcome=outcome, client=client,
                         since=since, until=until, before_id=before, limit=limit)
    with platform.db.session() as s:
        events = [AuditEventOut.model_validate(e) for e in audit.query(s, user, q)]
    return AuditPage(events=events,
                     next_before=events[-1].id if len(events) == limit else None)
