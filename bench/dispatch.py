#!/usr/bin/env python3
"""Benchmark: submit-to-runner-started latency of a job, ours versus a bare Ray job.

One run does everything on ONE local Ray head (``EmbeddedRayHead``, 2 CPUs, token auth, in a
short ``/tmp`` folder) and one ``clowder-ml serve`` process whose job engine uses that head:

- ours: ``POST /api/v1/jobs`` of a tiny ``dataset-profile`` job (one 5-row CSV, 0.25 CPU).
  Latency = the job's ``started_at`` (the runner's ``clowder_ml.runner.STARTED_AT``: its
  process start, taken before its heavier imports, reported by the runner and recorded by
  the server) minus ``time.time()`` just before the POST. ``GET /api/v1/jobs/{id}`` is polled
  every 20 ms until ``started_at`` is set; the figure comes from the two timestamps, so the
  polling rate does not bias it.
- ray: ``JobSubmissionClient(head.address, headers=Bearer).submit_job(...)`` of an
  equivalent entrypoint (the same interpreter, ``python -c`` whose first statement records
  ``time.time()`` and writes it to a file), with the same ``entrypoint_num_cpus``. Latency =
  that time minus ``time.time()`` just before ``submit_job``.

Informational third side (not in the target; ``--no-ray-env`` skips it): the same bare Ray
job with a ``runtime_env`` carrying env vars of the names ours passes, since the dispatcher
hands the runner its settings that way and a runtime_env can cost Ray extra work.

Both clocks are the same machine's wall clock. Jobs run one at a time (submit, wait until
started, wait until it ends, next), alternating ours/ray so drift is shared; ``--warmup``
jobs of each are not counted. For ours, each job's events give a breakdown: POST answered,
``created_at`` -> "submitted to Ray" event (dispatcher wake-up, token, Ray's submit call),
-> ``started_at`` (Ray starts the process; Python starts; ``import clowder_ml.runner``).

Target (from the issue): ``ours_p50 <= 1.2 * ray_p50 + 200 ms``. The last line printed is
``RESULT key=value ...``. The server, the head and the temp folders are removed on exit,
including on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from clowder_ml.engine.ray_cluster import EmbeddedRayHead  # noqa: E402

with warnings.catch_warnings():  # tests.conftest imports fastapi's TestClient (deprecation noise)
    warnings.simplefilter("ignore")
    from tests.conftest import ServerProcess
    from tests.engine.conftest import engine_env

CPUS = 0.25
POLL_S = 0.02
CSV = b"a,b,label\n1,2.5,x\n3,4.5,y\n5,6.5,x\n7,8.5,y\n9,1.5,x\n"
TERMINAL = {"succeeded", "failed", "cancelled"}
RAY_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def log(msg: str) -> None:
    print(msg, flush=True)


def ts(value: str) -> float:
    """An API timestamp (ISO 8601; naive means UTC) as epoch seconds."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class OursRun:
    latency_s: float
    post_s: float  # the POST's own round trip
    to_submitted_s: float | None  # submit -> "submitted to Ray" event
    to_started_s: float | None  # "submitted to Ray" event -> started_at
    state: str


@dataclass
class RayRun:
    latency_s: float
    submit_s: float  # the submit_job call's own round trip
    state: str


@dataclass
class Results:
    ours: list[OursRun] = field(default_factory=list)
    ray: list[RayRun] = field(default_factory=list)
    ray_env: list[RayRun] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# the two sides


def run_ours(http: httpx.Client, dataset: str, timeout_s: float) -> OursRun:
    body = {"task": "dataset-profile", "inputs": [{"kind": "dataset", "ref": dataset}],
            "resources": {"cpus": CPUS}}
    t0 = time.time()
    r = http.post("/api/v1/jobs", json=body)
    post_s = time.time() - t0
    r.raise_for_status()
    job_id = r.json()["id"]
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = r.json()
    while job.get("started_at") is None:
        if job["state"] in TERMINAL or time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} never started: {job}")
        time.sleep(POLL_S)
        job = http.get(f"/api/v1/jobs/{job_id}").json()
    started = ts(job["started_at"])
    while job["state"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not end: {job}")
        time.sleep(POLL_S)
        job = http.get(f"/api/v1/jobs/{job_id}").json()
    events = http.get(f"/api/v1/jobs/{job_id}/events").json()
    submitted = next((ts(e["at"]) for e in events
                      if e["message"].startswith("submitted to Ray")), None)
    return OursRun(
        latency_s=started - t0, post_s=post_s,
        to_submitted_s=None if submitted is None else submitted - t0,
        to_started_s=None if submitted is None else started - submitted,
        state=job["state"])


def ray_entrypoint(marker: Path) -> str:
    code = (f"import time; t = time.time(); "
            f"open({str(marker)!r}, 'w').write(repr(t))")
    return shlex.join([sys.executable, "-c", code])


def like_our_env(workdir: Path) -> dict[str, str]:
    """Env vars of the same names and sizes as the dispatcher passes a runner (dummy values)."""
    return {
        "PYTHONPATH": str(ROOT / "tests" / "engine"),
        "CLOWDER_ML_CACHE_DIR": str(workdir / "cache"),
        "CLOWDER_ML_API_URL": "http://127.0.0.1:1",
        "CLOWDER_ML_JOB_ID": "job_0123456789abcdef",
        "CLOWDER_ML_JOB_TOKEN": "cmlj_" + "x" * 43,
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "CLOWDER_ML_JOB_CPUS": f"{CPUS:g}", "CLOWDER_ML_JOB_GPUS": "0",
        "CLOWDER_ML_EXTRA_TASKS": "cml_test_tasks",
    }


def run_ray(client: Any, workdir: Path, i: int, timeout_s: float,
            env: dict[str, str] | None = None) -> RayRun:
    marker = workdir / f"ray-started-{i}{'-env' if env else ''}.txt"
    entrypoint = ray_entrypoint(marker)
    t0 = time.time()
    sid = client.submit_job(entrypoint=entrypoint, entrypoint_num_cpus=CPUS,
                            runtime_env={"env_vars": env} if env else None)
    submit_s = time.time() - t0
    deadline = time.monotonic() + timeout_s
    next_status = time.monotonic() + 0.5
    while not (marker.exists() and marker.read_text()):
        # The marker file is polled fast; Ray only twice a second (to notice a failed job),
        # so that polling does not load the dashboard while the job starts.
        if time.monotonic() > next_status:
            next_status = time.monotonic() + 0.5
            status = str(client.get_job_status(sid))
            if status.split(".")[-1] in RAY_TERMINAL:
                raise RuntimeError(f"Ray job {sid} never wrote its start time ({status}): "
                                   f"{client.get_job_logs(sid)[-1000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray job {sid} did not start in {timeout_s:g} s")
        time.sleep(POLL_S)
    started = float(marker.read_text())
    while True:
        status = str(client.get_job_status(sid)).split(".")[-1]
        if status in RAY_TERMINAL:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"Ray job {sid} did not end ({status})")
        time.sleep(POLL_S)
    return RayRun(latency_s=started - t0, submit_s=submit_s, state=status)


def python_start_s(code: str, runs: int = 5) -> float:
    """Median seconds to run ``python -c code`` here (no Ray): interpreter + imports."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=20, help="measured jobs of each side (default 20)")
    p.add_argument("--warmup", type=int, default=2,
                   help="uncounted jobs of each side first (default 2)")
    p.add_argument("--no-ray-env", action="store_true",
                   help="skip the informational third side: bare Ray with a runtime_env "
                        "carrying env vars like ours")
    p.add_argument("--timeout", type=float, default=120.0, help="per job, seconds")
    p.add_argument("--keep", action="store_true", help="keep the temp folders (debugging)")
    return p.parse_args(argv)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def report(res: Results, n: int, extras: dict[str, float]) -> None:
    ours = [ms(r.latency_s) for r in res.ours]
    ray = [ms(r.latency_s) for r in res.ray]
    o50, o95, r50, r95 = pct(ours, 50), pct(ours, 95), pct(ray, 50), pct(ray, 95)
    ratio = o50 / r50 if r50 > 0 else float("inf")
    limit = 1.2 * r50 + 200.0
    met = o50 <= limit
    post = [ms(r.post_s) for r in res.ours]
    sub = [ms(r.to_submitted_s) for r in res.ours if r.to_submitted_s is not None]
    start = [ms(r.to_started_s) for r in res.ours if r.to_started_s is not None]
    rsub = [ms(r.submit_s) for r in res.ray]
    rrest = [ms(r.latency_s - r.submit_s) for r in res.ray]

    log("")
    log(f"submit -> process started, {n} jobs each (sequential, alternating), "
        f"{CPUS:g} CPU each, ms")
    log(f"  {'':44s} {'p50':>8s} {'p95':>8s} {'min':>8s} {'max':>8s}")

    def row(name: str, xs: list[float]) -> None:
        if xs:
            log(f"  {name:44s} {pct(xs, 50):8.1f} {pct(xs, 95):8.1f} "
                f"{min(xs):8.1f} {max(xs):8.1f}")

    row("ours: POST -> runner STARTED_AT", ours)
    row("  POST round trip", post)
    row("  POST -> 'submitted to Ray' event", sub)
    row("  'submitted to Ray' -> runner STARTED_AT", start)
    row("ray: submit_job -> python -c first line", ray)
    row("  submit_job round trip", rsub)
    row("  submit_job returned -> first line", rrest)
    row("ray + runtime_env env_vars like ours (info)", [ms(r.latency_s) for r in res.ray_env])
    log(f"  python -c 'pass' here, no Ray (median):    {extras['py_bare_ms']:8.1f}")
    log(f"  python -c 'import clowder_ml.runner':      {extras['py_runner_ms']:8.1f}")
    log(f"  ratio p50 ours/ray:                        {ratio:8.2f}")
    log(f"  target: ours_p50 <= 1.2 * ray_p50 + 200 = {limit:.1f} ms -> "
        f"{'met' if met else 'NOT met'} (ours_p50 {o50:.1f} ms)")
    bad = [r.state for r in res.ours if r.state != "succeeded"] + \
          [r.state for r in res.ray + res.ray_env if r.state != "SUCCEEDED"]
    if bad:
        log(f"  note: {len(bad)} job(s) did not succeed: {bad}")
    log(f"RESULT ours_p50_ms={o50:.1f} ours_p95_ms={o95:.1f} ray_p50_ms={r50:.1f} "
        f"ray_p95_ms={r95:.1f} ratio={ratio:.2f} target_met={str(met).lower()} n={n}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.n <= 0 or args.warmup < 0:
        raise SystemExit("--n must be positive and --warmup >= 0")
    signal.signal(signal.SIGTERM, _sigterm)
    # Short: Ray's unix socket paths must fit in 107 bytes.
    ray_dir = Path(tempfile.mkdtemp(prefix="cml-ray-", dir="/tmp"))
    workdir = Path(tempfile.mkdtemp(prefix="cml-dispatch-bench-"))
    head: EmbeddedRayHead | None = None
    server: ServerProcess | None = None
    http: httpx.Client | None = None
    try:
        log(f"starting a Ray head in {ray_dir}")
        head = EmbeddedRayHead(ray_dir, num_cpus=2).start()
        server = ServerProcess(workdir / "data", env=engine_env(head, workdir / "cache"))
        server.start(timeout=60)
        log(f"Ray head {head.address}; server {server.url} (log {server.log})")
        http = httpx.Client(base_url=server.url, timeout=30,
                            headers={"Authorization": f"Bearer {server.token()}"})
        http.post("/api/v1/datasets", json={"name": "tiny"}).raise_for_status()
        http.post("/api/v1/datasets/tiny/files", files={"file": ("x", CSV)},
                  data={"path": "tiny.csv"}).raise_for_status()

        from ray.job_submission import JobSubmissionClient

        ray = JobSubmissionClient(head.address,
                                  headers={"Authorization": f"Bearer {head.auth_token}"})
        res = Results()
        total = args.warmup + args.n
        for i in range(total):
            counted = i >= args.warmup
            o = run_ours(http, "tiny", args.timeout)
            r = run_ray(ray, workdir, i, args.timeout)
            e = None if args.no_ray_env else run_ray(ray, workdir, i, args.timeout,
                                                     like_our_env(workdir))
            tag = f"{i - args.warmup + 1}/{args.n}" if counted else f"warm-up {i + 1}"
            log(f"{tag:>10s}: ours {ms(o.latency_s):7.1f} ms "
                f"(POST {ms(o.post_s):5.1f}, ->submitted "
                f"{ms(o.to_submitted_s or 0):6.1f}, ->started {ms(o.to_started_s or 0):6.1f}; "
                f"{o.state})   ray {ms(r.latency_s):7.1f} ms "
                f"(submit_job {ms(r.submit_s):5.1f}; {r.state})"
                + (f"   ray+env {ms(e.latency_s):7.1f} ms" if e else ""))
            if counted:
                res.ours.append(o)
                res.ray.append(r)
                if e is not None:
                    res.ray_env.append(e)
        extras = {
            "py_bare_ms": ms(python_start_s("pass")),
            "py_runner_ms": ms(python_start_s("import clowder_ml.runner")),
        }
        report(res, args.n, extras)
        return 0
    except Exception:
        if server is not None and server.log.exists():
            tail = "\n".join(server.log.read_text(errors="replace").splitlines()[-30:])
            print(f"--- server log (last lines) ---\n{tail}", file=sys.stderr)
        raise
    finally:
        if http is not None:
            http.close()
        if server is not None:
            server.stop()
        if head is not None:
            head.stop()
        if args.keep:
            print(f"kept {workdir} and {ray_dir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(ray_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
