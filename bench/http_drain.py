#!/usr/bin/env python3
"""Benchmark: the HTTP ceiling for uploads on this machine, a bare uvicorn + Starlette endpoint
that only drains PATCH bodies (no write, no hash, no tus), against ``cp``.

It starts ``uvicorn`` (httptools and uvloop, as ``clowder-ml serve`` runs) with one route
that reads ``request.stream()`` to the end and answers the byte count, writes a random file
(``--size-mib``, 1024) under ``bench/out/``, and sends it ``--repeat`` times (3) in PATCHes of
the SDK's size (``clowder_ml.client.DEFAULT_CHUNK``) from two clients:

- **httpx**: the body streamed in ``SEND_PIECE`` reads, as the SDK and ``bench/upload.py``'s
  tuspyserver side send it;
- **sendfile**: a raw socket and ``os.sendfile`` (zero-copy, the cheapest client possible).

Any upload server written on this stack (ours, tuspyserver) does at least this work per
byte, so its MiB/s bounds theirs. ``cp`` is timed as in ``bench/upload.py`` (warm, no sync).
Prints ``RESULT httpx_mib_s=... sendfile_mib_s=... cp_mib_s=... ceiling_vs_cp=...`` (best
client, medians).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from upload import free_port, make_random_file, time_cp  # noqa: E402

from clowder_ml.client import DEFAULT_CHUNK, SEND_PIECE  # noqa: E402

MIB = 1 << 20
APP = r'''
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route


async def sink(request):
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
    return Response(str(n))


uvicorn.run(Starlette(routes=[Route("/sink", sink, methods=["PATCH"])]), host="127.0.0.1",
            port=int(sys.argv[1]), log_level="warning")
'''


def send_httpx(url: str, src: Path, size: int) -> float:
    t0 = time.perf_counter()
    with httpx.Client(timeout=600) as client, open(src, "rb") as fh:
        offset = 0
        while offset < size:
            count = min(DEFAULT_CHUNK, size - offset)

            def body(count: int = count) -> Iterator[bytes]:
                left = count
                while left:
                    piece = fh.read(min(SEND_PIECE, left))
                    left -= len(piece)
                    yield piece

            resp = client.patch(url, content=body(), headers={"Content-Length": str(count)})
            if int(resp.text) != count:
                raise RuntimeError(f"the server drained {resp.text} bytes, not {count}")
            offset += count
    return time.perf_counter() - t0


def send_sendfile(port: int, src: Path, size: int) -> float:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, \
            sock.makefile("rb") as answers, open(src, "rb") as fh:
        offset = 0
        while offset < size:
            count = min(DEFAULT_CHUNK, size - offset)
            sock.sendall(f"PATCH /sink HTTP/1.1\r\nHost: bench\r\nContent-Length: {count}"
                         "\r\n\r\n".encode())
            sent = 0
            while sent < count:
                sent += os.sendfile(sock.fileno(), fh.fileno(), offset + sent, count - sent)
            answers.readline()  # status line
            length = 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if int(answers.read(length)) != count:
                raise RuntimeError("the server drained a different byte count")
            offset += count
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="http-drain-", dir=out))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", APP, str(port)])
    try:
        src = workdir / "src.bin"
        make_random_file(src, args.size_mib * MIB)
        size = src.stat().st_size
        url = f"http://127.0.0.1:{port}/sink"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the drain server did not start") from None
                time.sleep(0.1)
        runs: dict[str, list[float]] = {"httpx": [], "sendfile": [], "cp": []}
        copy = workdir / "copy.bin"
        time_cp(src, copy)  # untimed: the first copy after idle memory is slow on a VM
        copy.unlink()
        for i in range(args.repeat):
            runs["httpx"].append(size / send_httpx(url, src, size) / MIB)
            runs["sendfile"].append(size / send_sendfile(port, src, size) / MIB)
            runs["cp"].append(size / time_cp(src, copy)[0] / MIB)
            copy.unlink()
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.0f} MiB/s" for k, v in runs.items()),
                  flush=True)
        med = {k: statistics.median(v) for k, v in runs.items()}
        best = max(med["httpx"], med["sendfile"])
        print(f"RESULT httpx_mib_s={med['httpx']:.1f} sendfile_mib_s={med['sendfile']:.1f} "
              f"cp_mib_s={med['cp']:.1f} ceiling_vs_cp={best / med['cp']:.3f} "
              f"size_mib={args.size_mib} repeat={args.repeat}")
        return 0
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
