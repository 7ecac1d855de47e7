"""A lost pod, on the local head: every process of a running job (the runner and its training
worker) SIGKILLed at once, as when the node or pod under them goes.

With ``retry.on: ["worker_lost"]`` the job is resubmitted and the new attempt resumes from the
last checkpoint on the shared volume (the path a killed training worker alone takes inside
one attempt: tests/engine/test_finetune_e2e.py); without it the job fails, saying what
happened.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_server
from tests.engine.jobs_helpers import JobsApi
from tests.engine.test_finetune_e2e import PARAMS, reviews_csv

pytestmark = pytest.mark.timeout(600)


def job_processes(job_id: str) -> list[int]:
    """Pids of every process of the job's attempt: those with its id in their environment
    that run our code (the runner, its shell, the training worker)."""
    needle = f"CLOWDER_ML_JOB_ID={job_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"clowder_ml" in (entry / "cmdline").read_bytes() and \
                    needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def lose_the_pod(job_id: str) -> None:
    pids = job_processes(job_id)
    assert pids, "the job has no process to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def served(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ServerProcess, JobsApi]]:
    with engine_server(ray_head, tmp_path_factory.mktemp("pod-loss"),
                       {"reviews": {"train.csv": reviews_csv()}}) as s:
        yield s


def test_a_lost_pod_is_retried_and_resumes_from_the_last_checkpoint(
        served: tuple[ServerProcess, JobsApi]) -> None:
    srv, api = served
    job = api.submit("text-classification-finetune", datasets=("reviews",),
                     params={**PARAMS, "model_name": "podloss"}, resources={"cpus": 1},
                     retry={"max_retries": 1, "on": ["worker_lost"]})
    checkpoints = srv.data_dir / "shared" / "jobs" / job["id"] / "checkpoints"
    deadline = time.monotonic() + 300
    while not (checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))):
        assert time.monotonic() < deadline, api.job(job["id"])
        time.sleep(0.05)
    lose_the_pod(job["id"])
    done = api.wait(job["id"], timeout=400)
    assert done["state"] == "succeeded", (done, api.events(job["id"]))
    assert done["attempt"] == 2
    assert done["result"]["resumed_from_step"] is not None  # not from the beginning
    messages = [e["message"] for e in api.events(job["id"])]
    assert any(m.startswith("The job's process was killed (exit code") and
               m.endswith("Retrying (attempt 2 of 2).") for m in messages), messages
    assert any(m.startswith(f"submitted to Ray as {job['id']}-a2") for m in messages)


def test_without_a_retry_policy_a_lost_pod_fails_the_job_saying_so(
        served: tuple[ServerProcess, JobsApi]) -> None:
    _, api = served
    job = api.submit("test-sleep", params={"seconds": 60}, resources={"cpus": 0.5})
    api.wait(job["id"], {"running"})
    lose_the_pod(job["id"])
    done = api.wait(job["id"], timeout=120)
    assert done["state"] == "failed" and done["attempt"] == 1
    assert done["reason"].startswith("The job's process was killed (exit code"), done
