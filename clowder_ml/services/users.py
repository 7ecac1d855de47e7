"""Users, passwords and bearer tokens.

Passwords are hashed with scrypt; token secrets are random 256-bit values of which only a
sha256 is stored (they are not guessable, so a slow hash adds nothing). A token reads
``cml_<id>_<secret>``; the id finds the row, the secret is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from clowder_ml.db.models import ApiToken, TokenKind, User, utcnow
from clowder_ml.errors import (
    AlreadyExists,
    AuthenticationRequired,
    InvalidCredentials,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
TOKEN_PREFIX = "cml_"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}$" + \
        b64(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), dklen=32,
                            n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


# A hash to verify against when the user does not exist, so timing does not reveal usernames.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def validate_new_credentials(username: str, password: str) -> None:
    if not USERNAME_RE.match(username):
        raise ValidationFailed(
            f"Invalid username {username!r}.",
            "Use 2-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    if len(password) < MIN_PASSWORD:
        raise ValidationFailed(f"Password too short: use at least {MIN_PASSWORD} characters.")


def create_user(s: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    validate_new_credentials(username, password)
    if s.scalar(select(User.id).where(User.username == username)) is not None:
        raise AlreadyExists(f"User {username!r} already exists.")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    s.add(user)
    s.flush()
    return user


def list_users(s: Session, actor: User) -> list[User]:
    require_admin(actor)
    return list(s.scalars(select(User).order_by(User.id)))


def require_admin(actor: User) -> None:
    if not actor.is_admin:
        raise PermissionDenied("Only administrators can do this.")


def get_user_by_name(s: Session, username: str) -> User:
    user = s.scalar(select(User).where(User.username == username, User.is_active.is_(True)))
    if user is None:
        raise NotFound(f"No user named {username!r}.")
    return user


def ensure_admin(s: Session, password: str | None) -> str | None:
    """Create the first ``admin`` if no user exists.

    Returns the password when it was generated here (to be shown once), else None.
    """
    if s.scalar(select(User.id).limit(1)) is not None:
        return None
    generated = password is None
    pw = password if password is not None else secrets.token_urlsafe(18)
    create_user(s, "admin", pw, is_admin=True)
    return pw if generated else None


def authenticate(s: Session, username: str, password: str) -> User:
    user = s.scalar(select(User).where(User.username == username))
    if user is None or not user.is_active:
        verify_password(password, _DUMMY_HASH)
        raise InvalidCredentials("Wrong username or password.")
    if not verify_password(password, user.password_hash):
        raise InvalidCredentials("Wrong username or password.")
    return user


def issue_token(s: Session, user: User, name: str, *, kind: TokenKind = TokenKind.API,
                expires_in: timedelta | None = None) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plaintext (shown to the user once)."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ApiToken(
        id=token_id, user_id=user.id, name=name, kind=kind.value,
        secret_hash=hashlib.sha256(secret.encode()).hexdigest(),
        # A requested expiry always applies, even one that rounds to zero (expired at once).
        expires_at=(utcnow() + expires_in) if expires_in is not None else None,
    )
    s.add(row)
    s.flush()
    return row, f"{TOKEN_PREFIX}{token_id}_{secret}"


def resolve_token(s: Session, plaintext: str, *, now: datetime | None = None) -> User:
    """Return the active user a token belongs to, or raise ``AuthenticationRequired``."""
    invalid = AuthenticationRequired(
        "Invalid, expired or revoked token.", "Log in again: `clowder-ml login`."
    )
    if not plaintext.startswith(TOKEN_PREFIX):
        raise invalid
    token_id, _, secret = plaintext[len(TOKEN_PREFIX):].partition("_")
    row = s.get(ApiToken, token_id) if token_id and secret else None
    if row is None or row.revoked_at is not None:
        raise invalid
    now = now or utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        raise invalid
    if not hmac.compare_digest(row.secret_hash, hashlib.sha256(secret.encode()).hexdigest()):
        raise invalid
    if not row.user.is_active:
        raise invalid
    # Cheap, coarse "last used" (once a minute) to avoid a write per request.
    if row.last_used_at is None or (now - row.last_used_at) > timedelta(minutes=1):
        row.last_used_at = now
    return row.user


def list_tokens(s: Session, user: User) -> list[ApiToken]:
    q = select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.kind == TokenKind.API.value,
                               ApiToken.revoked_at.is_(None)).order_by(ApiToken.created_at)
    return list(s.scalars(q))


def revoke_token(s: Session, user: User, token_id: str) -> ApiToken:
    """Revoke one of ``user``'s tokens by id; returns it. Others' ids answer NotFound."""
    row = s.get(ApiToken, token_id)
    if row is None or row.user_id != user.id or row.revoked_at is not None:
        raise NotFound(f"No token {token_id!r}.")
    row.revoked_at = utcnow()
    return row


def revoke_plaintext(s: Session, plaintext: str) -> ApiToken | None:
    """Revoke the token given in full (logout); returns it, or None for a token that is
    unknown, already revoked, or whose secret does not match (nobody ends another's
    session by knowing its id)."""
    token_id, _, secret = plaintext[len(TOKEN_PREFIX):].partition("_")
    row = s.get(ApiToken, token_id) if plaintext.startswith(TOKEN_PREFIX) else None
    if row is None or row.revoked_at is not None or not hmac.compare_digest(
            row.secret_hash, hashlib.sha256(secret.encode()).hexdigest()):
        return None
    row.revoked_at = utcnow()
    return row
