"""What a user asks for when submitting a job (strict: unknown fields are refused).

A :class:`JobSpec` names a task and its params, the inputs it reads (dataset versions, model
versions, config or code files), the resources it needs on the cluster, a timeout and a retry
policy. The engine hands ``resources`` to Ray as the entrypoint's reservation, except for
data-parallel jobs (``resources.workers > 1``), see :class:`Resources`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clowder_ml.errors import ValidationFailed
from clowder_ml.sandbox.limits import parse_size

TASK_RE = re.compile(r"^[a-z][a-z0-9-]{1,63}$")
MAX_CPUS = 1024
MAX_GPUS = 64
MAX_TIMEOUT_S = 7 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputRef(_Strict):
    """One input: a dataset version, a model version or a file of a dataset, by reference.

    ``version`` None means "the latest at submission": the engine pins it when the job is
    created, so a job always reads exactly what it was submitted with.
    """

    kind: Literal["dataset", "model", "file"]
    ref: str = Field(min_length=1, max_length=300, description="Name, id or owner:name")
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    path: str | None = Field(default=None, max_length=1024,
                             description="For kind=file: the file's path in the dataset")
    mount: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                              description="Folder name under /data inside the job")


class Resources(_Strict):
    """What a job reserves on the Ray cluster.

    The rule for ``workers`` (one source of truth: a task's own ``workers`` param, if it has
    one, is made equal to it at submission):

    * ``workers == 1``: the job's entrypoint (the runner, and a local training worker it
      starts) reserves ``cpus``, ``gpus`` and ``memory_bytes``.
    * ``workers == W > 1`` (Ray Train, data parallel): the entrypoint reserves no CPUs and
      no GPUs (only ``memory_bytes``), and each of the W Ray Train workers reserves ``cpus``
      and ``gpus``: W x cpus in all. Were the entrypoint to hold CPUs too, a cluster with
      exactly W x cpus CPUs would wait forever for the last worker.
    """

    cpus: float = Field(default=1.0, gt=0, le=MAX_CPUS)
    gpus: float = Field(default=0.0, ge=0, le=MAX_GPUS)
    memory_bytes: int | None = Field(default=None, ge=1 << 20,
                                     description="Bytes, or a size like '4G'")
    workers: int = Field(default=1, ge=1, le=256,
                         description="Training workers; with more than one (Ray Train, data "
                                     "parallel) cpus and gpus are per worker")

    def entrypoint_cpus(self) -> float:
        """CPUs the entrypoint reserves: ``cpus``, or 0 when workers reserve them."""
        return self.cpus if self.workers == 1 else 0.0

    def entrypoint_gpus(self) -> float:
        """GPUs the entrypoint reserves: ``gpus``, or 0 when workers reserve them."""
        return self.gpus if self.workers == 1 else 0.0

    def total_cpus(self) -> float:
        """CPUs the job needs on the cluster in all: ``workers`` x ``cpus``."""
        return self.cpus * self.workers

    def total_gpus(self) -> float:
        """GPUs the job needs on the cluster in all: ``workers`` x ``gpus``."""
        return self.gpus * self.workers

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_size(value)
        except ValidationFailed as exc:  # a field error, reported with the others
            raise ValueError(exc.message) from None


RetryReason = Literal["cluster_lost", "worker_lost"]


def _default_reasons() -> list[RetryReason]:
    return ["cluster_lost"]


class RetryPolicy(_Strict):
    """Resubmit a job lost to infrastructure (never one whose own code failed)."""

    max_retries: int = Field(default=0, ge=0, le=10)
    on: list[RetryReason] = Field(default_factory=_default_reasons)


class JobSpec(_Strict):
    task: str = Field(pattern=TASK_RE.pattern, description="Task name, e.g. dataset-profile")
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputRef] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)
    timeout_s: float = Field(default=3600.0, gt=0, le=MAX_TIMEOUT_S)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @field_validator("task")
    @classmethod
    def _task_name(cls, value: str) -> str:
        if not TASK_RE.match(value):
            raise ValueError("a task name is 2-64 lowercase letters, digits or '-'")
        return value

    def entrypoint_resources(self) -> dict[str, Any]:
        """The reservation for Ray's ``submit_job`` (``entrypoint_num_cpus`` and friends);
        see :class:`Resources` for what a data-parallel job's entrypoint leaves out."""
        out: dict[str, Any] = {"entrypoint_num_cpus": self.resources.entrypoint_cpus()}
        if self.resources.entrypoint_gpus():
            out["entrypoint_num_gpus"] = self.resources.entrypoint_gpus()
        if self.resources.memory_bytes:
            out["entrypoint_memory"] = self.resources.memory_bytes
        return out
