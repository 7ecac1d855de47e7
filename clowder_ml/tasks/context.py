"""What a task sees while it runs inside a job: params, inputs on local disk, an outputs
folder, its CPU/GPU reservation and number of workers, and a reporter for progress, metrics
and events."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from clowder_ml.tasks.params import TaskParams


class Reporter(Protocol):
    """Buffered reports to the server; calls never block on the network."""

    def event(self, message: str) -> None: ...
    def metric(self, step: int, name: str, value: float) -> None: ...
    def progress(self, done: float, total: float | None = None, message: str = "") -> None: ...


@dataclass(frozen=True)
class InputData:
    """One input made local: ``path`` is a folder with the version's files (read-only use)."""

    kind: str
    ref: str
    version: int | None
    path: Path
    name: str = ""
    files: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # path -> sha256


@dataclass(frozen=True)
class TaskContext:
    """``cpus``/``gpus`` are the job's ``resources``; ``workers`` its ``resources.workers``:
    with more than one, ``cpus``/``gpus`` are what each training worker reserves and the
    task's own process holds none (see ``engine.spec.Resources``)."""

    job_id: str
    params: TaskParams
    inputs: list[InputData]
    outputs_dir: Path
    work_dir: Path
    cpus: float
    gpus: float
    report: Reporter
    workers: int = 1

    def dataset(self, index: int = 0) -> InputData:
        """The ``index``-th dataset input (tasks that take one use ``dataset()``)."""
        datasets = [i for i in self.inputs if i.kind == "dataset"]
        return datasets[index]
