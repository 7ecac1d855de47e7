"""Request dependencies: the platform, the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from clowder_ml.db.models import User
from clowder_ml.errors import AuthenticationRequired, ValidationFailed
from clowder_ml.services import users
from clowder_ml.services.audit import AuditContext
from clowder_ml.services.platform import Platform

SESSION_COOKIE = "clowder_ml_session"
_bearer = HTTPBearer(auto_error=False, description="API token from POST /api/v1/auth/token")


def reject_nul_path_params(request: HTTPConnection) -> None:
    """No identifier holds a NUL character (PostgreSQL cannot even compare one): refuse it
    in any path parameter (e.g. ``%00`` in a dataset ref) before it reaches a query."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise ValidationFailed(f"Path parameter {name!r} contains a NUL (\\x00) character.",
                                   "Remove control characters from the URL.")


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def current_user(request: Request, platform: PlatformDep,
                 creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                 ) -> User:
    """The user behind the bearer token or the session cookie; 401 otherwise."""
    token = creds.credentials if creds else request.cookies.get(SESSION_COOKIE)
    return _user_for(platform, token)


def current_user_ws(platform: Platform, websocket: WebSocket) -> User:
    """A WebSocket's user: bearer header, session cookie, or ``?token=`` (browsers cannot
    set headers on a WebSocket). Blocking: call it in a thread."""
    auth = websocket.headers.get("authorization", "")
    token = (auth[7:] if auth.lower().startswith("bearer ") else None) \
        or websocket.cookies.get(SESSION_COOKIE) or websocket.query_params.get("token")
    return _user_for(platform, token)


def _user_for(platform: Platform, token: str | None) -> User:
    if not token:
        raise AuthenticationRequired(
            "Authentication required.",
            "Send 'Authorization: Bearer <token>'; get one with `clowder-ml login`.")
    with platform.db.session() as s:
        user = users.resolve_token(s, token)
        s.flush()
        s.expunge(user)
    return user


UserDep = Annotated[User, Depends(current_user)]


def audit_context(request: HTTPConnection) -> AuditContext:
    """Where the request came from, for audit records: the client's address (proxies
    considered, see ``api.client_address``) and the request's id."""
    client = request.client.host if request.client else None
    return AuditContext(client=client, request_id=request.scope.get("state", {})
                        .get("request_id"))


AuditDep = Annotated[AuditContext, Depends(audit_context)]
