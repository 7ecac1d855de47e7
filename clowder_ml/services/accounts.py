"""Account actions as the API performs them: each one checks, acts and writes its audit
record (``clowder_ml.services.audit``), so no caller can do one without the other.

``users`` holds the mechanics (password hashes, token rows); this module the policy around
them: log-ins go through the throttle (``clowder_ml.services.throttle``), and creating
users, issuing and revoking tokens, ending sessions and clearing log-in failures leave a
record naming who did it and from where.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from clowder_ml.db.models import ApiToken, TokenKind, User
from clowder_ml.db.session import Database
from clowder_ml.errors import InvalidCredentials, NotFound, TooManyAttempts
from clowder_ml.services import audit, users
from clowder_ml.services.audit import SERVER, SERVER_ACTOR, Action, AuditContext, Outcome, record
from clowder_ml.services.throttle import Throttle, retry_after_s
from clowder_ml.settings import Settings


@dataclass(frozen=True)
class LoggedIn:
    """A successful log-in: the user and the token issued (its plaintext is shown once)."""

    user: User
    token: ApiToken
    plaintext: str


def log_in(db: Database, settings: Settings, ctx: AuditContext, username: str, password: str,
           *, kind: TokenKind, token_name: str, expires_in: timedelta | None) -> LoggedIn:
    """Check a password and issue a token of ``kind``, throttled per account and address.

    Raises ``TooManyAttempts`` (with ``retry_after``) while the account or the client's
    address waits after failed attempts (the password is then not even checked), and
    ``InvalidCredentials`` for a wrong name or password, which look the same. Every attempt
    is audited, whatever its outcome.
    """
    throttle = Throttle.from_settings(settings)
    via = kind.value
    with db.session() as s:
        wait = throttle.admit(s, username, ctx.client)
        if wait is not None:
            record(s, ctx, Action.LOGIN, Outcome.REFUSED, actor=username,
                   detail={"via": via, "retry_after": retry_after_s(wait)})
    if wait is not None:
        seconds = retry_after_s(wait)
        raise TooManyAttempts(
            f"Too many failed log-ins: try again in {seconds} s.",
            "Each failed attempt makes the next wait longer, and waits shrink with time. "
            "An administrator can clear an account's failures (`clowder-ml users unlock`).",
            retry_after=seconds)
    try:
        with db.session() as s:
            user = users.authenticate(s, username, password)
            throttle.succeeded(s, username, ctx.client)
            row, plain = users.issue_token(s, user, token_name, kind=kind,
                                           expires_in=expires_in)
            record(s, ctx, Action.LOGIN, Outcome.SUCCESS, actor=user,
                   detail={"via": via, "token_id": row.id})
            if kind is TokenKind.API:
                record(s, ctx, Action.TOKEN_CREATED, Outcome.SUCCESS, actor=user,
                       target=f"token:{row.id}", detail={"name": token_name, "via": "password"})
            return LoggedIn(user, row, plain)
    except InvalidCredentials:
        with db.session() as s:
            known = s.scalar(select(User).where(User.username == username))
            reason = ("unknown_user" if known is None
                      else "inactive_user" if not known.is_active else "wrong_password")
            record(s, ctx, Action.LOGIN, Outcome.FAILURE, actor=known or username,
                   detail={"via": via, "reason": reason})
        raise


def log_out(s: Session, ctx: AuditContext, plaintext: str) -> None:
    """End the session whose token is ``plaintext``; unknown tokens are ignored."""
    row = users.revoke_plaintext(s, plaintext)
    if row is not None:
        record(s, ctx, Action.SESSION_ENDED, Outcome.SUCCESS, actor=row.user,
               target=f"token:{row.id}")


def create_token(s: Session, ctx: AuditContext, user: User, name: str,
                 expires_in: timedelta | None) -> tuple[ApiToken, str]:
    """Issue an API token to ``user`` (already authenticated); returns the row and plaintext."""
    row, plain = users.issue_token(s, user, name, expires_in=expires_in)
    record(s, ctx, Action.TOKEN_CREATED, Outcome.SUCCESS, actor=user, target=f"token:{row.id}",
           detail={"name": name})
    return row, plain


def revoke_token(s: Session, ctx: AuditContext, user: User, token_id: str) -> None:
    row = users.revoke_token(s, user, token_id)
    record(s, ctx, Action.TOKEN_REVOKED, Outcome.SUCCESS, actor=user, target=f"token:{row.id}",
           detail={"name": row.name})


def create_user(s: Session, ctx: AuditContext, actor: User, username: str, password: str,
                *, is_admin: bool) -> User:
    """An administrator creates a user."""
    users.require_admin(actor)
    user = users.create_user(s, username, password, is_admin=is_admin)
    record(s, ctx, Action.USER_CREATED, Outcome.SUCCESS, actor=actor, target=f"user:{username}",
           detail={"is_admin": is_admin})
    return user


def ensure_admin(s: Session, password: str | None) -> str | None:
    """``users.ensure_admin`` (the first start's ``admin``), recorded when it creates one."""
    first_start = s.scalar(select(User.id).limit(1)) is None
    generated = users.ensure_admin(s, password)
    if first_start:
        record(s, SERVER, Action.USER_CREATED, Outcome.SUCCESS, actor=SERVER_ACTOR,
               target="user:admin", detail={"is_admin": True, "first_start": True})
    return generated


def unlock(s: Session, settings: Settings, ctx: AuditContext, actor: User, username: str,
           ) -> bool:
    """An administrator clears an account's failed log-ins (its wait ends now). Returns
    whether it had any. The accounts' addresses keep theirs."""
    users.require_admin(actor)
    if s.scalar(select(User.id).where(User.username == username)) is None:
        raise NotFound(f"No user named {username!r}.")
    had = Throttle.from_settings(settings).clear_account(s, username)
    record(s, ctx, Action.LOGIN_UNLOCKED, Outcome.SUCCESS, actor=actor,
           target=f"user:{username}", detail={"had_failures": had})
    return had


def prune(s: Session, settings: Settings) -> tuple[int, int]:
    """Housekeeping: forget decayed log-in failures and audit records past retention.
    Returns (throttle keys, audit records) deleted."""
    keys = Throttle.from_settings(settings).prune(s)
    events = audit.prune(s, timedelta(days=settings.audit_retention_days))
    return keys, events
