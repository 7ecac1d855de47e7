"""The jobs SDK and ``clowder-ml jobs`` against an in-memory fake of the Jobs API (docs/jobs.md).

No server: a ``Client`` on ``httpx.MockTransport`` talks to :class:`FakeJobs`, whose jobs move
one state per GET (submitted -> running -> succeeded, or failed for ``params.fail``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from clowder_ml import client as client_mod
from clowder_ml.cli import app
from clowder_ml.cli import jobs as jobs_commands
from clowder_ml.client import Client

PROFILE = {
    "files": 2, "bytes": 2048,
    "tables": [{"path": "train.csv", "format": "csv", "rows": 150, "duplicate_rows": 1,
                "columns": [{"name": "sepal_length", "type": "double", "missing": 0,
                             "distinct": 35},
                            {"name": "species", "type": "string", "missing": 2,
                             "distinct": 3}],
                "label": {"column": "species", "missing": 2,
                          "distribution": {"setosa": 50, "versicolor": 49}}}],
    "images": None, "other_files": 1, "errors": [],
}


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message,
                                                  "hint": None}})


class FakeJobs:
    """The Jobs API contract, in memory, with faults to inject."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.scripts: dict[str, list[str]] = {}
        self.logs: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.faults: list[httpx.Response | Exception] = []  # answers for the next job GETs
        self.drop_log_at: int | None = None  # the next follow stream breaks at this byte
        self.ids = itertools.count(1)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        parts = request.url.path.removeprefix("/api/v1/jobs").strip("/").split("/")
        if request.method == "POST" and parts == [""]:
            return self.create(json.loads(request.content))
        if request.method == "GET" and parts == [""]:
            state = request.url.params.get("state")
            return httpx.Response(200, json=[j for j in self.jobs.values()
                                             if state in (None, j["state"])])
        job = self.jobs.get(parts[0])
        if job is None:
            return _error(404, "not_found", f"Job {parts[0]} not found.")
        if request.method == "GET" and len(parts) == 1:
            if self.faults:
                fault = self.faults.pop(0)
                if isinstance(fault, Exception):
                    raise fault
                return fault
            return httpx.Response(200, json=self.advance(job))
        if parts[1:] == ["events"]:
            return httpx.Response(200, json=[{"at": "2026-01-01T00:00:00", "state": "pending",
                                              "message": "recorded"}])
        if parts[1:] == ["cancel"]:
            job.update(cancel_requested=True)
            self.scripts[job["id"]] = ["cancelled"]
            return httpx.Response(202, json=job)
        if parts[1:] == ["logs"]:
            return self.log(job, request)
        return _error(404, "not_found", "no such endpoint")

    def create(self, spec: dict[str, Any]) -> httpx.Response:
        job_id = f"job_{next(self.ids):016x}"
        fail = bool(spec.get("params", {}).get("fail"))
        self.scripts[job_id] = ["submitted", "running", "failed" if fail else "succeeded"]
        self.jobs[job_id] = {
            "id": job_id, "task": spec["task"], "owner": "alice", "state": "pending",
            "reason": None, "waiting_for": "2 of your jobs are running (limit 2)",
            "queue_position": 1, "attempt": 1, "cancel_requested": False, "spec": spec,
            "progress": None, "result": None, "log_tail": None,
            "created_at": "2026-01-01T00:00:00Z", "started_at": None, "ended_at": None,
            "updated_at": "2026-01-01T00:00:00Z"}
        return httpx.Response(201, json=self.jobs[job_id])

    def advance(self, job: dict[str, Any]) -> dict[str, Any]:
        script = self.scripts[job["id"]]
        if script:
            state = script.pop(0)
            job.update(state=state, waiting_for=None, queue_position=None)
            if state == "running":
                job["progress"] = {"done": 1.0, "total": 2.0, "message": "profiling train.csv"}
            elif state == "succeeded":
                job.update(result=PROFILE, progress=None)
            elif state == "failed":
                job.update(reason="ValueError: no column named 'label'",
                           log_tail="Traceback (most recent call last):\nValueError: ...\n")
            elif state == "cancelled":
                job["reason"] = "cancelled by alice"
        return job

    def log(self, job: dict[str, Any], request: httpx.Request) -> httpx.Response:
        data = self.logs.get(job["id"], b"")
        offset = int(request.url.params.get("offset", "0"))
        if request.url.params.get("follow") != "true":
            return httpx.Response(200, content=data[offset:])
        drop, self.drop_log_at = self.drop_log_at, None

        def stream() -> Iterator[bytes]:
            end = len(data) if drop is None else drop
            for i in range(offset, end, 4):  # small chunks, like a live log
                yield data[i:min(i + 4, end)]
            if drop is not None:
                raise httpx.RemoteProtocolError("server closed the connection")

        return httpx.Response(200, content=stream(), headers={"content-type": "text/plain"})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeJobs:
    """A FakeJobs that every CLI command reaches; backoff and polling do not sleep."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no saved login leaks in
    monkeypatch.setattr(client_mod.time, "sleep", lambda s: None)
    f = FakeJobs()
    monkeypatch.setattr(jobs_commands, "_client_factory", lambda: make_client(f))
    return f


def make_client(fake: FakeJobs) -> Client:
    return Client("http://jobs.test", "cml_test", transport=httpx.MockTransport(fake))


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["jobs", *args])


def test_submit_job_builds_the_spec(fake: FakeJobs) -> None:
    c = make_client(fake)
    job = c.submit_job("dataset-profile", datasets=["alice/iris", ("bob:x", 3)],
                       params={"label": "species"}, cpus=2, memory="2G", timeout_s=60,
                       retries=2, inputs=[{"kind": "file", "ref": "d", "path": "a.csv"}])
    assert job["state"] == "pending"
    spec = json.loads(fake.requests[-1].content)
    assert fake.requests[-1].headers["authorization"] == "Bearer cml_test"
    assert spec == {
        "task": "dataset-profile", "params": {"label": "species"},
        "inputs": [{"kind": "dataset", "ref": "alice:iris", "version": None},
                   {"kind": "dataset", "ref": "bob:x", "version": 3},
                   {"kind": "file", "ref": "d", "path": "a.csv"}],
        "resources": {"cpus": 2, "memory_bytes": "2G"}, "timeout_s": 60,
        "retry": {"max_retries": 2}}
    c.submit_job("dataset-profile")  # nothing given: the server's defaults apply
    assert json.loads(fake.requests[-1].content) == {"task": "dataset-profile", "params": {},
                                                     "inputs": []}


def test_param_values_are_json_when_valid() -> None:
    assert jobs_commands.parse_params(["epochs=3", "lr=1e-4", "name=iris", "ok=true",
                                       "cols=[\"a\",\"b\"]", "s=\"3\"", "expr=a=b",
                                       "empty="]) == {
        "epochs": 3, "lr": 1e-4, "name": "iris", "ok": True, "cols": ["a", "b"], "s": "3",
        "expr": "a=b", "empty": ""}


def test_param_without_equals_is_a_usage_error(fake: FakeJobs) -> None:
    r = run("submit", "dataset-profile", "--param", "epochs")
    assert r.exit_code == 2
    assert "--param" in r.output and "KEY=VALUE" in r.output and "Traceback" not in r.output
    assert fake.requests == []  # nothing was submitted


def test_submit_sends_cli_options(fake: FakeJobs) -> None:
    r = run("submit", "dataset-profile", "--dataset", "iris", "--dataset-version", "2",
            "--param", "label=species", "--param", "epochs=3", "--gpus", "1",
            "--memory", "1048576", "--retries", "1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["state"] == "pending"
    spec = json.loads(fake.requests[-1].content)
    assert spec["inputs"] == [{"kind": "dataset", "ref": "iris", "version": 2}]
    assert spec["params"] == {"label": "species", "epochs": 3}
    assert spec["resources"] == {"gpus": 1.0, "memory_bytes": 1048576}
    assert spec["retry"] == {"max_retries": 1}


@pytest.mark.parametrize(("params", "state", "status"), [([], "succeeded", 0),
                                                         (["--param", "fail=true"], "failed", 1)])
def test_submit_wait_json_prints_one_object_and_exits_by_outcome(
        fake: FakeJobs, params: list[str], state: str, status: int) -> None:
    r = run("submit", "dataset-profile", "-d", "iris", *params, "--wait", "--json")
    assert r.exit_code == status, r.output
    job = json.loads(r.stdout)  # exactly one JSON document on stdout, nothing else
    assert isinstance(job, dict) and job["state"] == state
    assert {"id", "state", "reason", "result"} <= job.keys()
    if state == "succeeded":
        assert job["result"] == PROFILE and job["reason"] is None
    else:
        assert job["reason"].startswith("ValueError") and "Traceback" in job["log_tail"]


def test_submit_wait_renders_profile_and_failure(fake: FakeJobs) -> None:
    r = run("submit", "dataset-profile", "-d", "iris", "--wait")
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.stdout and "sepal_length" in r.stdout and "150 rows" in r.stdout
    assert "setosa: 50" in r.stdout
    r = run("submit", "dataset-profile", "-p", "fail=1", "--wait")
    assert r.exit_code == 1
    assert "no column named 'label'" in r.stdout and "Traceback (most recent" in r.stdout


def test_show_ls_cancel(fake: FakeJobs) -> None:
    job = make_client(fake).submit_job("dataset-profile")
    r = run("show", job["id"], "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["id"] == job["id"]
    r = run("show", job["id"])
    assert r.exit_code == 0 and "running" in r.stdout and "recorded" in r.stdout
    r = run("ls", "--json")
    assert [j["id"] for j in json.loads(r.stdout)] == [job["id"]]
    assert job["id"] in run("ls").stdout
    r = run("cancel", job["id"], "--wait")
    assert r.exit_code == 1 and "cancelled" in r.stdout  # only success exits 0


def test_errors_print_code_and_message(fake: FakeJobs) -> None:
    r = run("show", "job_nope")
    assert r.exit_code == 1 and "not_found" in r.output and "Traceback" not in r.output


def test_follow_logs_reconnects_from_the_offset_reached(fake: FakeJobs) -> None:
    c = make_client(fake)
    job = c.submit_job("dataset-profile")
    fake.scripts[job["id"]] = ["succeeded"]
    text = "step 1\nstep 2 — é\nstep 3\n"
    fake.logs[job["id"]] = text.encode()
    drop = text.encode().index("é".encode()) + 1  # the break splits a two-byte character
    fake.drop_log_at = drop
    assert "".join(c.follow_job_logs(job["id"])) == text
    offsets = [int(r.url.params["offset"]) for r in fake.requests
               if r.url.path.endswith("/logs") and r.url.params["follow"] == "true"]
    assert offsets == [0, drop]


def test_logs_follow_cli(fake: FakeJobs) -> None:
    job = make_client(fake).submit_job("dataset-profile")
    fake.scripts[job["id"]] = ["succeeded"]
    fake.logs[job["id"]] = b"hello\nworld\n"
    fake.drop_log_at = 3
    r = run("logs", job["id"], "-f")
    assert r.exit_code == 0 and r.stdout == "hello\nworld\n"
    assert run("logs", job["id"]).stdout == "hello\nworld\n"


def test_wait_job_rides_through_a_503_and_a_dropped_connection(fake: FakeJobs) -> None:
    c = make_client(fake)
    job = c.submit_job("dataset-profile")
    fake.faults = [_error(503, "service_unavailable", "restarting"),
                   httpx.ConnectError("connection refused")]
    seen: list[str] = []
    done = c.wait_job(job["id"], poll_s=0, on_update=lambda j: seen.append(j["state"]))
    assert done["state"] == "succeeded" and seen == ["submitted", "running", "succeeded"]


def test_wait_job_times_out(fake: FakeJobs) -> None:
    c = make_client(fake)
    job = c.submit_job("dataset-profile")
    fake.scripts[job["id"]] = []  # stays pending
    with pytest.raises(TimeoutError):
        c.wait_job(job["id"], timeout_s=0, poll_s=0)


def test_a_fine_tune_ends_with_why_training_stopped() -> None:
    from rich.console import Console

    from clowder_ml.cli.jobs import _summary

    training = {"reason": "epochs", "message": "trained the 5 epochs asked for; best epoch 5 "
                "of 5, accuracy 0.63", "warning": "accuracy was still rising at the end "
                "(0.58 -> 0.63); more epochs may help (epochs=auto stops by itself)"}
    job = {"id": "job_1", "task": "image-classification-finetune", "state": "succeeded",
           "result": {"metrics": {"eval_accuracy": 0.63}, "training": training}}

    def rendered(job: dict[str, Any]) -> list[str]:
        console = Console(record=True, width=300)
        for part in _summary(job):
            console.print(part)
        return console.export_text().strip().splitlines()

    assert rendered(job)[-2:] == [f"training stopped: {training['message']}",
                                  f"warning: {training['warning']}"]
    job["result"]["training"] = {**training, "warning": None}
    assert rendered(job)[-1] == f"training stopped: {training['message']}"
    assert not any("training stopped" in line for line in rendered(
        {**job, "result": {"rows": 3}}))
