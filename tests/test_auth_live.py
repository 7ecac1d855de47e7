"""Account security against live servers: two ``clowder-ml serve`` processes on one
PostgreSQL database, guessed at in parallel from many client addresses; one is killed and
restarted; the CLI reads the audit and unlocks; cross-site writes and headers on the wire."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from clowder_ml.db import migrate
from clowder_ml.db.session import Database
from clowder_ml.services import users
from tests.conftest import ADMIN_PW, PG_BASE, ServerProcess

pytestmark = pytest.mark.slow

FREE = 3  # failures an account gets before waits start
ALICE_PW = "alice-password-1"


def _source(n: int) -> httpx.Client:
    """A client whose connections come from 127.0.0.<n> (a distinct client address)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}"),
                        timeout=60)


def _guess(url: str, n: int, password: str = "wrong-password") -> httpx.Response:
    with _source(n) as c:
        return c.post(url + "/api/v1/auth/token",
                      json={"username": "alice", "password": password})


@pytest.fixture(scope="module")
def servers(pg_admin_engine: Any, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    """Servers A and B on one database (migrated and seeded first, so that their start-ups
    do not race), and an admin token; shared by this module's tests (starts take seconds)."""
    schema = f"t_{secrets.token_hex(6)}"
    with pg_admin_engine.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    pg_url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    tmp_path = tmp_path_factory.mktemp("live")
    db = Database(pg_url)
    migrate.upgrade(db.engine)
    with db.session() as s:
        users.ensure_admin(s, ADMIN_PW)
        admin = users.get_user_by_name(s, "admin")
        users.create_user(s, "alice", ALICE_PW)
        _, token = users.issue_token(s, admin, "test")
    db.dispose()
    env = {"CLOWDER_ML_DATABASE_URL": pg_url, "CLOWDER_ML_LOGIN_BASE_DELAY_S": "600",
           "CLOWDER_ML_LOGIN_ACCOUNT_FREE_FAILURES": str(FREE)}
    a = ServerProcess(tmp_path / "a" / "data", env)
    b = ServerProcess(tmp_path / "b" / "data", env)
    starts = [threading.Thread(target=s.start) for s in (a, b)]
    for t in starts:
        t.start()
    for t in starts:
        t.join()
    try:
        assert a.proc and b.proc and a.proc.poll() is None and b.proc.poll() is None, \
            "a server did not start (see its log)"
        yield a, b, token
    finally:
        a.stop()
        b.stop()
        with pg_admin_engine.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def _cli(url: str, token: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOWDER_ML_URL": url, "CLOWDER_ML_TOKEN": token,
           "XDG_CONFIG_HOME": str(home), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "clowder_ml", *args], env=env, text=True,
                       capture_output=True, timeout=120)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


def test_guessing_across_processes_addresses_and_a_restart(
        servers: tuple[ServerProcess, ServerProcess, str], tmp_path: Path) -> None:
    a, b, admin_token = servers
    # Twelve guesses at once, half at each server, each from its own address: the account's
    # count is one, in the database, so exactly the free ones get a password check.
    targets = [(a.url if i % 2 else b.url, 10 + i) for i in range(12)]
    with ThreadPoolExecutor(len(targets)) as pool:
        answers = list(pool.map(lambda t: _guess(*t), targets))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [401] * FREE + [429] * (12 - FREE), statuses
    waits = [int(r.headers["Retry-After"]) for r in answers if r.status_code == 429]
    assert all(500 < w <= 600 for w in waits), waits
    # The right password is refused during the wait, at either server, from a new address.
    assert _guess(a.url, 40, ALICE_PW).status_code == 429
    assert _guess(b.url, 41, ALICE_PW).status_code == 429

    # A crash and a restart forget nothing.
    a.kill()
    a.start()
    r = _guess(a.url, 42, ALICE_PW)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_attempts"

    # An administrator unlocks (CLI, at B); alice logs in at once (at A).
    home = tmp_path / "home"
    out = _cli(b.url, admin_token, home, "users", "unlock", "alice").stdout
    assert "cleared its failed log-ins" in out
    assert _guess(a.url, 43, ALICE_PW).status_code == 201

    # The audit (CLI, at the restarted A) lists every attempt with its address.
    page = json.loads(_cli(a.url, admin_token, home, "audit", "--actor", "alice",
                           "--action", "login", "--json").stdout)
    outcomes = [(e["outcome"], e["client"]) for e in reversed(page["events"])]
    assert sorted(o for o, _ in outcomes[:12]) == ["failure"] * FREE + ["refused"] * 9
    assert {c for _, c in outcomes[:12]} == {f"127.0.0.{n}" for _, n in targets}
    assert outcomes[12:] == [("refused", "127.0.0.40"), ("refused", "127.0.0.41"),
                             ("refused", "127.0.0.42"), ("success", "127.0.0.43")]
    table = _cli(a.url, admin_token, home, "audit", "--action", "login.unlocked").stdout
    assert "login.unlocked" in table and "user:alice" in table


def test_cross_site_write_and_headers_on_the_wire(
        servers: tuple[ServerProcess, ServerProcess, str]) -> None:
    a, _, admin_token = servers
    with httpx.Client(base_url=a.url, timeout=60) as browser:
        r = browser.post("/api/v1/auth/login", json={"username": "alice", "password": ALICE_PW})
        assert r.status_code == 200 and "HttpOnly" in r.headers["set-cookie"]
        evil = browser.post("/api/v1/datasets", json={"name": "forged"},
                            headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        assert evil.json()["error"]["code"] == "cross_site_request_refused"
        assert evil.headers["x-content-type-options"] == "nosniff"
        own = browser.post("/api/v1/datasets", json={"name": "mine"},
                           headers={"Origin": a.url})
        assert own.status_code == 201
        names = [d["name"] for d in browser.get("/api/v1/datasets").json()]
        assert names == ["mine"]
    token = httpx.post(a.url + "/api/v1/datasets", json={"name": "scripted"},
                       headers={"Origin": "http://evil.example",
                                "Authorization": f"Bearer {admin_token}"}, timeout=60)
    assert token.status_code == 201
    api = httpx.get(a.url + "/api/v1/users/me",
                    headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    ui = httpx.get(a.url + "/", timeout=60)
    for r, policy in ((api, "default-src 'none'"), (ui, "script-src 'self'")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["x-frame-options"] == "DENY"
        assert policy in r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
