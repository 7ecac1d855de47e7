"""Jobs in the database (SQLite and PostgreSQL): owners only, events per change, terminal
states final even under concurrent changes."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from clowder_ml.db.models import User
from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState
from clowder_ml.errors import InvalidJobTransition, NotFound
from clowder_ml.services import jobs
from tests.conftest import Api


def _users(api: Api) -> tuple[User, User]:
    api.user("alice")
    api.user("bob")
    with api.app.state.platform.db.session() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        bob = s.scalar(select(User).where(User.username == "bob"))
        assert alice and bob
        s.expunge_all()
        return alice, bob


def test_lifecycle_events_and_visibility(api: Api) -> None:
    db = api.app.state.platform.db
    alice, bob = _users(api)
    with db.session() as s:
        job_id = jobs.create(s, alice, JobSpec(task="dataset-profile")).id
    for state, msg in [(JobState.SUBMITTED, "submitted to ray"),
                       (JobState.RUNNING, "started"), (JobState.SUCCEEDED, "done")]:
        job = jobs.transition(db, job_id, state, msg, result={"rows": 3} if
                              state is JobState.SUCCEEDED else None)
    assert job.state == "succeeded" and job.result == {"rows": 3} and job.ended_at
    with db.session() as s:
        got = jobs.get(s, alice, job_id)
        assert [e.state for e in jobs.events(s, got)] == [
            "pending", "submitted", "running", "succeeded"]
        with pytest.raises(NotFound):
            jobs.get(s, bob, job_id)
        assert jobs.list_visible(s, bob) == []
        assert [j.id for j in jobs.list_visible(s, alice, JobState.SUCCEEDED)] == [job_id]
    with pytest.raises(InvalidJobTransition):
        jobs.transition(db, job_id, JobState.RUNNING, "zombie")


def test_retry_counts_attempts(sqlite_api: Api) -> None:
    db = sqlite_api.app.state.platform.db
    alice, _ = _users(sqlite_api)
    with db.session() as s:
        job_id = jobs.create(s, alice, JobSpec(task="fine-tune")).id
    jobs.transition(db, job_id, JobState.SUBMITTED, "submitted")
    jobs.transition(db, job_id, JobState.RUNNING, "started")
    job = jobs.transition(db, job_id, JobState.PENDING, "cluster lost; retrying",
                          reason="cluster_lost")
    assert job.attempt == 2 and job.reason == "cluster_lost"


def test_concurrent_final_changes_one_wins(api: Api) -> None:
    db = api.app.state.platform.db
    alice, _ = _users(api)
    for _ in range(5):
        with db.session() as s:
            job_id = jobs.create(s, alice, JobSpec(task="fine-tune")).id
        jobs.transition(db, job_id, JobState.SUBMITTED, "submitted")
        jobs.transition(db, job_id, JobState.RUNNING, "started")
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def change(state: JobState) -> None:
            barrier.wait()
            try:
                jobs.transition(db, job_id, state, state.value)
                outcomes.append(state.value)
            except InvalidJobTransition:
                outcomes.append("refused")

        threads = [threading.Thread(target=change, args=(st,))
                   for st in (JobState.SUCCEEDED, JobState.CANCELLED)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes).count("refused") == 1, outcomes
        with db.session() as s:
            job = jobs.get(s, alice, job_id)
            assert job.state in ("succeeded", "cancelled")
            assert [e.state for e in jobs.events(s, job)][-1] == job.state


@pytest.mark.parametrize(("params", "resources", "expect"), [
    ({"use_gpu": True}, {}, (201, True, 1.0)),  # use_gpu reserves a GPU
    ({}, {"gpus": 1}, (201, True, 1.0)),  # a reserved GPU is used
    ({}, {}, (201, False, 0.0)),
    ({"use_gpu": True}, {"gpus": 0}, (422, None, None)),  # would train on the CPU
    ({"use_gpu": False}, {"gpus": 2}, (422, None, None)),  # would hold idle GPUs
])
def test_use_gpu_and_reserved_gpus_agree(sqlite_api: Api, params: dict[str, object],
                                         resources: dict[str, object],
                                         expect: tuple[int, bool | None, float | None]
                                         ) -> None:
    api = sqlite_api
    api.dataset("reviews", files={"train.csv": b"text,label\ngood,pos\nbad,neg\n"})
    r = api.client.post("/api/v1/jobs", headers=api.h(), json={
        "task": "text-classification-finetune", "inputs": [{"kind": "dataset",
                                                             "ref": "reviews"}],
        "params": {"model_name": "m", **params}, "resources": resources})
    status, use_gpu, gpus = expect
    assert r.status_code == status, r.text
    if status == 201:
        spec = r.json()["spec"]
        assert (spec["params"].get("use_gpu", False), spec["resources"]["gpus"]) == (use_gpu,
                                                                                    gpus)
    else:
        assert "use_gpu" in r.json()["error"]["message"]
