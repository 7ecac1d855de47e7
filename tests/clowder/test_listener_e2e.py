"""Clowder end to end: a Clowder v2 stand-in publishes extraction requests on the real
RabbitMQ as Clowder does, ``clowder-ml clowder listen`` (a real process) takes them, the
server's engine runs the jobs on the real Ray head, and the results land back in the
stand-in: statuses on Clowder's reply queue, predictions and model zips as dataset files,
metrics and lineage as JSON-LD metadata. Then the faults: bad params, a file the task
cannot use, a failing job, a malformed message, a duplicate delivery, and a listener killed
mid-job (nothing lost, nothing run twice).
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from clowder_ml.engine.ray_cluster import EmbeddedRayHead
from tests.clowder.standin import ClowderStandin
from tests.conftest import ServerProcess
from tests.engine.conftest import engine_server
from tests.engine.jobs_helpers import JobsApi
from tests.engine.test_finetune_e2e import reviews_csv

pytestmark = pytest.mark.timeout(900)

SLEEP = "clowder-ml.test-sleep"
FINETUNE = "clowder-ml.text-classification-finetune"
PREDICT = "clowder-ml.text-classification-predict"
TASKS = ("test-sleep", "text-classification-finetune", "text-classification-predict")
TERMINAL = {"SUCCEEDED", "ERROR"}


class ListenerProcess:
    """``clowder-ml clowder listen`` next to a test server, on its data folder."""

    def __init__(self, srv: ServerProcess, clowder: ClowderStandin, log: Path) -> None:
        self.srv, self.clowder, self.log = srv, clowder, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "clowder_ml", "clowder", "listen",
                "--clowder-url", self.clowder.url, "--rabbitmq-uri", self.clowder.rabbitmq_uri,
                "--data-dir", str(self.srv.data_dir), "--heartbeat", "1",
                "--concurrency", "3", *[a for t in TASKS for a in ("--task", t)]]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         env={**self.srv.env, "CLOWDER_ML_LOG_JSON": "false"})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    clowder: ClowderStandin
    srv: ServerProcess
    api: JobsApi
    listener: ListenerProcess
    key: str  # the Clowder user's own API key
    email: str = "ada@example.org"

    def dataset(self, name: str, files: dict[str, bytes]) -> str:
        ds = self.clowder.add_dataset(self.key, name)
        for fname, content in files.items():
            self.clowder.add_file(self.key, ds, fname, content)
        return ds

    def run(self, extractor: str, ds: str, params: dict[str, Any], timeout: float = 300,
            **where: str) -> dict[str, Any]:
        job_id = self.clowder.submit_extraction(self.key, extractor, parameters=params,
                                                **(where or {"dataset_id": ds}))
        return self.clowder.wait_job_status(job_id, TERMINAL, timeout=timeout)

    def said(self, job_id: str) -> list[str]:
        """What Clowder recorded of the job's updates (the text after the status word)."""
        return [u["status"] for u in self.clowder.job_updates(job_id)]

    def our_jobs(self, task: str) -> list[dict[str, Any]]:
        jobs = self.api.http.get("/api/v1/jobs").json()
        return [j for j in jobs if j["task"] == task]


@pytest.fixture(scope="module")
def stack(ray_head: EmbeddedRayHead, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("clowder-e2e")
    with ClowderStandin() as clowder, engine_server(
            ray_head, base, env={"CLOWDER_ML_CLOWDER_URL": clowder.url}) as (srv, api):
        listener = ListenerProcess(srv, clowder, base / "listener.log")
        listener.start()
        try:
            for task in TASKS:
                clowder.wait_listener(f"clowder-ml.{task}", timeout=90)
            key = clowder.add_user("ada@example.org", "Ada", "Lovelace")
            yield Stack(clowder, srv, api, listener, key)
        finally:
            listener.stop()


def test_every_task_registers_through_heartbeats(stack: Stack) -> None:
    found = {item["name"]: item for item in stack.clowder.listeners()}
    info = found[PREDICT]
    assert info["properties"]["parameters"]["schema"]["model"]["type"] == "string"
    assert "model" in info["properties"]["parameters"]["required"]


def test_fine_tune_then_predict_through_clowder(stack: Stack) -> None:
    ds = stack.dataset("reviews", {"reviews.csv": reviews_csv(48)})
    params = {"model_name": "clowdy", "base_model": "minilm-l6", "epochs": 1, "max_steps": 2,
              "batch_size": 8, "max_length": 32, "validation_split": 0.25, "seed": 7}
    job = stack.run(FINETUNE, ds, params)
    said = stack.said(job["id"])
    assert job["status"] == "SUCCEEDED", said
    assert "received the request" in said[0] and "succeeded" in said[-1]
    assert any(s.startswith("running") for s in said), said

    zips = [f for f in stack.clowder.files(ds) if f["name"] == "clowder-ml-model-clowdy-v1.zip"]
    assert len(zips) == 1
    names = zipfile.ZipFile(io.BytesIO(stack.clowder.file_bytes(zips[0]["id"]))).namelist()
    assert {"model.safetensors", "config.json", "README.md"} <= set(names)
    [meta] = [m for m in stack.clowder.dataset_metadata(ds)
              if m["agent"]["listener"]["name"] == FINETUNE]
    content = meta["content"]
    assert content["model"]["file_id"] == zips[0]["id"]
    assert content["model"]["metrics"] and content["task"] == "text-classification-finetune"
    assert [f["path"] for f in content["lineage"]["clowder_files"]] == ["reviews.csv"]

    # Predict on the same Clowder dataset: the written-back zip is not taken as data.
    job = stack.run(PREDICT, ds, {"model": "clowdy@latest"})
    assert job["status"] == "SUCCEEDED", stack.said(job["id"])
    [pred] = [f for f in stack.clowder.files(ds)
              if f["name"].startswith("clowder-ml-predictions-")]
    rows = stack.clowder.file_bytes(pred["id"]).decode().strip().splitlines()
    assert len(rows) == 49, rows[:3]
    [meta] = [m for m in stack.clowder.dataset_metadata(ds)
              if m["agent"]["listener"]["name"] == PREDICT]
    assert meta["content"]["predictions"]["file_id"] == pred["id"]
    # Both requests read the same reviews.csv: downloaded once, stored once.
    assert stack.clowder.request_count("GET", "/api/v2/files/{file_id}") == 1

    # The user exports the version into another Clowder dataset from the command line.
    target = stack.clowder.add_dataset(stack.key, "exported models")
    owner = stack.api.http.get("/api/v1/models").json()[0]["owner"]
    out = subprocess.run(
        [sys.executable, "-m", "clowder_ml", "models", "export", f"{owner}:clowdy@latest",
         "--to-clowder", target, "--json"],
        env={**stack.srv.env, "CLOWDER_ML_URL": stack.srv.url,
             "CLOWDER_ML_TOKEN": stack.srv.token(), "CLOWDER_API_KEY": stack.key},
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert stack.key not in out.stdout + out.stderr
    exported = json.loads(out.stdout)
    [zipped] = stack.clowder.files(target)
    assert zipped["id"] == exported["file_id"] and zipped["name"] == zips[0]["name"]
    weights = [zipfile.ZipFile(io.BytesIO(stack.clowder.file_bytes(f))).read("model.safetensors")
               for f in (zipped["id"], zips[0]["id"])]
    assert weights[0] == weights[1]
    [meta] = stack.clowder.dataset_metadata(target)
    assert meta["content"]["model"]["ref"] == f"{owner}:clowdy/1"


def test_bad_params_get_an_error_status_and_no_job(stack: Stack) -> None:
    ds = stack.dataset("bad-params", {"a.txt": b"x"})
    before = len(stack.our_jobs("test-sleep"))
    job = stack.run(SLEEP, ds, {"seconds": "soon"}, timeout=60)
    assert job["status"] == "ERROR"
    assert "seconds" in stack.clowder.job_updates(job["id"])[-1]["status"]
    assert len(stack.our_jobs("test-sleep")) == before


def test_a_file_the_task_cannot_use_gets_the_jobs_reason(stack: Stack) -> None:
    ds = stack.dataset("pictures-only", {"cat.png": b"\x89PNG\r\n\x1a\n" + b"0" * 64})
    fid = stack.clowder.files(ds)[0]["id"]
    job = stack.run(PREDICT, ds, {"model": "clowdy@latest"}, timeout=180, file_id=fid)
    last = stack.clowder.job_updates(job["id"])[-1]["status"]
    assert job["status"] == "ERROR" and "failed" in last and "cat.png" in last, last


def test_a_failing_job_reports_its_reason(stack: Stack) -> None:
    ds = stack.dataset("fails", {"a.txt": b"x"})
    job = stack.run(SLEEP, ds, {"fail_expected": "the data has no labels"}, timeout=120)
    assert job["status"] == "ERROR"
    assert "the data has no labels" in stack.clowder.job_updates(job["id"])[-1]["status"]


def test_a_malformed_message_is_logged_and_set_aside(stack: Stack) -> None:
    secret = "do-not-log-this-key"
    stack.clowder.publish_raw(SLEEP, json.dumps({"secretKey": secret, "job_id": "j"}).encode())
    conn = pika.BlockingConnection(pika.URLParameters(stack.clowder.rabbitmq_uri))
    try:
        ch = conn.channel()
        deadline, body = time.monotonic() + 30, None
        while body is None and time.monotonic() < deadline:
            _m, _p, body = ch.basic_get(f"error.{SLEEP}", auto_ack=True)
            time.sleep(0.2)
    finally:
        conn.close()
    assert body is not None and json.loads(body)["job_id"] == "j"
    log = stack.listener.log.read_text()
    assert "rejected a malformed message" in log and secret not in log
    # The listener carries on.
    ds = stack.dataset("after-malformed", {"a.txt": b"x"})
    assert stack.run(SLEEP, ds, {}, timeout=120)["status"] == "SUCCEEDED"


def test_a_duplicate_delivery_runs_the_job_once(stack: Stack) -> None:
    ds = stack.dataset("twice", {"a.txt": b"x"})
    before = len(stack.our_jobs("test-sleep"))
    job_id = stack.clowder.submit_extraction(stack.key, SLEEP, dataset_id=ds,
                                             parameters={"seconds": 2})
    again = {"host": stack.clowder.url, "secretKey": stack.clowder.job_key(stack.email),
             "retry_count": 0, "resource_type": "dataset", "flags": "", "datasetName": "twice",
             "id": ds, "datasetId": ds, "job_id": job_id, "parameters": {"seconds": 2}}
    stack.clowder.publish_raw(SLEEP, json.dumps(again).encode())
    assert stack.clowder.wait_job_status(job_id, TERMINAL, 120)["status"] == "SUCCEEDED"
    time.sleep(3)  # let the second delivery be answered too
    assert len(stack.our_jobs("test-sleep")) == before + 1
    assert len([m for m in stack.clowder.dataset_metadata(ds)
                if m["agent"]["listener"]["name"] == SLEEP]) == 1


def test_a_killed_listener_loses_nothing_and_runs_nothing_twice(stack: Stack) -> None:
    ds = stack.dataset("killed", {"a.txt": b"x"})
    before = len(stack.our_jobs("test-sleep"))
    job_id = stack.clowder.submit_extraction(stack.key, SLEEP, dataset_id=ds,
                                             parameters={"seconds": 8})
    deadline = time.monotonic() + 120
    while not any(j["state"] == "running" for j in stack.our_jobs("test-sleep")[before:]):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    stack.listener.kill()
    stack.listener.start()
    assert stack.clowder.wait_job_status(job_id, TERMINAL, 180)["status"] == "SUCCEEDED"
    ours = stack.our_jobs("test-sleep")[before:]
    assert len(ours) == 1 and ours[0]["state"] == "succeeded"
    said = stack.said(job_id)
    assert sum("received the request" in s for s in said) == 1, said
    assert sum("succeeded" in s for s in said) == 1, said
    assert any("Resumed watching" in s for s in said), said
    assert len([m for m in stack.clowder.dataset_metadata(ds)
                if m["agent"]["listener"]["name"] == SLEEP]) == 1
