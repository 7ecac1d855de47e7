"""Autoscaling for real: Ray's own autoscaler on fake nodes (see fake_autoscaler.py) behind
a real server whose CLOWDER_ML_RAY_NODE_TYPES describes the same node types.

A job larger than the cluster now but within what the autoscaler can add is accepted, waits
(an event says for what), runs on the node the autoscaler adds, and that node goes away once
idle; a GPU job is accepted because a GPU node type exists at zero nodes; requests beyond the
ceiling fail at once, naming it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_autoscaler import FakeAutoscalingHead

from tests.conftest import ServerProcess
from tests.engine.conftest import engine_env, kill_runners
from tests.engine.jobs_helpers import JobsApi

pytestmark = pytest.mark.timeout(600)

# The head has 1 CPU; the autoscaler may add one 2-CPU node and one node with a (fake) GPU.
HEAD_CPUS = 1
NODE_TYPES: dict[str, dict[str, Any]] = {
    "cpu": {"resources": {"CPU": 2}, "node_config": {}, "min_workers": 0, "max_workers": 1},
    "gpu": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0,
            "max_workers": 1},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[FakeAutoscalingHead, JobsApi]]:
    temp_dir = Path(tempfile.mkdtemp(prefix="cml-as-", dir="/tmp"))  # short: Ray sockets
    head = FakeAutoscalingHead(temp_dir, HEAD_CPUS, NODE_TYPES, idle_timeout_s=6)
    base = tmp_path_factory.mktemp("autoscaling")
    srv = ServerProcess(base / "data", env=engine_env(
        head, base / "cache", CLOWDER_ML_RAY_NODE_TYPES=json.dumps(NODE_TYPES)))
    try:
        head.start()
        srv.start()
        yield head, JobsApi(srv.url, srv.token())
    finally:
        srv.stop()
        kill_runners(srv.url)
        head.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def worker_nodes(head: FakeAutoscalingHead) -> list[dict[str, Any]]:
    """Every worker node Ray has known (alive or dead), from the State API."""
    r = httpx.get(f"{head.address}/api/v0/nodes", params={"detail": "true", "limit": "100"},
                  headers={"Authorization": f"Bearer {head.auth_token}"}, timeout=10)
    r.raise_for_status()
    return [n for n in r.json()["data"]["result"]["result"] if not n["is_head_node"]]


def wait_until_idle_nodes_are_gone(head: FakeAutoscalingHead, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while any(n["state"] == "ALIVE" for n in worker_nodes(head)):
        assert time.monotonic() < deadline, worker_nodes(head)
        time.sleep(0.5)


def waited_then_ran(api: JobsApi, job_id: str) -> list[dict[str, Any]]:
    """The job's events from its wait for resources on; asserts it waited, then ran."""
    events = api.events(job_id)
    messages = [e["message"] for e in events]
    waiting = [i for i, m in enumerate(messages) if m.startswith("waiting for resources: ")]
    running = [i for i, m in enumerate(messages) if m == "runner started"]
    assert len(waiting) == 1 and len(running) == 1, messages
    assert waiting[0] < running[0], messages
    assert events[waiting[0]]["state"] == "submitted"
    assert events[running[0]]["state"] == "running"
    return events[waiting[0]:]


def test_a_job_bigger_than_the_cluster_waits_for_a_new_node_runs_and_the_node_goes(
        cluster: tuple[FakeAutoscalingHead, JobsApi]) -> None:
    head, api = cluster
    assert worker_nodes(head) == []  # the head alone: 1 CPU
    job = api.submit("test-sleep", params={"seconds": 1}, resources={"cpus": 2})
    done = api.wait(job["id"], timeout=240)
    assert done["state"] == "succeeded", (done, api.events(job["id"]))
    events = waited_then_ran(api, job["id"])
    assert events[0]["message"] == (
        "waiting for resources: needs 2 CPUs; 1 of 1 free; the autoscaler can grow the "
        "cluster to 4 CPUs, 1 GPU")
    # It ran on the node the autoscaler added for it (the cpu type), which goes when idle.
    (node,) = worker_nodes(head)
    assert node["resources_total"]["CPU"] == 2 and "GPU" not in node["resources_total"]
    wait_until_idle_nodes_are_gone(head)
    assert [n["state"] for n in worker_nodes(head)] == ["DEAD"]


def test_a_gpu_job_is_accepted_while_no_gpu_node_is_up(
        cluster: tuple[FakeAutoscalingHead, JobsApi]) -> None:
    head, api = cluster
    before = {n["node_id"] for n in worker_nodes(head)}
    assert not any(n["state"] == "ALIVE" for n in worker_nodes(head))  # no GPU anywhere now
    job = api.submit("test-sleep", resources={"cpus": 1, "gpus": 1})
    done = api.wait(job["id"], timeout=240)
    assert done["state"] == "succeeded", (done, api.events(job["id"]))
    events = waited_then_ran(api, job["id"])
    assert "needs 1 GPU; 0 of 0 free" in events[0]["message"]
    (node,) = [n for n in worker_nodes(head) if n["node_id"] not in before]
    assert node["resources_total"]["GPU"] == 1  # the fake GPU node (Ray's logical GPU)
    wait_until_idle_nodes_are_gone(head)


def test_requests_beyond_the_ceiling_fail_at_once_naming_it(
        cluster: tuple[FakeAutoscalingHead, JobsApi]) -> None:
    head, api = cluster
    cases = [
        # More than head + every node type at its maximum (1 + 2 + 1 CPUs, 1 GPU).
        ({"cpus": 5}, "needs 5 CPUs; cluster can grow to 4 (has "),
        # (The GPU node of the test before may still be up, so "now" is 0 or 1.)
        ({"cpus": 1, "gpus": 2}, "needs 2 GPUs; cluster can grow to 1"),
        # Within the total, but no node (of any type) has 3 CPUs for one process.
        ({"cpus": 3}, "the job's process needs 3 CPUs on one node; no node has that"),
    ]
    jobs = [(api.submit("test-sleep", resources=r), words) for r, words in cases]
    for job, words in jobs:
        done = api.wait(job["id"], timeout=60)
        assert done["state"] == "failed" and words in done["reason"], done
        assert not any(e["message"].startswith("submitted to Ray") for e in
                       api.events(job["id"]))
    assert not any(n["state"] == "ALIVE" for n in worker_nodes(head))  # nothing was added


def test_a_job_the_head_can_run_starts_there_without_a_wait(
        cluster: tuple[FakeAutoscalingHead, JobsApi]) -> None:
    head, api = cluster
    known = len(worker_nodes(head))
    done = api.wait(api.submit("test-sleep", resources={"cpus": 1})["id"], timeout=120)
    assert done["state"] == "succeeded", done
    messages = [e["message"] for e in api.events(done["id"])]
    assert "runner started" in messages
    assert not any(m.startswith("waiting for resources") for m in messages), messages
    assert len(worker_nodes(head)) == known  # no node was added for it
