"""Tasks for engine tests, loaded by servers and runners through CLOWDER_ML_EXTRA_TASKS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from clowder_ml.errors import ValidationFailed
from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.params import TaskParams
from clowder_ml.tasks.registry import TaskDef


class SleepParams(TaskParams):
    seconds: float = 0.0
    lines: int = 0  # print this many numbered lines
    metrics: int = 0  # report this many "loss" points
    fail: str | None = None  # raise RuntimeError(fail) at the end
    fail_expected: str | None = None  # raise a platform error (no traceback expected)
    exit_code: int | None = None  # os._exit(code) without reporting
    spawn_child: bool = False  # start a grandchild process that sleeps as long
    write_dir: str | None = None  # write pid(s), token and env here


def sleep(ctx: TaskContext) -> dict[str, Any]:
    p = ctx.params
    assert isinstance(p, SleepParams)
    child = None
    if p.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if p.write_dir:
        out = Path(p.write_dir)
        out.mkdir(parents=True, exist_ok=True)
        pids = [os.getpid()] + ([child.pid] if child else [])
        (out / f"{ctx.job_id}.pids").write_text(" ".join(map(str, pids)))
        (out / f"{ctx.job_id}.token").write_text(os.environ["CLOWDER_ML_JOB_TOKEN"])
    for i in range(p.lines):
        print(f"line {i}", flush=True)
    for i in range(p.metrics):
        ctx.report.metric(i, "loss", 1.0 / (i + 1))
    deadline = time.monotonic() + p.seconds
    while time.monotonic() < deadline:
        ctx.report.progress(p.seconds - (deadline - time.monotonic()), p.seconds, "sleeping")
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    if p.exit_code is not None:
        os._exit(p.exit_code)
    if p.fail:
        raise RuntimeError(p.fail)
    if p.fail_expected:
        raise ValidationFailed(p.fail_expected)
    if child is not None:
        child.kill()
    (ctx.outputs_dir / "done.txt").write_text("done\n")
    return {"slept": p.seconds, "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "inputs": [i.files for i in ctx.inputs]}


TASKS = [TaskDef(name="test-sleep", summary="sleep, print, fail on request (tests only)",
                 params=SleepParams, entry="cml_test_tasks:sleep",
                 max_datasets=4)]
