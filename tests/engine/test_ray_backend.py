"""The Ray Jobs backend and the embedded head, against a real local Ray head."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from clowder_ml.engine.ray_backend import RayJobsBackend, RayJobState, RayJobStatus
from clowder_ml.engine.ray_cluster import EmbeddedRayHead, connect, ray_temp_dir
from clowder_ml.errors import AlreadyExists, EngineUnavailable, NotFound
from clowder_ml.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PY = shlex.quote(sys.executable)


def _id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


def _wait(backend: RayJobsBackend, job_id: str, timeout: float = 45.0) -> RayJobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = backend.status(job_id)
        if st.state.is_terminal():
            return st
        time.sleep(0.2)
    raise AssertionError(f"{job_id} not terminal after {timeout} s: {backend.status(job_id)}")


def test_success_uses_our_id_and_logs(backend: RayJobsBackend, ray_head: EmbeddedRayHead) -> None:
    job_id = _id()
    backend.submit(
        job_id, [sys.executable, "-c", "import os; print('hi', os.environ['CML_X'])"],
        env={"CML_X": "42"}, num_cpus=1,
    )
    st = _wait(backend, job_id)
    assert st.state is RayJobState.SUCCEEDED, st
    assert st.exit_code == 0
    assert "hi 42" in backend.logs(job_id)
    # Ray itself files the job under our id, with the CPU reservation we asked for.
    raw = httpx.get(
        f"{ray_head.address}/api/jobs/{job_id}",
        headers={"Authorization": f"Bearer {ray_head.auth_token}"},
    ).json()
    assert raw["submission_id"] == job_id
    assert raw.get("entrypoint_num_cpus", 1) == 1
    assert job_id in {j.job_id for j in backend.list()}


def test_failure_surfaces_message(backend: RayJobsBackend) -> None:
    job_id = _id()
    backend.submit(job_id, f"{PY} -c \"import sys; print('boom'); sys.exit(3)\"")
    st = _wait(backend, job_id)
    assert st.state is RayJobState.FAILED
    assert st.exit_code == 3
    assert st.message is not None and "exit code 3" in st.message and "boom" in st.message


def test_stop_kills_the_process(backend: RayJobsBackend) -> None:
    job_id = _id()
    backend.submit(
        job_id,
        f"{PY} -c \"import os, time; print('pid', os.getpid(), flush=True); time.sleep(600)\"",
    )
    deadline = time.monotonic() + 30
    pid = None
    while pid is None and time.monotonic() < deadline:
        for line in backend.logs(job_id).splitlines():
            if line.startswith("pid "):
                pid = int(line.split()[1])
        time.sleep(0.2)
    assert pid is not None and Path(f"/proc/{pid}").exists()
    assert backend.status(job_id).state is RayJobState.RUNNING
    assert backend.stop(job_id) is True
    assert _wait(backend, job_id).state is RayJobState.STOPPED
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()


def test_too_large_request_stays_pending(
    backend: RayJobsBackend, ray_head: EmbeddedRayHead
) -> None:
    """Ray does not reject a reservation larger than the cluster: the job waits in PENDING.

    So the engine must compare requests with ``cluster_resources()`` to fail fast. Ray 2.60
    cannot stop such a job either: ``stop`` is queued on the job's supervisor actor, which is
    never scheduled, so the job stays PENDING until the cluster grows (or goes away).
    """
    res = backend.cluster_resources()
    assert res.cpus == ray_head.num_cpus
    assert res.nodes == 1 and res.memory_bytes > 0
    job_id = _id()
    backend.submit(job_id, "echo never", num_cpus=res.cpus + 1)
    time.sleep(3)
    st = backend.status(job_id)
    assert st.state is RayJobState.PENDING
    assert st.message is not None and "waiting for resources" in st.message


def test_tail_logs_follows_until_done(backend: RayJobsBackend) -> None:
    job_id = _id()
    backend.submit(job_id, "echo first; sleep 1; echo second")

    async def collect() -> str:
        return "".join([chunk async for chunk in backend.tail_logs(job_id)])

    text = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    assert "first" in text and "second" in text


def test_errors_are_ours(backend: RayJobsBackend) -> None:
    with pytest.raises(NotFound):
        backend.status("no-such-job")
    job_id = _id()
    backend.submit(job_id, "true")
    with pytest.raises(AlreadyExists):
        backend.submit(job_id, "true")
    _wait(backend, job_id)


def test_token_auth_is_on(ray_head: EmbeddedRayHead) -> None:
    assert httpx.get(f"{ray_head.address}/api/jobs/").status_code == 401
    with pytest.raises(EngineUnavailable):
        RayJobsBackend(ray_head.address, "wrong-token").list()


def test_unreachable_cluster_is_engine_unavailable() -> None:
    with pytest.raises(EngineUnavailable):
        RayJobsBackend("http://127.0.0.1:9").list()


def test_connect_to_address_starts_nothing(tmp_path: Path) -> None:
    cluster = connect(Settings(data_dir=tmp_path, ray_address="http://ray-head:8265/"))
    assert cluster.address == "http://ray-head:8265" and cluster.embedded is None
    cluster.stop()  # a remote cluster is left alone


def test_temp_dir_is_short() -> None:
    assert ray_temp_dir(Path("/d")) == Path("/d/ray")
    long = ray_temp_dir(Path("/" + "x" * 80))
    assert str(long).startswith("/tmp/cml-ray-") and len(str(long)) < 40


def test_embedded_head_stop_leaves_no_processes() -> None:
    temp_dir = Path(tempfile.mkdtemp(prefix="cml-ray-", dir="/tmp"))
    head = EmbeddedRayHead(temp_dir, num_cpus=1)
    try:
        head.start()
        pids = head.pids()
        assert pids, "a started head has processes naming its temp folder"
        head.stop()
        assert head.pids() == []
        assert not any(Path(f"/proc/{p}").exists() for p in pids)
        head.stop()  # idempotent
    finally:
        head.stop()  # also on failure: never leave a head behind
        shutil.rmtree(temp_dir, ignore_errors=True)
