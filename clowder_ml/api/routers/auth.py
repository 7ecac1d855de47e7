"""Log in: API tokens, browser sessions, token management, users.

Log-ins are throttled per account and per client address (429 with ``Retry-After``), and
every account action is audited (``services.accounts``).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response, status

from clowder_ml.api.deps import SESSION_COOKIE, AuditDep, PlatformDep, UserDep
from clowder_ml.api.fields import IdPath, UsernamePath
from clowder_ml.api.responses import ADMIN_ONLY, CREATES, NAMES_RESOURCE, errors
from clowder_ml.api.schemas import (
    IssuedToken,
    LoginRequest,
    NewTokenRequest,
    TokenOut,
    TokenRequest,
    UnlockOut,
    UserCreate,
    UserOut,
)
from clowder_ml.api.security_headers import is_https
from clowder_ml.db.models import TokenKind
from clowder_ml.errors import InvalidCredentials, TooManyAttempts
from clowder_ml.services import accounts, users

router = APIRouter(prefix="/api/v1", tags=["auth"])

# A wrong name or password (401, alike), or a wait after failed log-ins for the account or
# the client's address (429 with Retry-After; the password is not checked meanwhile).
LOG_IN = errors(InvalidCredentials, TooManyAttempts)


def _days(d: float | None) -> timedelta | None:
    return timedelta(days=d) if d is not None else None


@router.post("/auth/token", status_code=status.HTTP_201_CREATED, response_model=IssuedToken,
             responses=LOG_IN)
def create_token(body: TokenRequest, platform: PlatformDep, ctx: AuditDep) -> IssuedToken:
    """Exchange a username and password for a named API token (shown once)."""
    done = accounts.log_in(platform.db, platform.settings, ctx, body.username, body.password,
                           kind=TokenKind.API, token_name=body.name,
                           expires_in=_days(body.expires_in_days))
    return IssuedToken(token=done.plaintext, id=done.token.id, name=done.token.name,
                       expires_at=done.token.expires_at)


@router.post("/auth/login", response_model=UserOut, responses=LOG_IN)
def login(body: LoginRequest, request: Request, response: Response, platform: PlatformDep,
          ctx: AuditDep) -> UserOut:
    """Browser login: sets an HttpOnly session cookie (``Secure`` over https)."""
    settings = platform.settings
    hours = settings.session_hours
    done = accounts.log_in(platform.db, settings, ctx, body.username, body.password,
                           kind=TokenKind.SESSION, token_name="web session",
                           expires_in=timedelta(hours=hours))
    secure = settings.cookie_secure or is_https(request.scope, settings)
    response.set_cookie(SESSION_COOKIE, done.plaintext, max_age=int(hours * 3600),
                        httponly=True, samesite="lax", secure=secure, path="/")
    return UserOut.model_validate(done.user)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, response: Response, platform: PlatformDep, ctx: AuditDep) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with platform.db.session() as s:
            accounts.log_out(s, ctx, token)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(user: UserDep, platform: PlatformDep) -> list[TokenOut]:
    with platform.db.session() as s:
        return [TokenOut.model_validate(t) for t in users.list_tokens(s, user)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=IssuedToken)
def new_token(body: NewTokenRequest, user: UserDep, platform: PlatformDep, ctx: AuditDep,
              ) -> IssuedToken:
    with platform.db.session() as s:
        row, plain = accounts.create_token(s, ctx, user, body.name, _days(body.expires_in_days))
        return IssuedToken(token=plain, id=row.id, name=row.name, expires_at=row.expires_at)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=errors(*NAMES_RESOURCE))
def revoke_token(token_id: IdPath, user: UserDep, platform: PlatformDep, ctx: AuditDep) -> None:
    with platform.db.session() as s:
        accounts.revoke_token(s, ctx, user, token_id)


@router.get("/users/me", response_model=UserOut)
def me(user: UserDep) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/users", response_model=list[UserOut], responses=errors(*ADMIN_ONLY))
def list_users(user: UserDep, platform: PlatformDep) -> list[UserOut]:
    with platform.db.session() as s:
        return [UserOut.model_validate(u) for u in users.list_users(s, user)]


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut,
             responses=errors(*ADMIN_ONLY, *CREATES))
def create_user(body: UserCreate, user: UserDep, platform: PlatformDep, ctx: AuditDep,
                ) -> UserOut:
    """Admins create users."""
    with platform.db.session() as s:
        return UserOut.model_validate(accounts.create_user(
            s, ctx, user, body.username, body.password, is_admin=body.is_admin))


@router.post("/users/{username}/unlock", response_model=UnlockOut,
             responses=errors(*ADMIN_ONLY, *NAMES_RESOURCE))
def unlock_user(username: UsernamePath, user: UserDep, platform: PlatformDep, ctx: AuditDep,
                ) -> UnlockOut:
    """Admins clear an account's failed log-ins, ending its wait now."""
    with platform.db.session() as s:
        had = accounts.unlock(s, platform.settings, ctx, user, username)
    return UnlockOut(username=username, had_failures=had)
