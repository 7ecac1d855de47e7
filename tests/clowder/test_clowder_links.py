"""The Clowder links, on SQLite and PostgreSQL: a Clowder user gets an account of their own
(never an existing local one, whatever their e-mail says), and one record per extraction
request, however many times its message is delivered."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from clowder_ml.db.models import ClowderAccount, ClowderRequest, User
from clowder_ml.services import clowder_links
from tests.conftest import Api

URL = "https://clowder.example.org"


def test_a_clowder_user_never_lands_on_a_local_account(api: Api) -> None:
    db = api.app.state.platform.db
    user = clowder_links.account_user(db, URL, "64f0c0ffee", "admin@example.org")
    assert user.username.startswith("clowder-admin-") and not user.is_admin
    assert clowder_links.account_user(db, URL, "64f0c0ffee", "admin@example.org").id == user.id
    # The same e-mail on another Clowder, or another Clowder id, is another person.
    other = clowder_links.account_user(db, "https://other.example.org", "64f0c0ffee",
                                       "admin@example.org")
    renamed = clowder_links.account_user(db, URL, "64f0c0ffef", "admin@example.org")
    assert len({user.id, other.id, renamed.id}) == 3
    with db.session() as s:
        admin = s.scalar(select(User).where(User.username == "admin"))
        assert admin is not None and admin.id not in {user.id, other.id, renamed.id}
        assert s.scalar(select(func.count()).select_from(ClowderAccount)) == 3


def test_odd_emails_still_make_valid_usernames(api: Api) -> None:
    db = api.app.state.platform.db
    for email in ("", "Ünïcode+tag@x", "..@x", "a" * 200 + "@x"):
        user = clowder_links.account_user(db, URL, f"id-{len(email)}-{email[:2]}", email)
        assert 2 <= len(user.username) <= 64


def test_one_record_per_request_even_when_delivered_at_once(api: Api) -> None:
    db = api.app.state.platform.db
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: clowder_links.take_request(
            db, URL, "job-1", "clowder-ml.dataset-profile", "ds-1"), range(4)))
    assert len({r.id for r in got}) == 1
    req = got[0]
    assert req.job_id is None and req.written_back == [] and not req.done
    clowder_links.mark_written(db, req.id, "predictions")
    clowder_links.mark_written(db, req.id, "predictions")
    again = clowder_links.mark_done(db, req.id, "SUCCEEDED", "clowder-ml job j succeeded.")
    assert again.written_back == ["predictions"] and again.done
    assert (again.final_status, again.final_message) == ("SUCCEEDED",
                                                          "clowder-ml job j succeeded.")
    assert clowder_links.take_request(db, URL, "job-1", "x", "y").done
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ClowderRequest)) == 1


def test_one_delivery_at_a_time_holds_a_request(api: Api) -> None:
    db = api.app.state.platform.db
    req = clowder_links.take_request(db, URL, "job-2", "clowder-ml.dataset-profile", "ds-1")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: clowder_links.acquire_lease(db, req.id, f"d{i}", 60),
                            range(8)))
    assert won.count(True) == 1
    holder = f"d{won.index(True)}"
    other = "d-other" if holder != "d-other" else "d-x"
    assert clowder_links.renew_lease(db, req.id, holder, 60)
    assert not clowder_links.renew_lease(db, req.id, other, 60)
    assert clowder_links.acquire_lease(db, req.id, holder, 60)  # its own: again
    clowder_links.release_lease(db, req.id, other)  # not theirs: no effect
    assert not clowder_links.acquire_lease(db, req.id, other, 60)
    clowder_links.release_lease(db, req.id, holder)
    assert clowder_links.acquire_lease(db, req.id, other, 60)


def test_a_lease_that_ran_out_is_taken_over(api: Api) -> None:
    db = api.app.state.platform.db
    req = clowder_links.take_request(db, URL, "job-3", "clowder-ml.dataset-profile", "ds-1")
    assert clowder_links.acquire_lease(db, req.id, "killed", -1)  # already ran out
    assert clowder_links.acquire_lease(db, req.id, "next", 60)
    assert not clowder_links.renew_lease(db, req.id, "killed", 60)  # it learns it lost it
    assert clowder_links.get_request(db, req.id).lease_owner == "next"
