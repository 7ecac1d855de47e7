"""Log in, tokens (hashed, named, revocable, expiring), sessions, admins and users."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select

from clowder_ml.api.app import create_app
from clowder_ml.db.models import ApiToken, User
from clowder_ml.services import users
from clowder_ml.settings import Settings
from tests.conftest import ADMIN_PW, Api


def test_token_login_contract(api: Api) -> None:
    r = api.client.post("/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PW})
    assert r.status_code == 201
    token = r.json()["token"]
    me = api.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "admin" and me.json()["is_admin"] is True


def test_wrong_password_and_unknown_user_look_the_same(api: Api) -> None:
    a = api.client.post("/api/v1/auth/token", json={"username": "admin", "password": "nope!!!!"})
    b = api.client.post("/api/v1/auth/token", json={"username": "ghost", "password": "nope!!!!"})
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()
    assert a.json()["error"]["code"] == "invalid_credentials"


def test_tokens_are_stored_hashed_and_can_be_revoked(api: Api) -> None:
    r = api.client.post("/api/v1/tokens", json={"name": "laptop"}, headers=api.h())
    assert r.status_code == 201
    issued = r.json()
    plain = issued["token"]
    platform = api.app.state.platform
    with platform.db.session() as s:
        row = s.get(ApiToken, issued["id"])
        assert row is not None and row.name == "laptop"
        assert plain.split("_", 2)[2] not in row.secret_hash
        assert row.secret_hash == hashlib.sha256(plain.split("_", 2)[2].encode()).hexdigest()
    listed = api.client.get("/api/v1/tokens", headers=api.h()).json()
    assert "laptop" in [t["name"] for t in listed]
    assert all("token" not in t and "secret_hash" not in t for t in listed)
    auth = {"Authorization": f"Bearer {plain}"}
    assert api.client.get("/api/v1/users/me", headers=auth).status_code == 200
    assert api.client.delete(f"/api/v1/tokens/{issued['id']}", headers=api.h()).status_code == 204
    assert api.client.get("/api/v1/users/me", headers=auth).status_code == 401
    # Someone else's token id is not yours to revoke.
    bob = api.user("bob")
    assert api.client.delete(f"/api/v1/tokens/{api.admin_token.split('_')[1]}",
                             headers=bob).status_code == 404


def test_expired_token_is_refused(sqlite_api: Api) -> None:
    platform = sqlite_api.app.state.platform
    with platform.db.session() as s:
        admin = s.scalar(select(User).where(User.username == "admin"))
        assert admin is not None
        row, plain = users.issue_token(s, admin, "short", expires_in=timedelta(hours=1))
    auth = {"Authorization": f"Bearer {plain}"}
    assert sqlite_api.client.get("/api/v1/users/me", headers=auth).status_code == 200
    with platform.db.session() as s:
        s.get(ApiToken, row.id).expires_at = row.created_at - timedelta(seconds=1)  # type: ignore[union-attr]
    r = sqlite_api.client.get("/api/v1/users/me", headers=auth)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    r = sqlite_api.client.post("/api/v1/auth/token", json={
        "username": "admin", "password": ADMIN_PW, "name": "x", "expires_in_days": 1})
    assert r.json()["expires_at"] is not None


def test_session_cookie_is_httponly_and_logout_ends_it(sqlite_api: Api) -> None:
    c = sqlite_api.client
    r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PW})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "clowder_ml_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert c.get("/api/v1/users/me").json()["username"] == "admin"  # cookie, no header
    session = c.cookies.get("clowder_ml_session")
    # A browser names the page's origin on a POST (the TestClient's is http://testserver).
    same_origin = {"Origin": "http://testserver"}
    assert c.post("/api/v1/auth/logout", headers=same_origin).status_code == 204
    c.cookies.clear()
    r = c.get("/api/v1/users/me", cookies={"clowder_ml_session": session or ""})
    assert r.status_code == 401
    # Session cookies are not listed among API tokens.
    assert "web session" not in [t["name"] for t in c.get(
        "/api/v1/tokens", headers=sqlite_api.h()).json()]


def test_admin_creates_users_with_validation(api: Api) -> None:
    r = api.client.post("/api/v1/users", json={"username": "alice", "password": "short"},
                        headers=api.h())
    assert r.status_code == 422 and "password" in r.json()["error"]["message"]
    r = api.client.post("/api/v1/users", json={"username": "Bad Name", "password": "longenough"},
                        headers=api.h())
    assert r.status_code == 422
    api.user("alice")
    r = api.client.post("/api/v1/users", json={"username": "alice", "password": "longenough"},
                        headers=api.h())
    assert r.status_code == 409
    names = [u["username"] for u in api.client.get("/api/v1/users", headers=api.h()).json()]
    assert names == ["admin", "alice"]


def test_first_admin_password_is_generated_not_fixed(tmp_path: object) -> None:
    from fastapi.testclient import TestClient

    seen = set()
    for i in range(2):
        app = create_app(Settings(data_dir=f"{tmp_path}/d{i}", engine_enabled=False),
                         announce=False)
        with TestClient(app) as c:
            pw = app.state.generated_admin_password
            assert pw and len(pw) >= 16
            seen.add(pw)
            r = c.post("/api/v1/auth/token", json={"username": "admin", "password": pw})
            assert r.status_code == 201
        # A restart on the same data does not create or print another password.
        app2 = create_app(Settings(data_dir=f"{tmp_path}/d{i}", engine_enabled=False),
                          announce=False)
        with TestClient(app2):
            assert app2.state.generated_admin_password is None
    assert len(seen) == 2
