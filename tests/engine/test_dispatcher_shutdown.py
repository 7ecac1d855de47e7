"""A server stopped while its embedded Ray head is still starting leaves no Ray behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clowder_ml.api.app import create_app
from clowder_ml.engine.ray_cluster import _pids_using, ray_temp_dir
from clowder_ml.settings import Settings

pytestmark = pytest.mark.timeout(240)


def test_shutdown_during_head_start_stops_the_head(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", admin_password="admin-pw-123",
                        ray_num_cpus=1, job_api_url="http://127.0.0.1:9")
    temp = ray_temp_dir(settings.resolved_data_dir)
    with TestClient(create_app(settings, announce=False)) as client:
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 60
        while not _pids_using(str(temp)):  # the first pass is starting the head
            assert time.monotonic() < deadline, "the embedded head never started"
            time.sleep(0.1)
    # The lifespan has ended: the head (started or half-started) is gone.
    deadline = time.monotonic() + 30
    while left := _pids_using(str(temp)):
        assert time.monotonic() < deadline, f"Ray processes outlived the server: {left}"
        time.sleep(0.2)
