"""The embedded Ray head starts with the first job, not with the server, and a server stopped
while its head is still starting leaves no Ray behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clowder_ml.api.app import create_app
from clowder_ml.engine.ray_cluster import _pids_using, ray_temp_dir
from clowder_ml.settings import Settings

pytestmark = pytest.mark.timeout(240)

PASSWORD = "admin-pw-123"


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", admin_password=PASSWORD, ray_num_cpus=1,
                    job_api_url="http://127.0.0.1:9", log_json=False)


def _submit_a_job(client: TestClient) -> None:
    token = client.post("/api/v1/auth/token", json={"username": "admin",
                                                    "password": PASSWORD}).json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/datasets", json={"name": "d"}, headers=h).status_code == 201
    r = client.post("/api/v1/datasets/d/files", files={"file": ("x", b"a\n1\n")},
                    data={"path": "a.csv"}, headers=h)
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/jobs", json={"task": "dataset-profile",
                                          "inputs": [{"kind": "dataset", "ref": "d"}]},
                    headers=h)
    assert r.status_code == 201, r.text


def test_no_job_no_ray_head(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    temp = ray_temp_dir(settings.resolved_data_dir)
    app = create_app(settings, announce=False)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        dispatcher = app.state.platform.dispatcher
        for _ in range(3):  # passes of the engine with nothing queued
            dispatcher.step()
        assert dispatcher.backend is None and not _pids_using(str(temp))


def test_shutdown_during_head_start_stops_the_head(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    temp = ray_temp_dir(settings.resolved_data_dir)
    with TestClient(create_app(settings, announce=False)) as client:
        assert not _pids_using(str(temp))
        _submit_a_job(client)  # the first job starts the head
        deadline = time.monotonic() + 60
        while not _pids_using(str(temp)):  # a pass is starting the head
            assert time.monotonic() < deadline, "the embedded head never started"
            time.sleep(0.1)
    # The lifespan has ended: the head (started or half-started) is gone.
    deadline = time.monotonic() + 30
    while left := _pids_using(str(temp)):
        assert time.monotonic() < deadline, f"Ray processes outlived the server: {left}"
        time.sleep(0.2)
