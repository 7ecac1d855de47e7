"""Helpers for tests that drive jobs through a real server (see test_jobs_*.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "cancelled"}


class JobsApi:
    """A thin authenticated client for one test (plain httpx: what a browser or curl does)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})

    def dataset(self, name: str, files: dict[str, bytes]) -> dict[str, Any]:
        r = self.http.post("/api/v1/datasets", json={"name": name})
        assert r.status_code == 201, r.text
        for path, data in files.items():
            r = self.http.post(f"/api/v1/datasets/{name}/files", files={"file": ("x", data)},
                               data={"path": path})
            assert r.status_code == 201, r.text
        return dict(self.http.get(f"/api/v1/datasets/{name}").json())

    def submit(self, task: str, *, datasets: tuple[str, ...] = (), expect: int = 201,
               **spec: Any) -> dict[str, Any]:
        body = {"task": task, "inputs": [{"kind": "dataset", "ref": d} for d in datasets],
                **spec}
        r = self.http.post("/api/v1/jobs", json=body)
        assert r.status_code == expect, r.text
        return dict(r.json())

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, job_id: str, states: set[str] = TERMINAL, timeout: float = 90.0
             ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                job = self.job(job_id)
                if job["state"] in states:
                    return job
            except httpx.TransportError:
                pass  # the server is restarting
            assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
            time.sleep(0.2)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.http.get(f"/api/v1/jobs/{job_id}/events").json())


def worker_pid(job_id: str, module: str) -> int | None:
    """The pid of the job's training worker (``python -m MODULE ...`` started for the job,
    found by the job id in its environment), or None."""
    needle = f"CLOWDER_ML_JOB_ID={job_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if module.encode() in cmd and \
                    needle in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    return None
