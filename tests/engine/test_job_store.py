"""The engine's port over the database (``services.job_store.DbJobStore``), on SQLite and
PostgreSQL: snapshots in queue order, the state machine's rules kept, the runner's token
issued only to a job that is still queued."""

from __future__ import annotations

import pytest

from clowder_ml.db.models import Job, User
from clowder_ml.engine.port import JobStore
from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState
from clowder_ml.errors import InvalidJobTransition
from clowder_ml.services import job_runs, job_tokens, jobs
from clowder_ml.services.job_store import DbJobStore
from tests.conftest import Api


def test_the_store_keeps_the_job_rules(api: Api) -> None:
    platform = api.app.state.platform
    store: JobStore = DbJobStore(platform.settings, platform.db)
    with platform.db.session() as s:
        admin = s.query(User).filter_by(username="admin").one()
        first = jobs.create(s, admin, JobSpec(task="dataset-profile", timeout_s=60)).id
        second = jobs.create(s, admin, JobSpec(task="dataset-profile")).id

    queue = store.pending()
    assert [j.id for j in queue] == [first, second]
    assert queue[0].state is JobState.PENDING and queue[0].spec.timeout_s == 60
    assert queue[0].attempt == 1 and queue[0].ray_submission_id is None
    assert store.active() == []

    store.set_waiting_all_pending("the job engine is starting")
    assert {j.waiting_for for j in store.pending()} == {"the job engine is starting"}

    token = store.claim_submission(first, first, 60.0)
    assert token is not None
    with platform.db.session() as s:
        assert job_tokens.resolve(s, token).id == first
        assert s.get(Job, first).ray_submission_id == first  # type: ignore[union-attr]
    store.transition(first, JobState.SUBMITTED, "submitted to Ray")
    assert [j.id for j in store.active()] == [first]
    assert [j.id for j in store.pending()] == [second]

    # A job cancelled meanwhile gets no token, and terminal jobs stay as they are.
    store.transition(second, JobState.CANCELLED, "cancelled", reason="Cancelled.")
    assert store.claim_submission(second, second, 60.0) is None
    store.set_waiting(second, "needs 1 CPU")
    with pytest.raises(InvalidJobTransition):
        store.transition(second, JobState.RUNNING, "zombie")
    assert store.state(second) is JobState.CANCELLED
    assert store.state("job_missing") is None

    store.set_waiting(first, "needs 1 CPU; 0 of 2 free")
    store.add_event(first, "stopping it on Ray")
    store.append_log(first, "ray: the runner died\n")
    with platform.db.session() as s:
        row = s.get(Job, first)
        cancelled = s.get(Job, second)
        assert row is not None and cancelled is not None
        assert row.waiting_for == "needs 1 CPU; 0 of 2 free"
        assert cancelled.waiting_for is None
        assert jobs.events(s, row)[-1].message == "stopping it on Ray"
        assert job_runs.read_log(platform.settings, first) == b"ray: the runner died\n"
        assert row.log_size == len(b"ray: the runner died\n")
