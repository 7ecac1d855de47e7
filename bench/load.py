#!/usr/bin/env python3
"""Benchmark: a lab's mixed read/write load on one shared dataset, on SQLite and PostgreSQL.

For each database (``--db sqlite postgresql`` by default) one run starts a real server
(``python -m clowder_ml serve``, job engine off: listing jobs needs no Ray) on a fresh data
folder (and, for PostgreSQL, a fresh schema that is dropped afterwards), creates ``--users``
accounts, shares one dataset with all of them for writing, seeds it with a CSV and a binary
file, logs every account in once, and then lets Locust (in this process, not timed before
the users start) run ``--users`` users for ``--seconds`` seconds. Each user, with a think time
of 0.25-0.75 s between requests, picks among (weights in brackets):

- reads: list datasets [3], the dataset's root tree [3], preview of the CSV [2], download of
  the binary file [2], list jobs [2];
- writes into the shared dataset: a small file by multipart POST [2] (a new path each time),
  a 1 MiB tus upload [1] (create, then one PATCH with the whole body).

A *write* is a multipart POST or the PATCH that completes a tus upload. It is *accepted* when
answered 2xx and *refused* otherwise. After the load stops the script reads the dataset's
latest version: every accepted write must be there with its sha256, or it counts as *lost*.

Per database the last line is ``RESULT db=... requests=... req_s=... writes=...
refused_writes=... lost_writes=... http_5xx=... read_p50_ms=... read_p99_ms=...`` plus the p99
of each kind of request and the load average before the run (the load generator shares the
machine with the server; other work on the machine shows there). Latencies are measured by
Locust from request start to the end of the response body.

The server, the temp folder and the PostgreSQL schema are removed on exit, including after
errors, Ctrl-C and SIGTERM.
"""

# ruff: noqa: E402
# Locust runs its users as gevent greenlets: patch the standard library before anything else
# imports socket, ssl or threading.
from gevent import monkey

monkey.patch_all()

import argparse
import base64
import contextlib
import hashlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import gevent
import requests
from locust import FastHttpUser, between, events, task
from locust.env import Environment

MIB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
PG_BASE = os.environ.get("CLOWDER_ML_BENCH_PG",
                         "postgresql+psycopg://postgres@127.0.0.1:5432/test")
READ_KINDS = ("list datasets", "tree", "preview", "download", "list jobs")
WRITE_KINDS = ("multipart write", "tus patch")


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------
# server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the server child: get SIGTERM if this script dies without cleaning up (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


def start_server(workdir: Path, password: str, db_url: str | None, log_level: str) -> Server:
    data = workdir / "data"
    log_path = workdir / "server.log"
    port = free_port()
    env = dict(os.environ)
    env.update({
        "CLOWDER_ML_ADMIN_PASSWORD": password,
        "CLOWDER_ML_DATA_DIR": str(data),
        "CLOWDER_ML_ENGINE_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("CLOWDER_ML_DATABASE_URL", None)
    if db_url:
        env["CLOWDER_ML_DATABASE_URL"] = db_url
    cmd = [sys.executable, "-m", "clowder_ml", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--data-dir", str(data), "--log-level", log_level]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    server = Server(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server not ready in 90 s:\n{server.log_tail()}")
        time.sleep(0.1)


@contextlib.contextmanager
def pg_schema() -> Any:
    """A fresh PostgreSQL schema; yields the server's database URL for it."""
    from sqlalchemy import create_engine, text

    schema = f"bench_{secrets.token_hex(6)}"
    engine = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


# ---------------------------------------------------------------------------------------
# the lab: accounts, the shared dataset, its seed files


@dataclass
class Lab:
    url: str
    dataset_id: str
    tokens: list[str]
    accepted: dict[str, str] = field(default_factory=dict)  # path -> sha256 of accepted writes
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # kind -> count
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    next_user: int = 0


def make_csv(rows: int) -> bytes:
    lines = ["id,text,label,score"]
    rng = random.Random(7)
    for i in range(rows):
        lines.append(f"{i},sample text number {i},{rng.choice('ab')},{rng.random():.5f}")
    return ("\n".join(lines) + "\n").encode()


def prepare_lab(url: str, password: str, users: int) -> Lab:
    admin = {"Authorization": "Bearer " + token_for(url, "admin", password)}
    with requests.Session() as c:
        c.headers.update(admin)
        r = c.post(f"{url}/api/v1/datasets", json={"name": "shared"}, timeout=60)
        r.raise_for_status()
        ds_id = str(r.json()["id"])
        for path, data in (("seed/table.csv", make_csv(2000)),
                           ("seed/blob.bin", os.urandom(256 << 10))):
            r = c.post(f"{url}/api/v1/datasets/{ds_id}/files", data={"path": path},
                       files={"file": ("f", data)}, timeout=60)
            r.raise_for_status()
        tokens = []
        for i in range(users):
            name, pw = f"lab{i:02d}", f"lab-password-{i:02d}"
            c.post(f"{url}/api/v1/users", json={"username": name, "password": pw},
                   timeout=60).raise_for_status()
            c.put(f"{url}/api/v1/datasets/{ds_id}/shares/{name}",
                  json={"permission": "write"}, timeout=60).raise_for_status()
            tokens.append(token_for(url, name, pw))
    return Lab(url, ds_id, tokens)


def token_for(url: str, username: str, password: str) -> str:
    r = requests.post(f"{url}/api/v1/auth/token", timeout=60,
                   json={"username": username, "password": password, "name": "bench"})
    r.raise_for_status()
    return str(r.json()["token"])


# ---------------------------------------------------------------------------------------
# the users


LAB: Lab | None = None  # set before the users start; Locust builds users from the class


def _multipart(fields: dict[str, str], data: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _tus_meta(**kv: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kv.items())


class LabUser(FastHttpUser):
    wait_time = between(0.25, 0.75)
    network_timeout = 120.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        assert LAB is not None
        self.n = LAB.next_user
        LAB.next_user += 1
        self.auth = {"Authorization": "Bearer " + LAB.tokens[self.n % len(LAB.tokens)]}
        self.ds = LAB.dataset_id
        self.writes = 0

    def _get(self, path: str, name: str) -> None:
        self.client.get(path, headers=self.auth, name=name)

    @task(3)
    def list_datasets(self) -> None:
        self._get("/api/v1/datasets", "list datasets")

    @task(3)
    def tree(self) -> None:
        self._get(f"/api/v1/datasets/{self.ds}/tree", "tree")

    @task(2)
    def preview(self) -> None:
        self._get(f"/api/v1/datasets/{self.ds}/preview/seed/table.csv", "preview")

    @task(2)
    def download(self) -> None:
        self._get(f"/api/v1/datasets/{self.ds}/files/seed/blob.bin", "download")

    @task(2)
    def list_jobs(self) -> None:
        self._get("/api/v1/jobs", "list jobs")

    @task(2)
    def multipart_write(self) -> None:
        assert LAB is not None
        self.writes += 1
        path = f"w/u{self.n:02d}/{self.writes}.txt"
        data = f"{path} {secrets.token_hex(256)}\n".encode()
        body, ctype = _multipart({"path": path}, data)
        with self.client.post(f"/api/v1/datasets/{self.ds}/files", data=body,
                              headers={**self.auth, "Content-Type": ctype},
                              name="multipart write", catch_response=True) as r:
            self._judge(r, "multipart write", path, data)

    @task(1)
    def tus_upload(self) -> None:
        assert LAB is not None
        self.writes += 1
        path = f"t/u{self.n:02d}/{self.writes}.bin"
        data = os.urandom(MIB)
        sha = hashlib.sha256(data).hexdigest()
        r = self.client.post("/api/v1/uploads/", name="tus create", headers={
            **self.auth, **TUS, "Upload-Length": str(len(data)),
            "Upload-Metadata": _tus_meta(dataset=self.ds, path=path, sha256=sha)})
        if r.status_code != 201:
            LAB.refused["tus create"] += 1
            return
        loc = r.headers["location"]
        with self.client.request("PATCH", loc, data=data, name="tus patch",
                                 catch_response=True, headers={
                                     **self.auth, **TUS, "Upload-Offset": "0",
                                     "Content-Type": "application/offset+octet-stream"}) as r:
            self._judge(r, "tus patch", path, data)

    @staticmethod
    def _judge(r: Any, kind: str, path: str, data: bytes) -> None:
        assert LAB is not None
        if 200 <= r.status_code < 300:
            LAB.accepted[path] = hashlib.sha256(data).hexdigest()
            r.success()
        else:
            LAB.refused[kind] += 1
            r.failure(f"{r.status_code}: {(r.text or '')[:200]}")


def _on_request(request_type: str, name: str, response_time: float, response_length: int,
                exception: Exception | None = None, response: Any = None,
                **_kw: Any) -> None:
    if LAB is None:
        return
    LAB.latencies[name].append(response_time)
    status = getattr(response, "status_code", 0) or 0
    LAB.statuses[int(status)] += 1


events.request.add_listener(_on_request)


# ---------------------------------------------------------------------------------------
# one run


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]


def lost_writes(lab: Lab) -> int:
    """Accepted writes missing (or with other bytes) in the dataset's latest version."""
    admin_tok = lab.tokens[0]
    r = requests.get(f"{lab.url}/api/v1/datasets/{lab.dataset_id}/files", timeout=120,
                  headers={"Authorization": f"Bearer {admin_tok}"})
    r.raise_for_status()
    have = {f["path"]: f["sha256"] for f in r.json()}
    return sum(1 for p, sha in lab.accepted.items() if have.get(p) != sha)


def commit_wait_summary(url: str) -> str:
    """The server's commit-lock wait histogram from /metrics, if it exports one."""
    try:
        text = requests.get(f"{url}/metrics", timeout=30).text
    except requests.RequestException:
        return ""
    total = re.search(r"^clowder_ml_dataset_commit_wait_seconds_sum (\S+)$", text, re.M)
    count = re.search(r"^clowder_ml_dataset_commit_wait_seconds_count (\S+)$", text, re.M)
    if not (total and count) or float(count.group(1)) == 0:
        return ""
    mean_ms = 1000 * float(total.group(1)) / float(count.group(1))
    return f" commit_wait_mean_ms={mean_ms:.1f}"


def run_one(db: str, args: argparse.Namespace, base: Path) -> str:
    global LAB
    workdir = Path(tempfile.mkdtemp(prefix=f"load-{db}-", dir=base))
    server: Server | None = None
    load_before = os.getloadavg()
    try:
        with contextlib.ExitStack() as stack:
            db_url = stack.enter_context(pg_schema()) if db == "postgresql" else None
            password = secrets.token_urlsafe(18)
            server = start_server(workdir, password, db_url, args.server_log_level)
            stack.callback(server.stop)
            log(f"[{db}] server {server.url} pid {server.proc.pid}; preparing "
                f"{args.users} accounts")
            LAB = prepare_lab(server.url, password, args.users)
            env = Environment(user_classes=[LabUser], events=events, host=server.url)
            runner = env.create_local_runner()
            log(f"[{db}] {args.users} users for {args.seconds} s "
                f"(load average {load_before[0]:.2f})")
            t0 = time.monotonic()
            runner.start(args.users, spawn_rate=args.users)
            gevent.spawn_later(args.seconds, runner.quit)
            runner.greenlet.join()
            elapsed = time.monotonic() - t0
            lab = LAB
            lost = lost_writes(lab)
            waits = commit_wait_summary(server.url)
            server.stop()
        reads = [t for k in READ_KINDS for t in lab.latencies.get(k, [])]
        writes_lat = [t for k in WRITE_KINDS for t in lab.latencies.get(k, [])]
        requests = sum(len(v) for v in lab.latencies.values())
        refused = sum(v for k, v in lab.refused.items() if k in WRITE_KINDS)
        writes = len(lab.accepted) + refused
        http_5xx = sum(n for st, n in lab.statuses.items() if st >= 500)
        log(f"[{db}] {'kind':<16} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for kind in (*READ_KINDS, "tus create", *WRITE_KINDS):
            v = lab.latencies.get(kind, [])
            log(f"[{db}] {kind:<16} {len(v):>6} {pct(v, 50):>8.0f} {pct(v, 99):>8.0f} "
                f"{max(v) if v else float('nan'):>8.0f}")
        log(f"[{db}] statuses: {dict(sorted(lab.statuses.items()))}; refused by kind: "
            f"{dict(lab.refused)}")
        kinds = " ".join(f"p99_ms_{k.replace(' ', '_')}={pct(lab.latencies.get(k, []), 99):.0f}"
                         for k in (*READ_KINDS, *WRITE_KINDS))
        return (f"RESULT db={db} users={args.users} seconds={args.seconds} "
                f"requests={requests} req_s={requests / elapsed:.1f} writes={writes} "
                f"refused_writes={refused} lost_writes={lost} http_5xx={http_5xx} "
                f"read_p50_ms={pct(reads, 50):.0f} read_p99_ms={pct(reads, 99):.0f} "
                f"write_p50_ms={pct(writes_lat, 50):.0f} "
                f"write_p99_ms={pct(writes_lat, 99):.0f} {kinds}{waits} "
                f"loadavg_1m_before={load_before[0]:.2f} cpus={os.cpu_count()}")
    except BaseException:
        if server is not None:
            log(f"[{db}] server log tail:\n{server.log_tail()}")
        raise
    finally:
        LAB = None
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--db", nargs="+", choices=("sqlite", "postgresql"),
                   default=["sqlite", "postgresql"])
    p.add_argument("--users", type=int, default=40)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--server-log-level", default="info",
                   help="the server's log level (default info, as `clowder-ml serve`)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the temp folders (default: bench/out next to this script)")
    p.add_argument("--keep", action="store_true", help="keep the temp folders (debugging)")
    return p.parse_args(argv)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.users <= 0 or args.seconds <= 0:
        raise SystemExit("--users and --seconds must be positive")
    signal.signal(signal.SIGTERM, _sigterm)
    base: Path = args.workdir or Path(__file__).resolve().parent / "out"
    base.mkdir(parents=True, exist_ok=True)
    results = [run_one(db, args, base) for db in args.db]
    for line in results:
        log(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
