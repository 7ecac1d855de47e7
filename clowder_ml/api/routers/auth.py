"""Log in: API tokens, browser sessions, token management, users."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response, status

from clowder_ml.api.deps import SESSION_COOKIE, PlatformDep, UserDep
from clowder_ml.api.schemas import (
    IssuedToken,
    LoginRequest,
    NewTokenRequest,
    TokenOut,
    TokenRequest,
    UserCreate,
    UserOut,
)
from clowder_ml.db.models import TokenKind
from clowder_ml.services import users

router = APIRouter(prefix="/api/v1", tags=["auth"])


def _days(d: float | None) -> timedelta | None:
    return timedelta(days=d) if d is not None else None


@router.post("/auth/token", status_code=status.HTTP_201_CREATED, response_model=IssuedToken)
def create_token(body: TokenRequest, platform: PlatformDep) -> IssuedToken:
    """Exchange a username and password for a named API token (shown once)."""
    with platform.db.session() as s:
        user = users.authenticate(s, body.username, body.password)
        row, plain = users.issue_token(s, user, body.name, expires_in=_days(body.expires_in_days))
        return IssuedToken(token=plain, id=row.id, name=row.name, expires_at=row.expires_at)


@router.post("/auth/login", response_model=UserOut)
def login(body: LoginRequest, response: Response, platform: PlatformDep) -> UserOut:
    """Browser login: sets an HttpOnly session cookie."""
    hours = platform.settings.session_hours
    with platform.db.session() as s:
        user = users.authenticate(s, body.username, body.password)
        _, plain = users.issue_token(s, user, "web session", kind=TokenKind.SESSION,
                                     expires_in=timedelta(hours=hours))
        out = UserOut.model_validate(user)
    response.set_cookie(SESSION_COOKIE, plain, max_age=int(hours * 3600), httponly=True,
                        samesite="lax", secure=platform.settings.cookie_secure, path="/")
    return out


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(request: Request, response: Response, platform: PlatformDep) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with platform.db.session() as s:
            users.revoke_plaintext(s, token)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(user: UserDep, platform: PlatformDep) -> list[TokenOut]:
    with platform.db.session() as s:
        return [TokenOut.model_validate(t) for t in users.list_tokens(s, user)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=IssuedToken)
def new_token(body: NewTokenRequest, user: UserDep, platform: PlatformDep) -> IssuedToken:
    with platform.db.session() as s:
        row, plain = users.issue_token(s, user, body.name, expires_in=_days(body.expires_in_days))
        return IssuedToken(token=plain, id=row.id, name=row.name, expires_at=row.expires_at)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, user: UserDep, platform: PlatformDep) -> None:
    with platform.db.session() as s:
        users.revoke_token(s, user, token_id)


@router.get("/users/me", response_model=UserOut)
def me(user: UserDep) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/users", response_model=list[UserOut])
def list_users(user: UserDep, platform: PlatformDep) -> list[UserOut]:
    with platform.db.session() as s:
        return [UserOut.model_validate(u) for u in users.list_users(s, user)]


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserOut)
def create_user(body: UserCreate, user: UserDep, platform: PlatformDep) -> UserOut:
    """Admins create users."""
    users.require_admin(user)
    with platform.db.session() as s:
        return UserOut.model_validate(
            users.create_user(s, body.username, body.password, is_admin=body.is_admin))
