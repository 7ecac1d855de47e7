"""Security headers on API, docs and UI responses (errors included); Secure cookies and HSTS
over https, proxies considered only when trusted."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from clowder_ml.api.security_headers import (
    API_CONTENT_SECURITY_POLICY,
    UI_CONTENT_SECURITY_POLICY,
    inline_script_hashes,
)
from tests.conftest import ADMIN_PW, Api

AGREED_UI_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)


def _common(r: Any) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "same-origin"
    assert r.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert len(r.headers.get_list("content-security-policy")) == 1


def test_api_answers_carry_the_strict_policy(sqlite_api: Api) -> None:
    c, h = sqlite_api.client, sqlite_api.h()
    sqlite_api.dataset("d", files={"page.html": b"<script>alert(1)</script>"})
    for r in (c.get("/api/v1/users/me", headers=h),
              c.get("/api/v1/users/me"),  # 401
              c.get("/api/v1/nope", headers=h),  # 404
              c.get("/api/v1/datasets/d/files/page.html", headers=h),  # a user's HTML file
              c.get("/healthz"), c.get("/openapi.json")):
        _common(r)
        assert r.headers["content-security-policy"] == API_CONTENT_SECURITY_POLICY, r.url
    # Credentials are never cached.
    r = c.post("/api/v1/auth/token", json={"username": "admin", "password": ADMIN_PW})
    assert r.headers["cache-control"] == "no-store"
    assert c.get("/api/v1/tokens", headers=h).headers["cache-control"] == "no-store"


def test_ui_pages_carry_the_agreed_policy(sqlite_api: Api) -> None:
    assert UI_CONTENT_SECURITY_POLICY == AGREED_UI_POLICY
    for path in ("/", "/datasets/d", "/assets/missing.js"):
        r = sqlite_api.client.get(path)
        _common(r)
        assert r.headers["content-security-policy"] == AGREED_UI_POLICY, path


def test_docs_page_policy_allows_exactly_its_inline_scripts(sqlite_api: Api) -> None:
    for path in ("/docs", "/docs/oauth2-redirect"):
        r = sqlite_api.client.get(path)
        assert r.status_code == 200
        _common(r)
        policy = r.headers["content-security-policy"]
        script_src = re.search(r"script-src ([^;]*)", policy)
        assert script_src is not None
        hashes = inline_script_hashes(r.text)
        assert hashes and all(h in script_src.group(1).split() for h in hashes), path
        assert "'unsafe-inline'" not in script_src.group(1)
    assert sqlite_api.client.get("/redoc").headers["content-security-policy"] == policy


def test_https_sets_secure_cookie_and_hsts(sqlite_api: Api, make_api: Any) -> None:
    body = {"username": "admin", "password": ADMIN_PW}
    r = sqlite_api.client.post("/api/v1/auth/login", json=body)
    assert "Secure" not in r.headers["set-cookie"]
    assert "strict-transport-security" not in r.headers
    https = TestClient(sqlite_api.app, base_url="https://testserver")
    r = https.post("/api/v1/auth/login", json=body)
    assert "Secure" in r.headers["set-cookie"]
    assert r.headers["strict-transport-security"].startswith("max-age=")
    # A client cannot claim https through X-Forwarded-Proto unless it is a trusted proxy.
    sqlite_api.client.cookies.clear()
    r = sqlite_api.client.post("/api/v1/auth/login", json=body,
                               headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in r.headers["set-cookie"]
    api = make_api(trusted_proxies=["10.0.0.0/8"])
    proxy = TestClient(api.app, client=("10.1.2.3", 1))
    r = proxy.post("/api/v1/auth/login", json=body, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in r.headers["set-cookie"]


def test_last_resort_errors_carry_the_headers_too(sqlite_api: Api) -> None:
    def boom() -> None:
        raise RuntimeError("unexpected")

    sqlite_api.app.add_api_route("/api/v1/test-boom", boom)
    r = TestClient(sqlite_api.app, raise_server_exceptions=False).get("/api/v1/test-boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    _common(r)
    assert r.headers["content-security-policy"] == API_CONTENT_SECURITY_POLICY
