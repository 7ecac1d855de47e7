"""Jobs end to end: a real API server, the real runner, on the session's real Ray head.

Covers the issue's "done means": success (dataset-profile with known figures, through the
CLI contract), failure with its reason, cancel (process tree gone), 20 jobs at once,
job tokens confined to their job, an impossible request failing fast, live logs and metrics.
Server kill/restart and cluster loss are in test_jobs_recovery.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_env, kill_runners
from tests.engine.jobs_helpers import JobsApi

pytestmark = pytest.mark.timeout(300)

IRIS = (b"sepal,petal,species\n"
        b"5.1,1.4,setosa\n"
        b"4.9,1.4,setosa\n"
        b"5.1,1.4,setosa\n"  # a duplicate of the first row
        b"6.3,,virginica\n"  # a missing petal
        b"5.8,4.1,versicolor\n")


@pytest.fixture(scope="module")
def engine(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("engine")
    srv = ServerProcess(base / "data", env=engine_env(
        ray_head, base / "cache", CLOWDER_ML_MAX_RUNNING_JOBS_PER_USER="3"))
    srv.start()
    yield srv
    srv.stop()
    kill_runners(srv.url)


@pytest.fixture(scope="module")
def api(engine: ServerProcess) -> JobsApi:
    client = JobsApi(engine.url, engine.token())
    client.dataset("iris", {"iris.csv": IRIS})
    return client


def cli(engine: ServerProcess, token: str, *args: str, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOWDER_ML_URL": engine.url, "CLOWDER_ML_TOKEN": token,
           "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "clowder_ml", *args], env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)


def test_dataset_profile_through_the_cli_gives_the_known_figures(engine: ServerProcess,
                                                                 api: JobsApi) -> None:
    token = api.http.headers["Authorization"].split()[1]
    p = cli(engine, token, "jobs", "submit", "dataset-profile", "--dataset", "iris",
            "--param", "label=species", "--wait", "--json")
    assert p.returncode == 0, p.stderr
    job = json.loads(p.stdout)
    assert {"id", "state", "reason", "result"} <= job.keys()
    assert job["state"] == "succeeded" and job["reason"] is None
    table = job["result"]["tables"][0]
    assert table["path"] == "iris.csv" and table["rows"] == 5
    assert table["duplicate_rows"] == 1
    cols = {c["name"]: c for c in table["columns"]}
    assert cols["sepal"]["type"] == "float" and cols["petal"]["missing"] == 1
    assert table["label"]["column"] == "species"
    assert table["label"]["distribution"] == {"setosa": 3, "virginica": 1, "versicolor": 1}
    # `jobs show --json` prints the same job.
    shown = cli(engine, token, "jobs", "show", job["id"], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["result"] == job["result"]
    # The human view renders the profile (not a JSON dump) and the job's events.
    human = cli(engine, token, "jobs", "show", job["id"])
    assert "species" in human.stdout and "setosa" in human.stdout, human.stdout
    # The lifecycle is recorded as events, in order, each transition once.
    states = [e["state"] for e in api.events(job["id"]) if e["message"] in
              ("job created",) or e["message"].startswith(("submitted to Ray", "runner started",
                                                           "task finished"))]
    assert states == ["pending", "submitted", "running", "succeeded"]


def test_failure_gives_a_one_line_reason_and_the_log_tail(api: JobsApi) -> None:
    job = api.wait(api.submit("test-sleep", params={"lines": 3, "fail": "loss went NaN"})["id"])
    assert job["state"] == "failed"
    assert job["reason"] == "RuntimeError: loss went NaN"
    assert "line 2" in job["log_tail"]
    # An expected platform error: its message is the reason, and no traceback in the log.
    job = api.wait(api.submit("test-sleep", params={"fail_expected": "label column 'y' is "
                                                                     "empty"})["id"])
    assert job["state"] == "failed" and job["reason"] == "label column 'y' is empty"
    assert "Traceback" not in job["log_tail"]
    # A process that dies without a word still fails with a reason and Ray's log.
    job = api.wait(api.submit("test-sleep", params={"lines": 1, "exit_code": 7})["id"])
    assert job["state"] == "failed"
    assert "exited with code 7" in job["reason"], job["reason"]
    assert "\n" not in job["reason"]


def test_bad_submissions_are_refused_with_clear_errors(api: JobsApi) -> None:
    r = api.http.post("/api/v1/jobs", json={"task": "no-such-task"})
    assert r.status_code == 404 and "dataset-profile" in r.json()["error"]["hint"]
    r = api.http.post("/api/v1/jobs", json={"task": "dataset-profile"})
    assert r.status_code == 422 and "dataset" in r.json()["error"]["message"]
    r = api.http.post("/api/v1/jobs", json={"task": "dataset-profile", "params": {"lable": "x"},
                                            "inputs": [{"kind": "dataset", "ref": "iris"}]})
    assert r.status_code == 422 and "lable" in r.json()["error"]["message"]
    r = api.http.post("/api/v1/jobs", json={"task": "dataset-profile",
                                            "inputs": [{"kind": "dataset", "ref": "nope"}]})
    assert r.status_code == 404


def test_impossible_request_fails_fast_saying_what_is_missing(api: JobsApi) -> None:
    t0 = time.monotonic()
    job = api.submit("test-sleep", resources={"cpus": 1, "gpus": 1})
    job = api.wait(job["id"], timeout=20)
    assert job["state"] == "failed"
    assert "needs 1 GPU; cluster has 0" in job["reason"]
    assert time.monotonic() - t0 < 20


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_cancel_stops_the_job_and_its_process_tree(api: JobsApi, tmp_path: Path) -> None:
    job = api.submit("test-sleep", params={"seconds": 120, "spawn_child": True,
                                           "write_dir": str(tmp_path)})
    api.wait(job["id"], {"running"})
    pid_file = tmp_path / f"{job['id']}.pids"
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pids = [int(p) for p in pid_file.read_text().split()]
    assert all(_alive(p) for p in pids)
    r = api.http.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    done = api.wait(job["id"], timeout=60)
    assert done["state"] == "cancelled" and done["reason"] == "Cancelled by request."
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still alive: {[p for p in pids if _alive(p)]}"
        time.sleep(0.2)
    # A terminal job stays as it is.
    again = api.http.post(f"/api/v1/jobs/{job['id']}/cancel").json()
    assert again["state"] == "cancelled"


def test_cancel_of_a_queued_job_is_immediate(api: JobsApi) -> None:
    # Beyond the per-user limit (3 here) a job waits in the queue, saying why.
    running = [api.submit("test-sleep", params={"seconds": 30}, resources={"cpus": 0.1})
               for _ in range(3)]
    queued = api.submit("test-sleep", resources={"cpus": 0.1})
    deadline = time.monotonic() + 30
    while "limit 3" not in (api.job(queued["id"])["waiting_for"] or ""):
        assert time.monotonic() < deadline, api.job(queued["id"])
        time.sleep(0.2)
    assert api.job(queued["id"])["queue_position"] == 1
    r = api.http.post(f"/api/v1/jobs/{queued['id']}/cancel")
    assert r.json()["state"] == "cancelled"
    for j in running:
        api.http.post(f"/api/v1/jobs/{j['id']}/cancel")
    for j in running:
        assert api.wait(j["id"], timeout=60)["state"] == "cancelled"


def test_twenty_jobs_at_once_reach_the_right_final_states(api: JobsApi) -> None:
    submitted = []
    for i in range(20):
        params: dict[str, Any] = {"seconds": 0.2, "lines": 2}
        if i % 5 == 4:
            params["fail"] = f"job {i} fails on purpose"
        submitted.append((i, api.submit("test-sleep", params=params,
                                        resources={"cpus": 0.5})["id"]))
    for i, job_id in submitted:
        job = api.wait(job_id, timeout=240)
        if i % 5 == 4:
            assert job["state"] == "failed", job
            assert job["reason"] == f"RuntimeError: job {i} fails on purpose"
        else:
            assert job["state"] == "succeeded", job
            assert job["result"]["slept"] == 0.2
        # Each ran exactly once.
        starts = [e for e in api.events(job_id) if e["message"] == "runner started"]
        assert len(starts) == 1


def test_job_token_reaches_only_its_own_job(api: JobsApi, tmp_path: Path) -> None:
    other = api.dataset("secret", {"s.csv": b"a\n42\n"})
    del other
    job = api.submit("test-sleep", datasets=("iris",),
                     params={"seconds": 30, "write_dir": str(tmp_path)})
    token_file = tmp_path / f"{job['id']}.token"
    api.wait(job["id"], {"running"})
    deadline = time.monotonic() + 30
    while not token_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    runner = httpx.Client(base_url=api.url, timeout=10,
                          headers={"Authorization": f"Bearer {token_file.read_text()}"})
    spec = runner.get("/api/v1/runner/job")
    assert spec.status_code == 200
    own = spec.json()["inputs"][0]["files"][0]["sha256"]
    assert runner.get(f"/api/v1/runner/blobs/{own}").content == IRIS
    # Another dataset: not through the runner API, and not through the user API at all.
    files = api.http.get("/api/v1/datasets/secret/versions/1").json()["files"]
    secret_digest = files[0]["sha256"]
    assert runner.get(f"/api/v1/runner/blobs/{secret_digest}").status_code == 404
    for path in ("/api/v1/datasets/secret", "/api/v1/datasets/secret/files/s.csv",
                 "/api/v1/datasets", "/api/v1/jobs"):
        assert runner.get(path).status_code == 401, path
    # It ends with the job.
    api.http.post(f"/api/v1/jobs/{job['id']}/cancel")
    api.wait(job["id"])
    assert runner.get("/api/v1/runner/job").status_code == 401


def test_live_logs_metrics_and_websocket(engine: ServerProcess, api: JobsApi) -> None:
    job = api.submit("test-sleep", params={"seconds": 2, "lines": 5, "metrics": 4})
    token = api.http.headers["Authorization"].split()[1]
    # Follow: the response streams until the job ends and holds every line.
    with api.http.stream("GET", f"/api/v1/jobs/{job['id']}/logs",
                         params={"follow": "true"}, timeout=120) as r:
        text = "".join(r.iter_text())
    assert all(f"line {i}" in text for i in range(5))
    assert api.job(job["id"])["state"] == "succeeded"
    # Offsets: the rest of the log from a byte offset.
    tail = api.http.get(f"/api/v1/jobs/{job['id']}/logs", params={"offset": 10}).text
    assert text.encode()[10:].decode() == tail
    points = api.http.get(f"/api/v1/jobs/{job['id']}/metrics", params={"name": "loss"}).json()
    assert [(p["step"], p["value"]) for p in points] == [(i, 1.0 / (i + 1)) for i in range(4)]
    newer = api.http.get(f"/api/v1/jobs/{job['id']}/metrics",
                         params={"after": points[1]["id"]}).json()
    assert [p["step"] for p in newer] == [2, 3]
    outputs = api.http.get(f"/api/v1/jobs/{job['id']}/outputs").json()
    assert [o["path"] for o in outputs] == ["done.txt"]
    assert api.http.get(f"/api/v1/jobs/{job['id']}/outputs/done.txt").text == "done\n"
    # WebSocket (a finished job replays everything, then "end").
    from websockets.sync.client import connect

    ws_url = engine.url.replace("http", "ws") + f"/api/v1/jobs/{job['id']}/ws?token={token}"
    kinds: list[str] = []
    logs = ""
    with connect(ws_url, open_timeout=10) as ws:
        for raw in ws:
            msg = json.loads(raw)
            kinds.append(msg["type"])
            logs += msg.get("data", "")
            if msg["type"] == "end":
                break
    assert kinds[-1] == "end" and "job" in kinds and "metrics" in kinds
    assert "line 4" in logs
    with connect(ws_url.replace(token, "bad"), open_timeout=10) as ws:
        msg = json.loads(ws.recv())
        assert msg["type"] == "error" and msg["error"]["code"] == "authentication_required"


def test_other_users_see_no_job(engine: ServerProcess, api: JobsApi) -> None:
    job = api.submit("test-sleep")
    r = api.http.post("/api/v1/users", json={"username": "mallory", "password": "mallory-pw-1"})
    assert r.status_code == 201, r.text
    mallory = JobsApi(engine.url, engine.token("mallory", "mallory-pw-1"))
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/logs"),
                         ("GET", "/events"), ("GET", "/metrics"), ("GET", "/outputs")):
        r = mallory.http.request(method, f"/api/v1/jobs/{job['id']}{path}")
        assert r.status_code == 404, (method, path, r.text)
    assert mallory.http.get("/api/v1/jobs").json() == []
    # Nor can they run a job on a dataset they cannot read.
    r = mallory.http.post("/api/v1/jobs", json={"task": "dataset-profile",
                                                "inputs": [{"kind": "dataset",
                                                            "ref": "admin:iris"}]})
    assert r.status_code == 404
    api.wait(job["id"])


def test_runner_uses_the_threads_the_job_reserved(api: JobsApi) -> None:
    job = api.wait(api.submit("test-sleep", resources={"cpus": 2})["id"])
    assert job["result"]["omp_threads"] == "2"


def test_a_job_over_its_timeout_is_stopped_and_fails_saying_so(api: JobsApi) -> None:
    job = api.wait(api.submit("test-sleep", params={"seconds": 60}, timeout_s=2)["id"],
                   timeout=60)
    assert job["state"] == "failed"
    assert job["reason"] == "Timed out after 2 s (the job's timeout_s)."
