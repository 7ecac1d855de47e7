#!/usr/bin/env python3
"""Benchmark: user code in the gVisor sandbox versus the same work on the host.

One run does everything (root, runsc):

- ``evaluate_config`` **cold**: a fresh sandbox per call (sandbox start, agent start, the
  request, the answer), ``--runs`` times;
- ``evaluate_config`` **warm**: from a :class:`~clowder_ml.sandbox.pool.WarmPool` of 2. The
  pool is allowed to refill between requests (``wait_ready`` before each timed call, not
  timed), which is what an editor's "validate" sees; a back-to-back burst is also shown;
- **host** baseline: ``python3 -c`` on the host that builds the same ``CONFIG`` and prints
  it as JSON (a plain subprocess, no isolation);
- ``apply`` **throughput**: 100k JSONL records through a ``preprocess`` function in one
  sandbox (``raw=True``: JSONL lines in, JSON lines out, nothing re-encoded on the host),
  versus the **native** loop in this process doing the same work per record
  (``json.loads`` -> function -> ``json.dumps``);
- ``apply_arrow`` over the same records as Arrow batches of 5000, versus the same in-process
  (``to_pylist`` -> function -> ``from_pylist``): informational (``apply_arrow_ratio``).

Latencies are wall-clock per call, p50/p95 over ``--runs`` calls. The last line printed is
``RESULT key=value ...`` with ``warm_p50_ms`` and ``apply_ratio`` (sandbox / native
records per second, the sandbox's start included: the stricter figure);
``apply_ratio_steady`` leaves out the time to the first result (sandbox and agent start).
Every sandbox is stopped and cleaned up on exit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from clowder_ml.sandbox import get_sandbox
from clowder_ml.sandbox.base import wait_for_live_processes
from clowder_ml.sandbox.pool import WarmPool
from clowder_ml.sandbox.usercode import apply, evaluate_config

CONFIG_CODE = """
def CONFIG():
    return {"model": "resnet18", "lr": 3e-4, "epochs": 10,
            "layers": [64, 128, 256, 512], "augment": {"flip": True, "crop": 224}}
"""
HOST_CODE = CONFIG_CODE + "\nimport json\nprint(json.dumps(CONFIG()))\n"

PREPROCESS_CODE = """
def preprocess(example):
    text = example["text"].strip().lower()
    return {"id": example["id"], "text": text, "n_tokens": len(text.split()),
            "label": 1 if example["label"] == "pos" else 0}
"""


def log(msg: str) -> None:
    print(msg, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Callable[[], Any], runs: int, before: Callable[[], Any] | None = None
          ) -> list[float]:
    out = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def show(name: str, ms: list[float]) -> tuple[float, float]:
    p50, p95 = statistics.median(ms), pct(ms, 0.95)
    log(f"{name:<34} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   (n={len(ms)})")
    return p50, p95


def arrow_bench(sb: Any, fn: Callable[[Any], Any], lines: list[bytes]) -> float:
    """apply_arrow over the same records in batches of 5000, versus the same in-process
    (to_pylist -> function -> from_pylist per batch). Returns the ratio."""
    import pyarrow as pa

    from clowder_ml.sandbox.usercode import apply_arrow

    recs = [json.loads(line) for line in lines]
    batches = [pa.RecordBatch.from_pylist(recs[i:i + 5000]) for i in range(0, len(recs), 5000)]
    t0 = time.perf_counter()
    for b in batches:
        pa.RecordBatch.from_pylist([fn(r) for r in b.to_pylist()])
    native_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = sum(r.batch.num_rows for r in apply_arrow(PREPROCESS_CODE, "preprocess", batches,
                                                  sandbox=sb))
    sandbox_s = time.perf_counter() - t0
    assert n == len(recs)
    wait_for_live_processes()
    log(f"apply_arrow native (in-process)    {len(recs) / native_s:10,.0f} records/s  "
        f"({native_s:.2f} s)")
    log(f"apply_arrow sandbox (incl. start)  {len(recs) / sandbox_s:10,.0f} records/s  "
        f"({sandbox_s:.2f} s)   ratio {native_s / sandbox_s:.2f}")
    return native_s / sandbox_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args(argv)

    sb = get_sandbox()
    expected = evaluate_config(CONFIG_CODE, sandbox=sb)  # also warms the page cache

    host = timed(lambda: subprocess.run(
        [sys.executable, "-c", HOST_CODE], check=True, capture_output=True), args.runs)
    cold = timed(lambda: evaluate_config(CONFIG_CODE, sandbox=sb), args.runs,
                 before=wait_for_live_processes)
    with WarmPool(sb, size=2) as pool:
        pool.wait_ready(60)

        def warm_call() -> None:
            assert evaluate_config(CONFIG_CODE, pool=pool) == expected

        warm = timed(warm_call, args.runs, before=lambda: pool.wait_ready(60))
        burst = timed(warm_call, args.runs, before=None)
        cold_takes = pool.cold_takes
    wait_for_live_processes()

    log("")
    host_p50, host_p95 = show("host python3 -c", host)
    cold_p50, cold_p95 = show("evaluate_config cold", cold)
    warm_p50, warm_p95 = show("evaluate_config warm (refilled)", warm)
    burst_p50, burst_p95 = show("evaluate_config back-to-back", burst)
    log(f"  (back-to-back: {cold_takes} of {args.runs} found the pool of 2 empty "
        "and started cold)")

    # apply: JSONL in memory on both sides; the function is this benchmark's own code.
    lines = [json.dumps({"id": i, "text": f"  Some Example Text number {i} ",
                         "label": "pos" if i % 2 else "neg"}).encode()
             for i in range(args.records)]
    ns: dict[str, Any] = {}
    exec(PREPROCESS_CODE, ns)  # the benchmark's own function, not user code
    fn = ns["preprocess"]
    dumps = json.JSONEncoder(allow_nan=False, ensure_ascii=False).encode

    t0 = time.perf_counter()
    native_out = [dumps(fn(json.loads(line))).encode() for line in lines]
    native_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = 0
    first = t0
    for res in apply(PREPROCESS_CODE, "preprocess", lines, sandbox=sb, raw=True):
        if n == 0:
            first = time.perf_counter()
        if n < 3 or n == len(lines) - 1:
            assert res == native_out[n], (res, native_out[n])
        n += 1
    sandbox_s = time.perf_counter() - t0
    steady_rps = (len(lines) - 1) / (time.perf_counter() - first)
    assert n == len(lines)
    wait_for_live_processes()
    native_rps = len(lines) / native_s
    sandbox_rps = len(lines) / sandbox_s
    ratio = sandbox_rps / native_rps
    log(f"apply native (in-process)          {native_rps:10,.0f} records/s  ({native_s:.2f} s)")
    log(f"apply sandbox (incl. start)        {sandbox_rps:10,.0f} records/s  "
        f"({sandbox_s:.2f} s)   ratio {ratio:.2f}")
    log(f"apply sandbox after first result   {steady_rps:10,.0f} records/s  "
        f"(start to first result {first - t0:.2f} s)   ratio {steady_rps / native_rps:.2f}")
    arrow_ratio = arrow_bench(sb, fn, lines)
    log(f"ratios: warm/host p50 {warm_p50 / host_p50:.2f}, cold/host p50 "
        f"{cold_p50 / host_p50:.2f}")
    log(f"RESULT warm_p50_ms={warm_p50:.1f} warm_p95_ms={warm_p95:.1f} "
        f"cold_p50_ms={cold_p50:.1f} cold_p95_ms={cold_p95:.1f} "
        f"burst_p50_ms={burst_p50:.1f} burst_p95_ms={burst_p95:.1f} "
        f"host_p50_ms={host_p50:.1f} host_p95_ms={host_p95:.1f} "
        f"apply_rps={sandbox_rps:.0f} native_rps={native_rps:.0f} apply_ratio={ratio:.2f} "
        f"apply_ratio_steady={steady_rps / native_rps:.2f} apply_arrow_ratio={arrow_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
