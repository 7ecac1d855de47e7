"""Engine fixtures on the session's one real Ray head (``ray_head``, in tests/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from clowder_ml.engine.ray_backend import RayJobsBackend
from clowder_ml.engine.ray_cluster import EmbeddedRayHead

if TYPE_CHECKING:
    from tests.conftest import ServerProcess
    from tests.engine.jobs_helpers import JobsApi


@pytest.fixture
def backend(ray_head: EmbeddedRayHead) -> RayJobsBackend:
    return RayJobsBackend(ray_head.address, ray_head.auth_token)


# a real API server with the job engine on the shared head ---------------------------------

TASKS_DIR = Path(__file__).parent  # holds cml_test_tasks.py, importable by server and runner


def engine_env(head: EmbeddedRayHead, cache_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a server whose engine uses ``head`` and knows the test tasks."""
    import json
    import os

    return {
        "CLOWDER_ML_ENGINE_ENABLED": "true",
        "CLOWDER_ML_RAY_ADDRESS": head.address,
        "CLOWDER_ML_RAY_AUTH_TOKEN": head.auth_token,
        "CLOWDER_ML_EXTRA_TASKS": '["cml_test_tasks"]',
        "CLOWDER_ML_JOB_ENV": json.dumps({"PYTHONPATH": str(TASKS_DIR),
                                          "CLOWDER_ML_CACHE_DIR": str(cache_dir)}),
        "PYTHONPATH": os.pathsep.join([str(TASKS_DIR), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


@contextlib.contextmanager
def engine_server(head: EmbeddedRayHead, base: Path,
                  datasets: dict[str, dict[str, bytes]] | None = None,
                  env: dict[str, str] | None = None,
                  ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    """A server on the shared head (data and node cache under ``base``, more settings in
    ``env``) with a logged-in client and ``datasets`` uploaded (name -> path -> bytes). On
    exit the server stops and any runner still calling it is killed."""
    from tests.conftest import ServerProcess
    from tests.engine.jobs_helpers import JobsApi

    # The cluster's shared volume for checkpoints: a folder on this one machine. A remote
    # cluster gets no server path unless it is set (the dispatcher's _shared_dir).
    shared = {"CLOWDER_ML_JOB_SHARED_DIR": str(base / "data" / "shared")}
    srv = ServerProcess(base / "data", env=engine_env(head, base / "cache",
                                                      **{**shared, **(env or {})}))
    srv.start()
    try:
        api = JobsApi(srv.url, srv.token())
        for name, files in (datasets or {}).items():
            api.dataset(name, files)
        yield srv, api
    finally:
        srv.stop()
        kill_runners(srv.url)


def kill_runners(api_url: str) -> None:
    """SIGKILL runner processes that call back ``api_url`` (a test's server): a test that
    fails midway must not leave runners retrying against a server that is gone."""
    import contextlib
    import os
    import signal

    needle = f"CLOWDER_ML_API_URL={api_url}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
