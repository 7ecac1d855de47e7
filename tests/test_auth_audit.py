"""The audit trail: log-ins (failed, refused, succeeded), tokens, sessions, sharing and users
are recorded with who, when and from where, never a secret; admins query it."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PW, Api
from tests.registry.registry_helpers import fake_finetune


def _audit(api: Api, **params: Any) -> dict[str, Any]:
    r = api.client.get("/api/v1/audit", params=params, headers=api.h())
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_account_actions_are_audited(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    c = api.client
    far = TestClient(api.app, client=("198.51.100.23", 5000))
    caplog.set_level(logging.INFO, logger="clowder_ml.audit")
    assert far.post("/api/v1/auth/token", json={"username": "admin", "password": "guess-1"})\
        .status_code == 401
    assert far.post("/api/v1/auth/token", json={"username": "ghost", "password": "guess-2"})\
        .status_code == 401
    bob = api.user("bob")  # user.created, then bob's log-in (login + token.created)
    issued = c.post("/api/v1/tokens", json={"name": "laptop"}, headers=bob).json()
    assert c.delete(f"/api/v1/tokens/{issued['id']}", headers=bob).status_code == 204
    ds = api.dataset("d")
    assert c.put("/api/v1/datasets/d/shares/bob", json={"permission": "read"},
                 headers=api.h()).status_code == 200
    assert c.delete("/api/v1/datasets/d/shares/bob", headers=api.h()).status_code == 204
    r = far.post("/api/v1/auth/login", json={"username": "bob", "password": "bob-password"})
    assert r.status_code == 200
    assert far.post("/api/v1/auth/logout", headers={"Origin": "http://testserver"})\
        .status_code == 204

    events = _audit(api)["events"]
    seen = [(e["action"], e["outcome"], e["actor"], e["target"]) for e in reversed(events)]
    token_id = issued["id"]
    token = "token:*"  # a token whose id the test does not know (log-ins, the session)
    expected = [
        ("user.created", "success", "(server)", "user:admin"),  # the first start
        ("login", "success", "admin", ""),  # the fixture's log-in ...
        ("token.created", "success", "admin", token),  # ... issued it a token
        ("login", "failure", "admin", ""),
        ("login", "failure", "ghost", ""),
        ("user.created", "success", "admin", "user:bob"),
        ("login", "success", "bob", ""),
        ("token.created", "success", "bob", token),
        ("token.created", "success", "bob", f"token:{token_id}"),
        ("token.revoked", "success", "bob", f"token:{token_id}"),
        ("share.granted", "success", "admin", f"dataset:{ds['id']}"),
        ("share.revoked", "success", "admin", f"dataset:{ds['id']}"),
        ("login", "success", "bob", ""),
        ("session.ended", "success", "bob", token),
    ]
    assert [(a, o, u, "token:*" if t.startswith("token:") and t != f"token:{token_id}" else t)
            for a, o, u, t in seen] == expected
    # A log-in names the token it issued.
    logins = [e for e in events if e["action"] == "login" and e["outcome"] == "success"]
    assert all(e["detail"]["token_id"] for e in logins)
    assert f"token:{logins[0]['detail']['token_id']}" == seen[-1][3]  # the session ended
    by_action = {(e["action"], e["actor"]): e for e in events}
    failed = by_action[("login", "ghost")]
    assert failed["client"] == "198.51.100.23"
    assert failed["detail"] == {"via": "api", "reason": "unknown_user"}
    assert by_action[("login", "admin")]["detail"]["via"] == "api"
    assert events[0]["client"] == "198.51.100.23" and events[0]["request_id"]
    assert by_action[("share.granted", "admin")]["detail"] == {"user": "bob",
                                                               "permission": "read"}
    # Times are recent and in order; no secret appears anywhere.
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=5) < datetime.fromisoformat(e["at"]) <= now
               for e in events)
    text = json.dumps(events)
    for secret in ("guess-1", "guess-2", "bob-password", ADMIN_PW, api.admin_token,
                   issued["token"], api.tokens["bob"]):
        assert secret not in text
    # Each record is also one structured log line.
    logged = [r for r in caplog.records if r.name == "clowder_ml.audit"]
    assert {(r.action, r.outcome, r.actor) for r in logged} >= {  # type: ignore[attr-defined]
        ("login", "failure", "ghost"), ("share.granted", "success", "admin")}
    assert not any(s in caplog.text for s in ("guess-1", "bob-password"))


def test_audit_filters_and_paging(api: Api) -> None:
    for i in range(3):
        api.client.post("/api/v1/auth/token", json={"username": f"u{i}", "password": "x"})
    api.user("bob")
    assert [e["actor"] for e in _audit(api, action="login", outcome="failure")["events"]] \
        == ["u2", "u1", "u0"]
    assert {e["action"] for e in _audit(api, action="token")["events"]} == {"token.created"}
    assert _audit(api, action="tok")["events"] == []  # a prefix is a whole action name
    assert [e["target"] for e in _audit(api, actor="admin", action="user.created")["events"]] \
        == ["user:bob"]
    assert len(_audit(api, client="testclient")["events"]) >= 5
    # Pages: newest first, each page's last id leads to the next.
    first = _audit(api, limit=2)
    second = _audit(api, limit=2, before=first["next_before"])
    ids = [e["id"] for e in first["events"] + second["events"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4
    everything = _audit(api, limit=500)
    assert everything["next_before"] is None
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _audit(api, since=future)["events"] == []
    assert len(_audit(api, until=future)["events"]) == len(everything["events"])


def test_only_admins_read_the_audit(sqlite_api: Api) -> None:
    bob = sqlite_api.user("bob")
    r = sqlite_api.client.get("/api/v1/audit", headers=bob)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    assert sqlite_api.client.get("/api/v1/audit").status_code == 401
    r = sqlite_api.client.post("/api/v1/users/admin/unlock", headers=bob)
    assert r.status_code == 403


@pytest.mark.parametrize("params", [{"action": "LOGIN"}, {"action": "a%"}, {"limit": 501},
                                    {"outcome": "maybe"}, {"actor": "a\x00b"},
                                    {"since": "0.5"}, {"until": "yesterday"}])
def test_bad_audit_queries_are_422(sqlite_api: Api, params: dict[str, Any]) -> None:
    r = sqlite_api.client.get("/api/v1/audit", params=params, headers=sqlite_api.h())
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_failed", r.text


@pytest.mark.parametrize(("params", "everything"), [
    ({"since": "9999-12-31T23:59:59-23:59"}, False),  # after the last instant Python has
    ({"until": "0001-01-01T00:00:00+01:00"}, False),  # before the first
    ({"since": "0000-01-01T00:00:00Z"}, True),  # RFC 3339 has a year 0; Python does not
    ({"until": "2999-12-31T23:59:60Z"}, True),  # a leap second
])
def test_audit_times_python_cannot_hold_are_the_nearest_end(
        sqlite_api: Api, params: dict[str, Any], everything: bool) -> None:
    """Valid RFC 3339 times (the schema's date-time) are never refused."""
    r = sqlite_api.client.get("/api/v1/audit", params=params, headers=sqlite_api.h())
    assert r.status_code == 200, r.text
    assert bool(r.json()["events"]) is everything, r.json()


def test_model_sharing_is_audited(sqlite_api: Api) -> None:
    api = sqlite_api
    api.dataset("reviews", files={"train.csv": b"text,label\ngood,pos\nbad,neg\n"})
    fake_finetune(api, "reviews", "sentiment", {"eval_accuracy": 0.5})
    api.user("bob")
    m = "/api/v1/models/sentiment/shares/bob"
    assert api.client.put(m, json={"permission": "write"}, headers=api.h()).status_code == 204
    assert api.client.delete(m, headers=api.h()).status_code == 204
    events = _audit(api, action="share")["events"]
    model_id = api.client.get("/api/v1/models/sentiment", headers=api.h()).json()["id"]
    assert [(e["action"], e["target"], e["detail"]) for e in events] == [
        ("share.revoked", f"model:{model_id}", {"user": "bob"}),
        ("share.granted", f"model:{model_id}", {"user": "bob", "permission": "write"})]
