"""Faults injected for real while jobs run: the API server SIGKILLed and restarted, a job
submitted to Ray just before a crash, the embedded Ray head killed under running jobs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clowder_ml.db import migrate
from clowder_ml.db.session import Database
from clowder_ml.engine.dispatcher import Dispatcher, submission_id
from clowder_ml.engine.ray_backend import RayJobsBackend
from clowder_ml.engine.ray_cluster import EmbeddedRayHead, _pids_using, ray_temp_dir
from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState
from clowder_ml.services import jobs, users
from clowder_ml.services.job_store import DbJobStore
from clowder_ml.settings import Settings
from clowder_ml.tasks.registry import TaskRegistry
from tests.conftest import ServerProcess
from tests.engine.conftest import TASKS_DIR, engine_env, kill_runners
from tests.engine.jobs_helpers import JobsApi

pytestmark = pytest.mark.timeout(300)


def test_server_killed_mid_job_reattaches_and_nothing_runs_twice(
        ray_head: EmbeddedRayHead, backend: RayJobsBackend, tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", env=engine_env(ray_head, tmp_path / "cache"))
    srv.start()
    try:
        api = JobsApi(srv.url, srv.token())
        job = api.submit("test-sleep", params={"seconds": 6, "lines": 3})
        api.wait(job["id"], {"running"})
        srv.kill()  # SIGKILL: no shutdown, as in a crash
        time.sleep(2)  # the job runs on, its runner retrying its reports
        srv.start()
        done = api.wait(job["id"], timeout=90)
        assert done["state"] == "succeeded", done
        assert done["result"]["slept"] == 6
        events = api.events(job["id"])
        assert sum(e["message"] == "runner started" for e in events) == 1
        assert sum(e["message"].startswith("submitted to Ray") for e in events) == 1
        # Ray ran it exactly once.
        assert [j.job_id for j in backend.list() if j.job_id.startswith(job["id"])] == \
            [job["id"]]
        # Logs written while the server was down arrived after the restart.
        log = api.http.get(f"/api/v1/jobs/{job['id']}/logs").text
        assert all(f"line {i}" in log for i in range(3))
    finally:
        srv.stop()
        kill_runners(srv.url)


def test_job_submitted_just_before_a_crash_is_found_not_rerun(
        ray_head: EmbeddedRayHead, backend: RayJobsBackend, tmp_path: Path) -> None:
    """The crash window between Ray accepting a job and our database saying so."""
    settings = Settings(data_dir=tmp_path / "data", admin_password="admin-pw-123",
                        ray_address=ray_head.address, ray_auth_token=ray_head.auth_token,
                        job_api_url="http://127.0.0.1:9", extra_tasks=["cml_test_tasks"],
                        job_env={"PYTHONPATH": str(TASKS_DIR)})
    settings.ensure_dirs()
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)
    with db.session() as s:
        users.ensure_admin(s, "admin-pw-123")
        admin = users.get_user_by_name(s, "admin")
        job = jobs.submit(s, admin, JobSpec(task="test-sleep"), TaskRegistry(["cml_test_tasks"]))
        job_id = job.id
    # Ray got it (as the dispatcher would have submitted it) but the server died before
    # recording SUBMITTED.
    backend.submit(job_id, ["true"], num_cpus=0.1)
    dispatcher = Dispatcher(settings, DbJobStore(settings, db))
    dispatcher.step()
    with db.session() as s:
        row = jobs.get(s, admin, job_id)
        assert row.state == JobState.SUBMITTED.value
        assert row.ray_submission_id == job_id == submission_id(row)
        assert any("before a server restart" in e.message for e in jobs.events(s, row))
    assert [j.job_id for j in backend.list() if j.job_id == job_id] == [job_id]
    # Ray finishes it without a runner report: settled as a failure with that reason.
    deadline = time.monotonic() + 30
    while not backend.status(job_id).state.is_terminal():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    dispatcher.step()
    with db.session() as s:
        row = jobs.get(s, admin, job_id)
        assert row.state == JobState.FAILED.value
        assert row.reason == "The runner exited without reporting a result."
    db.dispose()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on its own embedded head (no CLOWDER_ML_RAY_ADDRESS), as `serve` runs."""
    env = engine_env(EmbeddedRayHead(Path("/tmp/unused")), tmp_path / "cache",
                     CLOWDER_ML_RAY_NUM_CPUS="2", CLOWDER_ML_RAY_LOST_AFTER_S="3")
    env["CLOWDER_ML_RAY_ADDRESS"] = ""
    env.pop("CLOWDER_ML_RAY_AUTH_TOKEN")
    srv = ServerProcess(tmp_path / "data", env=env)
    srv.start()
    temp = ray_temp_dir(srv.data_dir.resolve())
    try:
        yield srv
    finally:
        srv.stop()
        kill_runners(srv.url)
        # Whatever the test did, no Ray process of this data folder outlives it.
        _kill_head(temp, everything=True)
        shutil.rmtree(temp, ignore_errors=True)


def _session(temp: Path) -> int | None:
    try:
        return int(json.loads((temp / "head.json").read_text())["session"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kill_head(temp: Path, *, everything: bool = False) -> None:
    """SIGKILL the head's core processes (those naming ``temp``): the runners, orphaned,
    live on, as on a node cut off from its head. ``everything``: its whole session too."""
    for pid in _pids_using(str(temp), _session(temp) if everything else None):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _head_state(srv: ServerProcess) -> str:
    return (ray_temp_dir(srv.data_dir.resolve()) / "head.json").read_text()


def _runner_pids(folder: Path, *job_ids: str) -> list[int]:
    deadline = time.monotonic() + 30
    while not all((folder / f"{j}.pids").exists() for j in job_ids):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return [int((folder / f"{j}.pids").read_text().split()[0]) for j in job_ids]


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    except OSError:
        return False


def test_embedded_head_survives_a_server_kill_and_a_lost_head_retries_jobs(
        embedded: ServerProcess, tmp_path: Path) -> None:
    api = JobsApi(embedded.url, embedded.token())
    # The first job waits for the head that `serve` starts in the background.
    job = api.submit("test-sleep", params={"seconds": 4}, resources={"cpus": 0.5})
    api.wait(job["id"], {"running"}, timeout=120)
    head_before = _head_state(embedded)
    embedded.kill()
    embedded.start()
    assert api.wait(job["id"], timeout=60)["state"] == "succeeded"
    assert _head_state(embedded) == head_before  # the surviving head was adopted

    # Now the Ray head dies under two running jobs: the one with a retry policy is
    # resubmitted to a new head and succeeds; the other fails saying why.
    pids = tmp_path / "pids"
    retried = api.submit("test-sleep", params={"seconds": 20, "write_dir": str(pids)},
                         resources={"cpus": 0.5}, retry={"max_retries": 1})
    plain = api.submit("test-sleep", params={"seconds": 60, "write_dir": str(pids)},
                       resources={"cpus": 0.5})
    api.wait(retried["id"], {"running"})
    api.wait(plain["id"], {"running"})
    first_runners = _runner_pids(pids, retried["id"], plain["id"])
    temp = ray_temp_dir(embedded.data_dir.resolve())
    _kill_head(temp)  # the runners themselves survive, orphaned, as on a partitioned node
    lost = api.wait(plain["id"], timeout=120)
    assert lost["state"] == "failed"
    assert lost["reason"] == "The embedded Ray head stopped under the job.", lost["reason"]
    # Orphaned runners stop on their own once the server refuses their job token.
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in first_runners):
        assert time.monotonic() < deadline, "an orphaned runner kept running"
        time.sleep(0.2)
    again = api.wait(retried["id"], timeout=180)
    assert again["state"] == "succeeded", again
    assert again["attempt"] == 2
    assert any("Retrying (attempt 2 of 2)" in e["message"] for e in api.events(retried["id"]))
    assert _head_state(embedded) != head_before  # a new head was started

    # A graceful stop takes the embedded head down with the server, every process of it.
    session = _session(temp)
    embedded.stop()
    deadline = time.monotonic() + 30
    while _pids_using(str(temp), session):
        assert time.monotonic() < deadline, "the embedded head outlived the server"
        time.sleep(0.5)
