#!/usr/bin/env python3
"""Benchmark: a large file uploaded through tus with the SDK versus ``cp`` on the same disk.

One run does everything: starts a real server (``python -m clowder_ml serve``) on a fresh data
folder, logs in as the admin, writes a random file (1 GiB by default), then

- baseline: ``cp SRC DST`` on the same file system, timed; then ``sync DST`` (fsync of the
  copy) timed on top, because the server fsyncs every byte before acknowledging it;
- ours: ``clowder_ml.Client(url, token).upload(SRC, ...)``, timed end to end while a thread
  samples the server process's RSS (plus any children) every 20 ms.

What the timed upload includes: the whole ``Client.upload`` call: the tus creation request,
every PATCH (client: read, sha256 as the bytes go out; server: receive, sha256, write, fsync,
offset saved), the last PATCH declaring the client's digest, the server's check of it,
moving the file into the blob store and committing the dataset version, and the final
status request. ``hash_s`` is the time before the first byte goes out (the SDK once hashed
the whole file there; now only the creation request), ``transfer_mib_s`` the rest.

A third side, ``tuspyserver``: the same file to tuspyserver (a FastAPI tus router a user
might pick instead; it fsyncs too, but checks no digest and adds nothing to a dataset),
PATCHes of the same size streamed by the same httpx code; ``vs_tuspyserver`` is ours /
its MiB/s. Memory: ``server_rss_mib`` is the API server process and its non-Ray children,
``ray_rss_mib`` the embedded Ray head's processes (none until a job needs it).

``ratio`` is ours / plain ``cp`` (the harder baseline: ``cp`` on Linux copies inside the
kernel and returns before the data reaches the disk). ``ratio_sync`` is ours / ``cp`` +
``sync``, which, like the server, ends with the data durable.

Both sides read a source file that is in the page cache (it was just written). With
``--repeat N`` (default 3) each side runs N times, alternating, and the median is reported;
the peak RSS is the largest seen in any run.

The last line printed is ``RESULT key=value ...``. Everything (server, temp folder) is cleaned
up on exit, including on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil

from clowder_ml import Client
from clowder_ml.client import DEFAULT_CHUNK, SEND_PIECE, TUS, ResumeStore

MIB = 1 << 20
SERVER_START_S = 180.0  # a busy machine can take minutes to start a server


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------
# server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


def _die_with_parent() -> None:
    """In the server child: get SIGTERM if this script dies without cleaning up (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn(cmd: list[str], env: dict[str, str], url: str, ready: str, log_path: Path) -> Server:
    """Start a server process and wait until the request ``ready`` ("METHOD /path")
    answers 2xx."""
    method, ready_path = ready.split(" ", 1)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    server = Server(proc, url, log_path)
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.request(method, f"{url}{ready_path}", timeout=1).is_success:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server did not answer {ready_path} in {SERVER_START_S:g} s:"
                               f"\n{server.log_tail()}")
        time.sleep(0.1)


def start_server(workdir: Path, password: str, port: int, log_level: str) -> Server:
    data = workdir / "data"
    env = dict(os.environ)
    env.update({
        "CLOWDER_ML_ADMIN_PASSWORD": password,
        "CLOWDER_ML_DATA_DIR": str(data),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("CLOWDER_ML_DATABASE_URL", None)  # the embedded SQLite in the temp data folder
    cmd = [sys.executable, "-m", "clowder_ml", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--data-dir", str(data), "--log-level", log_level]
    return _spawn(cmd, env, f"http://127.0.0.1:{port}", "GET /healthz",
                  workdir / "server.log")


# tuspyserver's documented use: its router in a FastAPI app, files in a local folder (it
# fsyncs each PATCH, as ours does), run by uvicorn like ours.
TUSPYSERVER_APP = """
import sys
import uvicorn
from fastapi import FastAPI
from tuspyserver import create_tus_router
app = FastAPI()
app.include_router(create_tus_router(prefix="files", files_dir=sys.argv[2]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def start_tuspyserver(workdir: Path, port: int) -> Server:
    files = workdir / "tuspyserver-files"
    files.mkdir()
    cmd = [sys.executable, "-c", TUSPYSERVER_APP, str(port), str(files)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return _spawn(cmd, env, f"http://127.0.0.1:{port}", "OPTIONS /files/",
                  workdir / "tuspyserver.log")


def get_token(url: str, password: str) -> str:
    resp = httpx.post(f"{url}/api/v1/auth/token", timeout=30,
                      json={"username": "admin", "password": password, "name": "bench"})
    resp.raise_for_status()
    return str(resp.json()["token"])


# ---------------------------------------------------------------------------------------
# measurements


def _is_ray(p: psutil.Process) -> bool:
    """A process of the embedded Ray head (GCS, raylet, dashboard, workers)."""
    with contextlib.suppress(psutil.Error):
        text = " ".join([p.name(), *p.cmdline()[:3]])
        return any(k in text for k in ("ray", "gcs_server", "raylet", "default_worker"))
    return False


class RssSampler:
    """Peak resident memory of a process and its children, polled in a thread: the
    server's own (the process and its non-Ray children) and the Ray head's, apart."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.ray_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> tuple[int, int]:
        """(server bytes, Ray head bytes) now."""
        own = ray = 0
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = self.proc.children(recursive=True)
        for p in [self.proc, *children]:
            with contextlib.suppress(psutil.Error):
                rss = p.memory_info().rss
                if p is not self.proc and _is_ray(p):
                    ray += rss
                else:
                    own += rss
        return own, ray

    def _take(self) -> None:
        own, ray = self.sample()
        self.peak = max(self.peak, own)
        self.ray_peak = max(self.ray_peak, ray)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


def make_random_file(path: Path, size: int) -> None:
    block = 8 * MIB
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(block, left)
            fh.write(os.urandom(n))
            left -= n
        fh.flush()
        os.fsync(fh.fileno())


def time_cp(src: Path, dst: Path) -> tuple[float, float]:
    """Seconds for ``cp src dst`` and for ``cp`` plus ``sync dst`` (fsync of the copy)."""
    t0 = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    t1 = time.perf_counter()
    subprocess.run(["sync", str(dst)], check=True)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0


@dataclass
class UploadRun:
    total_s: float
    hash_s: float
    peak_rss: int
    version: Any
    samples: int
    ray_peak_rss: int = 0


@dataclass
class Marks:
    hash_done: float | None = None
    first_progress: float | None = None
    calls: list[float] = field(default_factory=list)


def time_upload(client: Client, src: Path, dataset: str, target: str, server_pid: int,
                chunk_size: int) -> UploadRun:
    marks = Marks()
    size = src.stat().st_size

    def on_hash(done: int, total: int) -> None:
        if done >= total:
            marks.hash_done = time.perf_counter()

    def on_progress(done: int, total: int) -> None:
        if marks.first_progress is None:
            marks.first_progress = time.perf_counter()

    with RssSampler(server_pid) as rss:
        t0 = time.perf_counter()
        status = client.upload(src, dataset, target, chunk_size=chunk_size,
                               progress=on_progress, hash_progress=on_hash)
        t1 = time.perf_counter()
    if status.get("state") != "completed" or status.get("length") != size:
        raise RuntimeError(f"upload did not complete: {status}")
    hash_end = marks.hash_done or marks.first_progress or t0
    return UploadRun(t1 - t0, hash_end - t0, rss.peak, status.get("version"), rss.samples,
                     rss.ray_peak)


def time_tuspyserver(url: str, src: Path, chunk_size: int, server_pid: int) -> UploadRun:
    """A plain tus upload to tuspyserver: the creation POST, then PATCHes of ``chunk_size``
    streamed from the file exactly as the SDK streams them (same httpx, same pieces)."""
    size = src.stat().st_size
    with RssSampler(server_pid) as rss, httpx.Client(timeout=600) as http, \
            open(src, "rb") as fh:
        t0 = time.perf_counter()
        resp = http.post(f"{url}/files", headers={
            **TUS, "Upload-Length": str(size),
            "Upload-Metadata": "filename " + base64.b64encode(src.name.encode()).decode()})
        resp.raise_for_status()
        location = str(httpx.URL(url).join(resp.headers["location"]))

        def body(start: int, count: int) -> Iterator[bytes]:
            fh.seek(start)
            left = count
            while left > 0:
                piece = fh.read(min(SEND_PIECE, left))
                left -= len(piece)
                yield piece

        offset = 0
        while offset < size:
            count = min(chunk_size, size - offset)
            resp = http.patch(location, content=body(offset, count), headers={
                **TUS, "Upload-Offset": str(offset), "Content-Length": str(count),
                "Content-Type": "application/offset+octet-stream"})
            resp.raise_for_status()
            offset = int(resp.headers["upload-offset"])
        t1 = time.perf_counter()
    return UploadRun(t1 - t0, 0.0, rss.peak, None, rss.samples)


def check_stored(client: Client, dataset: str, target: str, src: Path) -> None:
    files = {f["path"]: f for f in client.files(dataset)}
    entry = files.get(target)
    if entry is None or entry.get("size") != src.stat().st_size:
        raise RuntimeError(f"{target} missing or wrong size in the dataset: {entry}")


# ---------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each side; medians are reported (default 3)")
    p.add_argument("--chunk-mib", type=int, default=DEFAULT_CHUNK // MIB,
                   help=f"SDK PATCH size (default: the SDK's, {DEFAULT_CHUNK // MIB})")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the temp folder (default: bench/out next to this script); "
                        "its file system is the disk measured")
    p.add_argument("--server-log-level", default="warning")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (debugging)")
    return p.parse_args(argv)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.size_mib <= 0 or args.repeat <= 0 or args.chunk_mib <= 0:
        raise SystemExit("--size-mib, --repeat and --chunk-mib must be positive")
    signal.signal(signal.SIGTERM, _sigterm)
    base: Path = args.workdir or Path(__file__).resolve().parent / "out"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="upload-bench-", dir=base))
    server: Server | None = None
    tuspy: Server | None = None
    client: Client | None = None
    try:
        size = args.size_mib * MIB
        need = size * (2 * args.repeat + 3)
        free = shutil.disk_usage(workdir).free
        if free < need:
            raise RuntimeError(f"need about {need // MIB} MiB free in {workdir}, "
                               f"have {free // MIB}")
        password = secrets.token_urlsafe(18)
        port = args.port or free_port()
        server = start_server(workdir, password, port, args.server_log_level)
        tuspy = start_tuspyserver(workdir, free_port())
        token = get_token(server.url, password)
        client = Client(server.url, token, resume_store=ResumeStore(workdir / "state.json"))

        src = workdir / "source.bin"
        log(f"writing {args.size_mib} MiB of random bytes to {src}")
        make_random_file(src, size)
        data_dir = workdir / "data"
        same_disk = os.stat(src).st_dev == os.stat(data_dir).st_dev == os.stat(workdir).st_dev
        if not same_disk:
            raise RuntimeError("source file, cp target and server data folder are not on "
                               "the same file system")
        log(f"server {server.url} pid {server.proc.pid}, data {data_dir} "
            f"(same file system as the source: {same_disk})")
        client.ensure_dataset("bench")
        idle_rss, idle_ray = RssSampler(server.proc.pid).sample()

        cp_s: list[float] = []
        cp_sync_s: list[float] = []
        runs: list[UploadRun] = []
        others: list[UploadRun] = []
        for i in range(args.repeat):
            # Start each measurement with nothing dirty in the page cache.
            # An untimed copy first: on a VM the first pages a copy needs can be slow to get
            # (the host hands guest memory back lazily), which would flatter the upload.
            warm = workdir / "warm-up.bin"
            first, _ = time_cp(src, warm)
            warm.unlink()
            os.sync()
            dst = workdir / f"copy-{i}.bin"
            plain, synced = time_cp(src, dst)
            cp_s.append(plain)
            cp_sync_s.append(synced)
            dst.unlink()
            os.sync()
            target = f"run-{i}/source.bin"
            run = time_upload(client, src, "bench", target, server.proc.pid,
                              args.chunk_mib * MIB)
            check_stored(client, "bench", target, src)
            runs.append(run)
            os.sync()
            other = time_tuspyserver(tuspy.url, src, args.chunk_mib * MIB, tuspy.proc.pid)
            others.append(other)
            log(f"run {i + 1}/{args.repeat}: cp {plain:.3f} s (untimed warm-up cp {first:.3f} s), "
                f"cp+sync {synced:.3f} s, "
                f"upload {run.total_s:.3f} s (client hash {run.hash_s:.3f} s), "
                f"server peak RSS {run.peak_rss / MIB:.1f} MiB ({run.samples} samples), "
                f"dataset version {run.version}; tuspyserver {other.total_s:.3f} s, "
                f"peak RSS {other.peak_rss / MIB:.1f} MiB")

        mib = size / MIB
        cp_med = statistics.median(cp_s)
        cp_sync_med = statistics.median(cp_sync_s)
        up_med = statistics.median(r.total_s for r in runs)
        hash_med = statistics.median(r.hash_s for r in runs)
        xfer_med = statistics.median(r.total_s - r.hash_s for r in runs)
        rss_mib = max(r.peak_rss for r in runs) / MIB
        ray_rss_mib = max(r.ray_peak_rss for r in runs) / MIB
        tuspy_med = statistics.median(r.total_s for r in others)
        tuspy_mib_s = mib / tuspy_med
        tuspy_rss_mib = max(r.peak_rss for r in others) / MIB
        upload_mib_s = mib / up_med
        cp_mib_s = mib / cp_med
        cp_sync_mib_s = mib / cp_sync_med
        transfer_mib_s = mib / xfer_med
        ratio = upload_mib_s / cp_mib_s
        ratio_sync = upload_mib_s / cp_sync_mib_s
        vs_tuspyserver = upload_mib_s / tuspy_mib_s

        log("")
        log(f"file: {args.size_mib} MiB random, page-cached; PATCH size {args.chunk_mib} MiB; "
            f"medians of {args.repeat} runs")
        log("timed upload = whole Client.upload(): create + PATCHes (client hashes as it "
            "sends; server hashes, writes, fsyncs) + digest check + blob move + commit")
        log(f"  upload (tus, SDK):      {upload_mib_s:8.1f} MiB/s  ({up_med:.3f} s)")
        log(f"    before the 1st byte:  {hash_med:8.3f} s   "
            f"(without it: {transfer_mib_s:.1f} MiB/s)")
        log(f"  cp:                     {cp_mib_s:8.1f} MiB/s  ({cp_med:.3f} s)")
        log(f"  cp + sync:              {cp_sync_mib_s:8.1f} MiB/s  ({cp_sync_med:.3f} s)")
        log(f"  tuspyserver (plain tus):{tuspy_mib_s:8.1f} MiB/s  ({tuspy_med:.3f} s; no "
            f"checksum, no dataset; peak RSS {tuspy_rss_mib:.1f} MiB)")
        log(f"  ratio upload/cp:        {ratio:8.3f}   (target >= 0.5)")
        log(f"  ours vs tuspyserver:    {vs_tuspyserver:8.3f}   (target >= 1.5)")
        log(f"  ratio upload/(cp+sync): {ratio_sync:8.3f}")
        log(f"  server peak RSS:        {rss_mib:8.1f} MiB (target < 200; "
            f"{idle_rss / MIB:.1f} MiB idle before the first upload; the API server and "
            f"its non-Ray children)")
        log(f"  Ray head peak RSS:      {ray_rss_mib:8.1f} MiB (its own figure; "
            f"{idle_ray / MIB:.1f} MiB idle: it starts with the first job)")
        log(f"RESULT upload_mib_s={upload_mib_s:.1f} cp_mib_s={cp_mib_s:.1f} "
            f"ratio={ratio:.3f} server_rss_mib={rss_mib:.1f} ray_rss_mib={ray_rss_mib:.1f} "
            f"tuspyserver_mib_s={tuspy_mib_s:.1f} vs_tuspyserver={vs_tuspyserver:.2f} "
            f"cp_sync_mib_s={cp_sync_mib_s:.1f} ratio_sync={ratio_sync:.3f} "
            f"transfer_mib_s={transfer_mib_s:.1f} hash_s={hash_med:.3f} "
            f"size_mib={args.size_mib} repeat={args.repeat}")
        return 0
    except Exception:
        if server is not None:
            tail = server.log_tail()
            if tail:
                print(f"--- server log (last lines) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
        if tuspy is not None:
            tuspy.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                base.rmdir()  # only if empty


if __name__ == "__main__":
    sys.exit(main())
