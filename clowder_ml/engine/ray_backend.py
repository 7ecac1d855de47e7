"""The job engine's door to Ray: the Ray Jobs API, over HTTP only.

The server never joins the cluster as a driver (no ``ray.init``): everything goes through
``JobSubmissionClient`` and the dashboard's REST API, the same interface a KubeRay head
service offers. Every Ray or transport exception is turned into a ``ClowderMLError`` here, so
callers handle one error family:

- unknown job id -> ``NotFound``
- submission id already used -> ``AlreadyExists`` (a resubmission after a server restart must
  not run a job twice)
- anything else (cluster down, refused, bad answer) -> ``EngineUnavailable`` (503)
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from clowder_ml.errors import AlreadyExists, ClowderMLError, EngineUnavailable, NotFound


class RayJobState(StrEnum):
    """Ray's own job states (``ray.job_submission.JobStatus``), kept apart from ours."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    def is_terminal(self) -> bool:
        return self in (RayJobState.SUCCEEDED, RayJobState.FAILED, RayJobState.STOPPED)


@dataclass(frozen=True)
class RayJobStatus:
    """What Ray says about one job. Times are epoch milliseconds, as Ray gives them."""

    job_id: str
    state: RayJobState
    message: str | None = None
    exit_code: int | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    # Ray's JobErrorType value for a failed job, e.g. "JOB_SUPERVISOR_ACTOR_DIED" when the
    # node that ran the job's entrypoint died, "JOB_ENTRYPOINT_COMMAND_ERROR" for an exit.
    error_type: str | None = None

    def lost_worker(self) -> bool:
        """Whether the job failed because its process or node was lost, not by its own
        doing: the node running the entrypoint died (a lost pod), or the entrypoint was
        killed with SIGKILL (the OOM killer, an evicted or deleted pod's processes)."""
        if self.state is not RayJobState.FAILED:
            return False
        if self.error_type == "JOB_SUPERVISOR_ACTOR_DIED":
            return True
        # Ray runs the entrypoint through a shell: -9 when the shell exec'd the command and
        # it was killed, 137 (128 + 9) when the shell reported its child's death.
        return self.exit_code in (-9, 137)


@dataclass(frozen=True)
class ClusterResources:
    """Totals over the cluster's alive nodes (memory in bytes)."""

    cpus: float
    gpus: float
    memory_bytes: int
    nodes: int


@dataclass(frozen=True)
class NodeResources:
    """One alive node's total resources (memory in bytes), as Ray's State API reports them."""

    node_id: str
    is_head: bool
    cpus: float
    gpus: float
    memory_bytes: int


def _message(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__


@contextmanager
def _boundary(job_id: str | None = None) -> Iterator[None]:
    """Translate whatever Ray or the transport raises into our error family."""
    try:
        yield
    except ClowderMLError:
        raise
    except Exception as exc:  # Ray raises RuntimeError/ValueError/requests errors alike
        text = str(exc)
        if job_id is not None and ("does not exist" in text or "404" in text):
            raise NotFound(f"Ray has no job {job_id}") from exc
        if "already exists" in text:
            raise AlreadyExists(
                f"Ray already has a job with submission id {job_id}",
                hint="query its status instead of submitting it again",
            ) from exc
        raise EngineUnavailable(
            f"Ray Jobs API failed: {_message(exc)}", hint="is the Ray cluster up and reachable?"
        ) from exc


def _status_from(job_id: str, info: Any) -> RayJobStatus:
    return RayJobStatus(
        job_id=job_id,
        state=RayJobState(str(getattr(info.status, "value", info.status))),
        message=info.message,
        exit_code=getattr(info, "driver_exit_code", None),
        start_time_ms=info.start_time,
        end_time_ms=info.end_time,
        error_type=(str(getattr(info.error_type, "value", info.error_type))
                    if getattr(info, "error_type", None) else None),
    )


class RayJobsBackend:
    """Submit, watch and stop jobs on one Ray cluster through its Jobs API.

    ``address`` is the dashboard/Jobs API URL (``http://HOST:8265``); ``auth_token`` is sent as
    a Bearer token when the cluster has token auth. Construction checks the cluster answers
    (raises ``EngineUnavailable`` if not). Methods are blocking except ``tail_logs``.
    """

    def __init__(self, address: str, auth_token: str | None = None) -> None:
        self.address = address.rstrip("/")
        self._headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        # Imported here, not at the top: the ray package costs an API server ~45 MiB of
        # memory, and a server that only stores data never talks to a cluster.
        from ray.job_submission import JobSubmissionClient

        with _boundary():
            self._client = JobSubmissionClient(self.address, headers=dict(self._headers))

    def submit(
        self,
        job_id: str,
        entrypoint: list[str] | str,
        *,
        env: dict[str, str] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory_bytes: int | None = None,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        """Submit with our ``job_id`` as Ray's ``submission_id``.

        The entrypoint's reservation (``entrypoint_num_cpus/gpus/memory``) is what Ray
        schedules on: a request larger than the cluster stays PENDING in Ray (Ray does not
        fail it), so callers must compare with ``cluster_resources()`` to fail fast. ``env``
        is merged into ``runtime_env["env_vars"]``. A list entrypoint is shell-quoted.
        """
        cmd = entrypoint if isinstance(entrypoint, str) else shlex.join(entrypoint)
        renv: dict[str, Any] = dict(runtime_env or {})
        if env:
            renv["env_vars"] = {**dict(renv.get("env_vars") or {}), **env}
        with _boundary(job_id):
            self._client.submit_job(
                entrypoint=cmd,
                submission_id=job_id,
                runtime_env=renv or None,
                entrypoint_num_cpus=num_cpus,
                entrypoint_num_gpus=num_gpus,
                entrypoint_memory=memory_bytes,
            )

    def status(self, job_id: str) -> RayJobStatus:
        """Ray's state and message for ``job_id``; ``NotFound`` if Ray does not know it."""
        with _boundary(job_id):
            info = self._client.get_job_info(job_id)
        return _status_from(job_id, info)

    def logs(self, job_id: str) -> str:
        """The job's whole log so far (stdout and stderr of the entrypoint)."""
        with _boundary(job_id):
            return str(self._client.get_job_logs(job_id))

    async def tail_logs(self, job_id: str) -> AsyncIterator[str]:
        """Log chunks as the job writes them; ends when the job is terminal."""
        with _boundary(job_id):
            async for chunk in self._client.tail_job_logs(job_id):
                yield str(chunk)

    def stop(self, job_id: str) -> bool:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL after Ray's grace period).

        Returns True if Ray had a supervisor for the job. Asynchronous on Ray's side: poll
        ``status`` for STOPPED. Ray 2.60 limitation: a job PENDING on resources the cluster
        lacks is not stopped (the stop waits on its never-scheduled supervisor actor), which is
        one more reason to refuse infeasible requests before submitting them.
        """
        with _boundary(job_id):
            return bool(self._client.stop_job(job_id))

    def list(self) -> list[RayJobStatus]:
        """All submitted jobs Ray knows (jobs without a submission id are left out)."""
        with _boundary():
            jobs = self._client.list_jobs()
        return [_status_from(j.submission_id, j) for j in jobs if j.submission_id]

    def nodes(self) -> tuple[NodeResources, ...]:
        """The cluster's alive nodes and their totals, from the dashboard's State API."""
        with _boundary():
            r = httpx.get(
                f"{self.address}/api/v0/nodes",
                params={"detail": "true", "limit": "10000"},
                headers=self._headers,
                timeout=10.0,
            )
            r.raise_for_status()
            nodes = r.json()["data"]["result"]["result"]
        return tuple(
            NodeResources(node_id=str(node.get("node_id", "")),
                          is_head=bool(node.get("is_head_node")),
                          cpus=float(total.get("CPU", 0)), gpus=float(total.get("GPU", 0)),
                          memory_bytes=int(float(total.get("memory", 0))))
            for node in nodes if node.get("state") == "ALIVE"
            for total in [node.get("resources_total") or {}])

    def cluster_resources(self) -> ClusterResources:
        """Total CPUs, GPUs and memory of alive nodes, from the dashboard's State API."""
        alive = self.nodes()
        return ClusterResources(cpus=sum(n.cpus for n in alive), gpus=sum(n.gpus for n in alive),
                                memory_bytes=sum(n.memory_bytes for n in alive),
                                nodes=len(alive))
