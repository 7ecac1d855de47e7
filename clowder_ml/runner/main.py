"""The runner: everything one attempt of a job does on its Ray node.

1. report "started" (with the moment the process started), and from then on every line the
   process and its children print, in batches;
2. fetch the spec and the pinned inputs through the runner API (job token only), inputs from
   the node's cache by digest;
3. make PyTorch & co. use the CPUs the job reserved;
4. run the task; upload files it wrote to its outputs folder;
5. report SUCCEEDED with the task's result, or FAILED with a one-line reason.

Stopping: Ray stops a job with SIGTERM to its process group (SIGKILL after a grace period);
the runner turns SIGTERM into an exception so cleanup code runs (work folder removed,
sandboxes torn down by their context managers) and exits 143 without reporting a result.
The server records CANCELLED (or the timeout) itself.

Exit codes: 0 done, 1 task failed (reported), 2 could not report, 3 the server ended the job
(its token is refused: cancelled, timed out, or lost and resubmitted), 143 stopped by Ray.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from clowder_ml.errors import ClowderMLError
from clowder_ml.runner import STARTED_AT, threads
from clowder_ml.runner.api import ApiFailed, RunnerApi, TokenRefused
from clowder_ml.runner.inputs import BlobCache, default_cache_dir, materialize
from clowder_ml.runner.logtee import LogTee
from clowder_ml.runner.reporter import Reporter
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.registry import TaskRegistry


class Stopped(BaseException):
    """SIGTERM from Ray: the job is being stopped (cancel or timeout)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped()


def one_line(exc: BaseException) -> str:
    """A failure as one line: our errors by their message, others as ``Type: message``."""
    if isinstance(exc, ClowderMLError):
        text = exc.message
    elif isinstance(exc, ApiFailed):  # the server's own words, already one line
        text = str(exc)
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text[:500]


def _json_safe(value: Any) -> Any:
    """The result as strict JSON (NaN/inf -> None, unknown objects -> str)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _upload_outputs(api: RunnerApi, outputs: Path, reporter: Reporter) -> int:
    count = 0
    for path in sorted(p for p in outputs.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(outputs).as_posix()
        api.upload_output(rel, path)
        count += 1
    if count:
        reporter.event(f"uploaded {count} output file(s)")
    return count


def run_task(api: RunnerApi, reporter: Reporter, work: Path) -> dict[str, Any]:
    job = api.job()
    # Same format as the server's setting (a JSON list), so Settings() parses it here too.
    registry = TaskRegistry(json.loads(os.environ.get("CLOWDER_ML_EXTRA_TASKS") or "[]"))
    task = registry.get(job["task"])
    spec = job["spec"]
    params = task.parse_params(spec.get("params") or {})
    resources = spec.get("resources") or {}
    cpus = float(resources.get("cpus", 1.0))
    n = threads.configure(cpus)
    print(f"clowder-ml runner: job {job['id']} attempt {job['attempt']}, task {task.name}, "
          f"{cpus:g} CPU, {n} thread(s)", flush=True)
    cache = BlobCache(default_cache_dir())
    inputs = materialize(api, cache, job["inputs"], work / "inputs",
                         lambda done, total, path: reporter.progress(done, total,
                                                                     f"fetching {path}"))
    if job["inputs"]:
        reporter.event(f"inputs ready: {sum(len(i.files) for i in inputs)} files "
                       f"({cache.hits} from the node cache)")
    outputs = work / "outputs"
    outputs.mkdir()
    ctx = TaskContext(job_id=job["id"], params=params, inputs=inputs, outputs_dir=outputs,
                      work_dir=work, cpus=cpus, gpus=float(resources.get("gpus", 0.0)),
                      report=reporter, workers=int(resources.get("workers", 1)))
    result = _json_safe(task.load()(ctx))
    _upload_outputs(api, outputs, reporter)
    return result if isinstance(result, dict) else {"value": result}


def main() -> int:
    url = os.environ.get("CLOWDER_ML_API_URL")
    token = os.environ.get("CLOWDER_ML_JOB_TOKEN")
    if not url or not token:
        print("clowder-ml runner: CLOWDER_ML_API_URL and CLOWDER_ML_JOB_TOKEN must be set "
              "(the runner is started by the job engine)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    api = RunnerApi(url, token, retry_s=float(os.environ.get("CLOWDER_ML_RUNNER_RETRY_S",
                                                             "600")))
    # A refused token means the server ended the job (cancelled, timed out, or lost with
    # its cluster and maybe resubmitted elsewhere): stop at once, as if Ray had stopped us,
    # so an orphaned runner never keeps working on a job that is over.
    reporter = Reporter(api, interval_s=float(os.environ.get("CLOWDER_ML_REPORT_INTERVAL_S",
                                                             "1.0")),
                        on_token_refused=lambda: os.kill(os.getpid(), signal.SIGTERM))
    reporter.started(STARTED_AT)
    tee = LogTee(reporter.log_bytes).start()
    reporter.start()
    work = Path(tempfile.mkdtemp(prefix="cml-job-"))
    status, result, reason, code = "failed", None, "", 1
    try:
        result = run_task(api, reporter, work)
        status, code = "succeeded", 0
    except Stopped:
        if reporter.token_refused:
            print("clowder-ml runner: the server ended this job; stopping", flush=True)
            code = 3
        else:
            print("clowder-ml runner: stopped (SIGTERM)", flush=True)
            code = 143
    except TokenRefused:
        print("clowder-ml runner: the server ended this job; stopping", flush=True)
        code = 3
    except (ClowderMLError, ApiFailed) as exc:  # expected failures: the message says it all
        reason = one_line(exc)
        hint = getattr(exc, "hint", None)
        print(f"error: {reason}" + (f"\n  hint: {hint}" if hint else ""), flush=True)
    except Exception as exc:
        traceback.print_exc()
        reason = one_line(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tee.stop()
    try:
        reporter.close()
        if code in (0, 1):
            api.finish(status, result=result, reason=reason or None)
    except TokenRefused:
        return 3
    except ApiFailed as exc:
        print(f"clowder-ml runner: could not report to the server: {exc}", file=sys.stderr)
        return 2
    finally:
        api.close()
    return code


