"""Log-in throttling: password guessing meets growing, decaying waits (429 + Retry-After),
per account and per client address, on the real API and on both databases.

The live-server side (state shared by two server processes, surviving a restart, parallel
guesses) is in ``test_auth_live.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clowder_ml.db import migrate
from clowder_ml.db.models import LoginThrottle, utcnow
from clowder_ml.db.session import Database
from clowder_ml.services import users
from clowder_ml.services.throttle import Policy, Throttle, account_key, address_key
from tests.conftest import ADMIN_PW, Api

# Short waits so that tests which really wait stay quick.
FAST = {"login_base_delay_s": 0.25, "login_max_delay_s": 2.0}
WRONG = "not-the-password"


def _token(c: TestClient, username: str, password: str, **kw: Any) -> Any:
    return c.post("/api/v1/auth/token", json={"username": username, "password": password},
                  **kw)


# the policy --------------------------------------------------------------------------

def test_waits_start_after_the_free_failures_double_and_are_capped() -> None:
    p = Policy(free_failures=5, base_delay_s=1.0, max_delay_s=900.0, half_life_s=3600.0)
    assert [p.wait_s(n) for n in range(5)] == [0.0] * 5
    assert [p.wait_s(n) for n in (5, 6, 7, 8)] == [1.0, 2.0, 4.0, 8.0]
    # Earlier failures decay a little before the fifth arrives: it still starts the wait.
    assert p.wait_s(4.9999) == 1.0
    assert p.wait_s(50) == 900.0 and p.wait_s(1e9) == 900.0
    assert p.decayed(8.0, 3600.0) == pytest.approx(4.0)
    assert p.decayed(8.0, -5.0) == 8.0  # a clock step back never adds failures


def test_address_keys() -> None:
    assert address_key("203.0.113.9") == "address:203.0.113.9"
    # One IPv6 /64 is usually one machine: its addresses share a count.
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") \
        == "address:2001:db8:1:2::/64"
    assert address_key("::ffff:203.0.113.9") == "address:203.0.113.9"
    assert address_key(None) == "address:unknown" and address_key("testclient")
    assert account_key(" Admin ") == account_key("admin") == "account:admin"


# the service on both databases --------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (request.getfixturevalue("pg_url") if request.param == "postgresql"
           else f"sqlite:///{tmp_path}/t.sqlite3")
    database = Database(url)
    migrate.upgrade(database.engine)
    yield database
    database.dispose()


def test_service_counts_refuses_decays_and_resets(db: Database) -> None:
    policy = Policy(free_failures=3, base_delay_s=10.0, max_delay_s=100.0, half_life_s=600.0)
    t = Throttle(account=policy, address=Policy(20, 10.0, 100.0, 600.0))
    t0 = utcnow()

    def admit(at: float, user: str = "alice", client: str = "198.51.100.7") -> float | None:
        with db.session() as s:
            return t.admit(s, user, client, now=t0 + timedelta(seconds=at))

    assert [admit(0), admit(1), admit(2)] == [None, None, None]  # three free failures
    assert admit(3) == pytest.approx(9.0, abs=0.1)  # the third started a 10 s wait
    assert admit(11.9) == pytest.approx(0.1, abs=0.1)  # a refusal counts nothing
    assert admit(12.5) is None  # the wait is over: this attempt is counted (4th failure)
    # ... and waits about 20 s now (a little less: the earlier failures decayed a bit).
    assert admit(13) == pytest.approx(19.0, abs=0.6)
    # Another account from the same address is not held up by alice's count.
    assert admit(13, user="bob") is None
    # Failures decay: after long enough the account is free again, with a small count.
    assert admit(12.5 + 3000) is None
    with db.session() as s:
        row = s.get(LoginThrottle, account_key("alice"))
        assert row is not None and 1.0 < row.score < 1.2
        # The right password clears the account; the address keeps its earlier failures
        # minus the one just counted.
        before = s.get(LoginThrottle, address_key("198.51.100.7"))
        assert before is not None
        address_score = before.score
        t.succeeded(s, "alice", "198.51.100.7", now=t0 + timedelta(seconds=3013))
    with db.session() as s:
        assert s.get(LoginThrottle, account_key("alice")) is None
        after = s.get(LoginThrottle, address_key("198.51.100.7"))
        assert after is not None and after.score == pytest.approx(address_score - 1, abs=0.2)
        # Long-decayed keys are pruned; fresh ones stay.
        assert t.prune(s, now=t0 + timedelta(seconds=3013 + 10 * 600 + 1)) >= 1
        assert s.get(LoginThrottle, address_key("198.51.100.7")) is None


# the API ----------------------------------------------------------------------------

def test_thirty_wrong_passwords_meet_429_and_the_right_one_works_after_the_wait(
        make_api: Any) -> None:
    api = make_api(**FAST)
    c = api.client
    statuses, retry = [], []
    for _ in range(30):
        r = _token(c, "admin", WRONG)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "too_many_attempts"
            retry.append(int(r.headers["Retry-After"]))
    assert set(statuses) == {401, 429}
    # The account gets 5 free failures; then at most a few more are even checked as the
    # waits (0.25 s, 0.5 s, 1 s, ...) outgrow the time the loop takes.
    assert 5 <= statuses.index(429) <= 7, statuses
    assert statuses.count(401) <= 9, statuses
    assert all(1 <= s <= 2 for s in retry)
    # The right password is refused during the wait (it is not even checked) ...
    r = _token(c, "admin", ADMIN_PW)
    if r.status_code == 429:
        time.sleep(int(r.headers["Retry-After"]))  # the wait under test, ~1 s
        r = _token(c, "admin", ADMIN_PW)
    # ... and works once it is over; success clears the account's failures.
    assert r.status_code == 201, r.text
    assert _token(c, "admin", WRONG).status_code == 401


def test_session_login_shares_the_throttle_with_token_login(make_api: Any) -> None:
    api = make_api(login_base_delay_s=60.0)
    c = api.client
    for _ in range(5):
        assert _token(c, "admin", WRONG).status_code == 401
    r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PW})
    assert r.status_code == 429 and 55 <= int(r.headers["Retry-After"]) <= 60
    assert "set-cookie" not in r.headers
    # A token already issued keeps working: throttling guards the password, not sessions.
    assert c.get("/api/v1/users/me", headers=api.h()).status_code == 200
    # An administrator can end the wait.
    r = c.post("/api/v1/users/admin/unlock", headers=api.h())
    assert r.status_code == 200 and r.json() == {"username": "admin", "had_failures": True}
    assert _token(c, "admin", ADMIN_PW).status_code == 201


def test_guesses_spread_over_addresses_still_meet_the_account_count(make_api: Any) -> None:
    """Behind a trusted proxy each guess comes from another client address: the account's
    count still throttles them."""
    api = make_api(login_base_delay_s=60.0, trusted_proxies=["10.0.0.1"])
    proxy = TestClient(api.app, client=("10.0.0.1", 4000))
    statuses = [_token(proxy, "admin", WRONG,
                       headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(1, 12)]
    assert statuses == [401] * 5 + [429] * 6
    # Each guess was recorded under its own address.
    page = api.client.get("/api/v1/audit", params={"action": "login", "actor": "admin",
                                                   "outcome": "failure"}, headers=api.h())
    assert {e["client"] for e in page.json()["events"]} == \
        {f"203.0.113.{i}" for i in range(1, 6)}


def test_one_address_guessing_many_accounts_is_throttled(make_api: Any) -> None:
    api = make_api(login_base_delay_s=60.0)
    statuses = [_token(api.client, f"user{i}", WRONG).status_code for i in range(30)]
    # 10 free failures per address (each account got only one), then waits.
    assert statuses == [401] * 10 + [429] * 20


def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_api: Any) -> None:
    """Without trusted proxies a client cannot pick a new address per guess."""
    api = make_api(login_base_delay_s=60.0)
    statuses = [_token(api.client, f"user{i}", WRONG,
                       headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(12)]
    assert statuses == [401] * 10 + [429] * 2


def test_successful_log_in_clears_the_account_count(make_api: Any) -> None:
    api = make_api(login_base_delay_s=60.0)
    for _ in range(4):
        assert _token(api.client, "admin", WRONG).status_code == 401
    assert _token(api.client, "admin", ADMIN_PW).status_code == 201
    # Four more failures are free again (the count restarted at zero).
    assert [_token(api.client, "admin", WRONG).status_code for _ in range(5)] == \
        [401] * 5
    assert _token(api.client, "admin", WRONG).status_code == 429


def test_refusal_reveals_nothing_about_which_accounts_exist(make_api: Any) -> None:
    api = make_api(login_base_delay_s=60.0)
    with api.app.state.platform.db.session() as s:
        users.create_user(s, "carol", "carol-password")
    a = [_token(api.client, "carol", WRONG) for _ in range(6)][-1]
    proxy = TestClient(api.app, client=("192.0.2.50", 1))  # another address, fresh count
    b = [_token(proxy, "nobody", WRONG) for _ in range(6)][-1]
    assert a.status_code == b.status_code == 429
    assert a.json() == b.json()


def test_invalid_trusted_proxies_stop_the_server(make_api: Any) -> None:
    with pytest.raises(Exception, match="TRUSTED_PROXIES"):
        make_api(trusted_proxies=["*"])


def test_throttle_applies_on_postgresql_too(api: Api) -> None:
    """The default policy on both databases: 5 free failures per account, then waits
    (of 1 s, 2 s, ...: at least one of the next two attempts arrives within them)."""
    statuses = [_token(api.client, "admin", WRONG).status_code for _ in range(7)]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:], statuses
