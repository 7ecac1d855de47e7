"""The ``dataset-profile`` task: profile the job's one dataset input (see dataset_profile)."""

from __future__ import annotations

from typing import Any

from clowder_ml.tasks.context import TaskContext
from clowder_ml.tasks.dataset_profile import profile_dataset
from clowder_ml.tasks.registry import DatasetProfileParams


def run(ctx: TaskContext) -> dict[str, Any]:
    params = ctx.params
    assert isinstance(params, DatasetProfileParams)
    data = ctx.dataset()
    ctx.report.event(f"profiling {len(data.files)} files of {data.name} v{data.version}")

    def progress(done: int, total: int, path: str) -> None:
        ctx.report.progress(done, total, path)

    return profile_dataset(data.path, label=params.label, max_rows=params.max_rows,
                           progress=progress)
