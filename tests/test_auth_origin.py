"""Cross-site request refusal: cookie-authenticated writes (and WebSocket handshakes) must
come from this server's own origin or a configured one; bearer tokens are unaffected."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from clowder_ml.api.origin_check import normalize_origin
from tests.conftest import ADMIN_PW, Api

SELF = "http://testserver"  # the TestClient's origin
EVIL = "http://evil.example"


def _session(api: Api) -> None:
    """Log the TestClient in as a browser would: the session cookie is kept."""
    r = api.client.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PW},
                        headers={"Origin": SELF})
    assert r.status_code == 200, r.text
    assert api.client.cookies.get("clowder_ml_session")


def _create(api: Api, name: str, **headers: str) -> Any:
    return api.client.post("/api/v1/datasets", json={"name": name}, headers=headers)


def _names(api: Api) -> list[str]:
    return [d["name"] for d in api.client.get("/api/v1/datasets", headers=api.h()).json()]


def test_cookie_write_from_a_foreign_origin_is_refused_bearer_works(api: Api) -> None:
    _session(api)
    r = _create(api, "forged", Origin=EVIL)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert err["code"] == "cross_site_request_refused" and EVIL in err["message"]
    assert "forged" not in _names(api)  # nothing was done
    # The same request with a bearer token (CLI, SDK, runner) works, Origin or not.
    assert _create(api, "with-token", Origin=EVIL, **api.h()).status_code == 201
    # The web UI is served by this server: same-origin cookie writes work.
    assert _create(api, "same-origin", Origin=SELF).status_code == 201
    assert _create(api, "by-referer", Referer=f"{SELF}/datasets/x?tab=1").status_code == 201
    assert {"with-token", "same-origin", "by-referer"} <= set(_names(api))


@pytest.mark.parametrize("headers", [
    {},  # no Origin and no Referer: nothing says where the page was
    {"Origin": "null"},  # sandboxed frames, data: pages
    {"Origin": "http://sub.testserver"},  # same site, another host (SameSite=Lax lets it in)
    {"Origin": "https://testserver"},  # another scheme is another origin
    {"Origin": "http://testserver:8080"},
    {"Referer": f"{EVIL}/page"},
    {"Origin": EVIL, "Referer": f"{SELF}/"},  # Origin wins over a Referer
    {"Origin": "javascript:alert(1)"},
])
def test_other_cookie_writes_are_refused(sqlite_api: Api, headers: dict[str, str]) -> None:
    _session(sqlite_api)
    r = _create(sqlite_api, "forged", **headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request_refused"


def test_every_unsafe_method_is_checked(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("d", files={"a.csv": b"x\n1\n"})
    _session(api)
    c, evil = api.client, {"Origin": EVIL}
    assert c.patch("/api/v1/datasets/d", json={"description": "x"}, headers=evil)\
        .status_code == 403
    assert c.put("/api/v1/datasets/d/shares/admin", json={"permission": "read"},
                 headers=evil).status_code == 403
    assert c.delete("/api/v1/datasets/d/files/a.csv", headers=evil).status_code == 403
    assert c.post("/api/v1/tokens", json={"name": "stolen"}, headers=evil).status_code == 403
    assert c.post("/api/v1/auth/logout", headers=evil).status_code == 403
    # Reads are not writes: the cookie still reads (and CORS keeps other sites from
    # seeing the answer: no Access-Control-Allow-Origin is ever sent).
    r = c.get("/api/v1/datasets/d", headers=evil)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert c.get("/api/v1/datasets/d/files/a.csv", headers=api.h()).status_code == 200


def test_log_in_from_a_foreign_page_is_refused(sqlite_api: Api) -> None:
    """Log-in forgery: a foreign page must not log a visitor into an account it chose."""
    c = sqlite_api.client
    body = {"username": "admin", "password": ADMIN_PW}
    r = c.post("/api/v1/auth/login", json=body, headers={"Origin": EVIL})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    # Programs send no Origin: they log in as before.
    assert c.post("/api/v1/auth/login", json=body).status_code == 200
    # ... but a program that keeps the session cookie is held to the browser rule.
    assert c.post("/api/v1/auth/token", json=body).status_code == 403
    c.cookies.clear()
    assert c.post("/api/v1/auth/token", json=body).status_code == 201


def test_configured_public_origins_are_allowed(make_api: Any) -> None:
    api = make_api(public_url="https://ml.example.org/",
                   public_origins=["https://portal.example.org:8443"])
    # An https public URL makes the cookie Secure: the browser is on https.
    c = TestClient(api.app, base_url="https://testserver")
    r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PW})
    assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]

    def create(name: str, origin: str) -> int:
        return c.post("/api/v1/datasets", json={"name": name},
                      headers={"Origin": origin}).status_code

    assert create("a", "https://ml.example.org") == 201
    assert create("b", "HTTPS://Portal.Example.org:8443") == 201
    assert create("c", "https://testserver") == 201  # the request's own origin, always
    assert create("d", "https://portal.example.org") == 403


def test_invalid_public_origins_stop_the_server(make_api: Any) -> None:
    with pytest.raises(Exception, match="PUBLIC_ORIGINS"):
        make_api(public_origins=["portal.example.org"])


def test_websocket_handshake_with_cookie_is_origin_checked(sqlite_api: Api) -> None:
    _session(sqlite_api)
    c = sqlite_api.client
    with pytest.raises(WebSocketDisconnect) as refused:
        with c.websocket_connect("/api/v1/jobs/job_x/ws", headers={"Origin": EVIL}):
            pass
    assert refused.value.code == 1008
    # Same origin: accepted (then told the job does not exist).
    with c.websocket_connect("/api/v1/jobs/job_x/ws", headers={"Origin": SELF}) as ws:
        assert ws.receive_json()["error"]["code"] == "not_found"


def test_origin_normalization() -> None:
    assert normalize_origin("HTTP://Example.ORG:80/path?q") == "http://example.org"
    assert normalize_origin("https://example.org:443") == "https://example.org"
    assert normalize_origin("https://[::1]:8443") == "https://[::1]:8443"
    for bad in ("null", "", "ftp://example.org", "example.org", "http://", "http://x:99999"):
        assert normalize_origin(bad) is None, bad
