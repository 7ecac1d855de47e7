"""The dispatcher: hands queued jobs to Ray and keeps every job's state in step with Ray's.

One loop per server, woken by submissions, cancels and finishes, and otherwise every
``tick_s``. Each pass (``step``, blocking, run in a thread):

1. hands PENDING jobs to Ray in submission order while their owner has a free slot, after
   failing fast those the cluster can never run (first, so a new job starts at once);
2. asks Ray for all its jobs (one call), then for every job we think Ray has (SUBMITTED or
   RUNNING) settles what Ray says: stop it if cancelled or over its timeout, explain what it
   waits for, or record how it ended when the runner could not say so itself.

The dispatcher knows jobs only through the :class:`~clowder_ml.engine.port.JobStore` it is
handed (the server gives it one over the database); it imports no database code.

Restart safety: the server keeps no state that matters in memory. Our job id is Ray's
submission id, so a job submitted just before a crash is found again (Ray answers "already
exists") instead of being run twice; jobs that ran on while the server was down are settled
by the first pass. When Ray no longer knows a job, or stays unreachable for
``ray_lost_after_s``, the job is lost: resubmitted if its retry policy allows, else FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread

from clowder_ml.engine import ray_cluster
from clowder_ml.engine.capacity import Capacity, capacity
from clowder_ml.engine.feasibility import check_feasible
from clowder_ml.engine.port import JobRecord, JobStore
from clowder_ml.engine.ray_backend import (
    RayJobsBackend,
    RayJobState,
    RayJobStatus,
)
from clowder_ml.engine.ray_cluster import RayCluster
from clowder_ml.engine.spec import JobSpec, RetryReason
from clowder_ml.engine.states import JobState
from clowder_ml.errors import (
    AlreadyExists,
    ClowderMLError,
    EngineUnavailable,
    InvalidJobTransition,
    NotFound,
    ResourcesUnsatisfiable,
)
from clowder_ml.settings import Settings

log = logging.getLogger("clowder_ml.engine")
RESOURCES_TTL_S = 15.0
RUNNER_MODULE = "clowder_ml.runner"


@dataclass
class _Pass:
    """What one pass learned about the cluster (reservations of jobs Ray is running)."""

    running_cpus: float = 0.0
    running_gpus: float = 0.0


def submission_id(job: JobRecord) -> str:
    """Ray's id for the job's current attempt: the job id, then ``<id>-a2``, ``<id>-a3``..."""
    return job.id if job.attempt == 1 else f"{job.id}-a{job.attempt}"


def threads_for(cpus: float) -> int:
    """Threads a job may use: the CPUs it reserved, at least one."""
    return max(1, math.floor(cpus))


class Dispatcher:
    """Owns the connection to Ray; see the module docstring for what a pass does."""

    def __init__(self, settings: Settings, store: JobStore, *,
                 connect: Callable[[Settings], RayCluster] = ray_cluster.connect,
                 tick_s: float = 1.0) -> None:
        self.settings = settings
        self.store = store
        self._connect = connect
        self.tick_s = tick_s
        self.cluster: RayCluster | None = None
        self.backend: RayJobsBackend | None = None
        self._lost_since: float | None = None
        self._stopping: set[str] = set()
        self._capacity: tuple[float, Capacity] | None = None
        # Submission ids whose wait for resources is already an event (one per wait).
        self._waiting_noted: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.unreachable: str | None = None
        # A pass may be starting the embedded head (seconds) in a worker thread when the
        # server shuts down: close() waits for it, so that head is stopped, not orphaned.
        self._pass_lock = threading.Lock()
        self._closed = False

    # the loop ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Run a pass now (safe from any thread)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            try:
                await to_thread.run_sync(self.step)
            except Exception:  # one bad pass must not stop the engine
                log.exception("dispatcher pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick_s)

    def close(self, wait_s: float = 120.0) -> None:
        """Stop the embedded head (if we run one); a remote cluster is left alone. Waits up
        to ``wait_s`` for a pass in progress (e.g. one starting the head); no pass runs
        after this."""
        self._closed = True
        acquired = self._pass_lock.acquire(timeout=wait_s)
        try:
            if self.cluster is not None:
                self.cluster.stop()
                self.cluster = None
                self.backend = None
        finally:
            if acquired:
                self._pass_lock.release()

    # one pass ------------------------------------------------------------------------------

    def step(self) -> None:
        """One reconcile-and-dispatch pass (blocking); nothing once closed."""
        with self._pass_lock:
            if not self._closed:
                self._step()

    def _step(self) -> None:
        if self.backend is None and not self._head_needed():
            return
        backend = self._ensure_backend()
        if backend is None:
            return
        # Queued jobs first: a submission should not wait for the reconcile of all others.
        self._dispatch(backend)
        try:
            ray_jobs = {j.job_id: j for j in backend.list()}
        except EngineUnavailable as exc:
            self._cluster_unreachable(str(exc))
            return
        self._lost_since = None
        self.unreachable = None
        active = self.store.active()
        seen = _Pass()
        for job in active:
            st = ray_jobs.get(job.ray_submission_id or "")
            if st is not None and st.state is RayJobState.RUNNING:
                seen.running_cpus += job.spec.resources.cpus
                seen.running_gpus += job.spec.resources.gpus
        for job in active:
            try:
                self._reconcile(backend, job, ray_jobs.get(job.ray_submission_id or ""), seen)
            except EngineUnavailable as exc:
                self._cluster_unreachable(str(exc))
                return

    def _head_needed(self) -> bool:
        """Whether to connect now. A remote cluster: always. The embedded head (about a GiB
        of memory, seconds to start) waits for the first job, so a server that only stores
        data runs no Ray; a head a killed server left running is adopted at once."""
        if self.settings.ray_address:
            return True
        left_running = (ray_cluster.ray_temp_dir(self.settings.resolved_data_dir)
                        / ray_cluster.STATE_FILE).exists()
        return left_running or bool(self.store.pending()) or bool(self.store.active())

    def _ensure_backend(self) -> RayJobsBackend | None:
        if self.backend is not None:
            return self.backend
        what = ("starting the embedded Ray head" if not self.settings.ray_address
                else f"connecting to Ray at {self.settings.ray_address}")
        self.store.set_waiting_all_pending(f"the job engine is {what}")
        try:
            self.cluster = self._connect(self.settings)
            self.backend = RayJobsBackend(self.cluster.address, self.cluster.auth_token)
            log.info("job engine connected", extra={"ray_address": self.cluster.address})
        except ClowderMLError as exc:
            self._cluster_unreachable(exc.message)
            return None
        return self.backend

    def _cluster_unreachable(self, why: str) -> None:
        """Ray did not answer: wait ``ray_lost_after_s``, then count its jobs as lost."""
        now = time.monotonic()
        if self._lost_since is None:
            self._lost_since = now
            log.warning("Ray cluster unreachable", extra={"error": why})
        self.unreachable = why
        if self.cluster is not None and self.cluster.embedded is not None \
                and not self.cluster.embedded.alive():
            # Our own head died: its jobs died with it (no need to wait), and the next pass
            # starts a new head for the queue and for the retries.
            self.cluster.stop()
            self.cluster, self.backend = None, None
            for job in self.store.active():
                self._lost(job, "The embedded Ray head stopped under the job.")
        active = self.store.active()
        self.store.set_waiting_all_pending("the Ray cluster is not reachable")
        if now - self._lost_since < self.settings.ray_lost_after_s:
            return
        for job in active:  # the details are in the server log (warning above)
            self._lost(job, f"The Ray cluster was lost (unreachable for "
                            f"{now - self._lost_since:.0f} s).")

    # jobs Ray has --------------------------------------------------------------------------

    def _reconcile(self, backend: RayJobsBackend, job: JobRecord, st: RayJobStatus | None,
                   seen: _Pass) -> None:
        sid = job.ray_submission_id or submission_id(job)
        if st is None:
            try:
                st = backend.status(sid)
            except NotFound:
                self._lost(job, "Ray no longer knows this job (its cluster was restarted "
                                "or lost).")
                return
        spec = job.spec
        if not st.state.is_terminal():
            if job.cancel_requested:
                self._stop(backend, sid, "stopping it on Ray (cancel requested)", job.id)
            elif job.started_at is not None and \
                    time.time() - job.started_at.timestamp() > spec.timeout_s:
                self._stop(backend, sid, "stopping it on Ray (timed out)", job.id)
                self._end(job, JobState.FAILED, f"Timed out after {spec.timeout_s:g} s "
                                                "(the job's timeout_s).")
            elif st.state is RayJobState.PENDING:
                self._wait_for_resources(job, sid, *self._waiting_message(spec, seen))
            else:
                self._waiting_noted.discard(sid)
                if job.waiting_for:
                    self._set_waiting(job, None)
            return
        self._stopping.discard(sid)
        self._waiting_noted.discard(sid)
        if job.cancel_requested:
            self._end(job, JobState.CANCELLED, "Cancelled by request.")
        elif st.state is RayJobState.STOPPED:
            self._end(job, JobState.FAILED, "Stopped on the Ray cluster outside clowder-ml.")
        elif st.state is RayJobState.SUCCEEDED:
            self._end(job, JobState.FAILED, "The runner exited without reporting a result.")
        elif st.lost_worker():
            # Its pod (node) or process was lost: like a lost cluster, an infrastructure
            # failure, retried when the job asks for it ("worker_lost"); a new attempt resumes
            # from the checkpoints the lost one left on the shared volume.
            self._keep_ray_log(backend, job)
            self._lost(job, _lost_worker(st), cause="worker_lost")
        else:
            self._keep_ray_log(backend, job)
            self._end(job, JobState.FAILED, _ray_failure(st))

    def _stop(self, backend: RayJobsBackend, sid: str, message: str, job_id: str) -> None:
        if sid in self._stopping:
            return
        self._stopping.add(sid)
        self.store.add_event(job_id, message)
        with contextlib.suppress(NotFound):
            backend.stop(sid)

    def _end(self, job: JobRecord, state: JobState, reason: str) -> None:
        # The runner's own report (or a cancel) may have got there first.
        with contextlib.suppress(InvalidJobTransition):
            self.store.transition(job.id, state, reason, reason=reason)

    def _set_waiting(self, job: JobRecord, message: str | None) -> None:
        if job.waiting_for != message:
            self.store.set_waiting(job.id, message)

    def _wait_for_resources(self, job: JobRecord, sid: str, message: str, short: bool
                            ) -> None:
        """Ray has not started the job: say what it needs on the job; and when that is more
        than is free (it waits for other jobs, or for the autoscaler to add a node), once
        per wait as an event. A job that only takes its moment to start gets no event."""
        self._set_waiting(job, message)
        if short and sid not in self._waiting_noted:
            self._waiting_noted.add(sid)
            self.store.add_event(job.id, f"waiting for resources: {message}")

    def _waiting_message(self, spec: JobSpec, seen: _Pass) -> tuple[str, bool]:
        """What a job Ray holds PENDING needs, and whether that is more than is free now
        (free: the alive nodes' totals less what the jobs Ray runs reserved)."""
        cap = self._cluster_capacity()
        if cap is None:
            return "waiting for resources on the Ray cluster", True
        r, total = spec.resources, cap.now
        free_cpus = max(0.0, total.cpus - seen.running_cpus)
        free_gpus = max(0.0, total.gpus - seen.running_gpus)
        short = r.entrypoint_cpus() > free_cpus or r.entrypoint_gpus() > free_gpus
        parts = [f"needs {r.cpus:g} CPU{'s' if r.cpus != 1 else ''}; "
                 f"{free_cpus:g} of {total.cpus:g} free"]
        if r.gpus:
            parts.append(f"needs {r.gpus:g} GPU{'s' if r.gpus != 1 else ''}; "
                         f"{free_gpus:g} of {total.gpus:g} free")
        if cap.autoscaling:
            most = cap.most
            parts.append(f"the autoscaler can grow the cluster to {most.cpus:g} "
                         f"CPU{'s' if most.cpus != 1 else ''}"
                         + (f", {most.gpus:g} GPU{'s' if most.gpus != 1 else ''}"
                            if most.gpus else ""))
        return "; ".join(parts), short

    def _keep_ray_log(self, backend: RayJobsBackend, job: JobRecord) -> None:
        """Keep Ray's log of a job that died before its runner could send one (a crash at
        start-up, an import error): it is the only record of what went wrong."""
        if job.log_size > 0:
            return
        try:
            text = backend.logs(job.ray_submission_id or submission_id(job))
        except ClowderMLError:
            return
        if text:
            self.store.append_log(job.id, text)

    def _lost(self, job: JobRecord, why: str, cause: RetryReason = "cluster_lost") -> None:
        """The job's cluster (``cause`` "cluster_lost") or its process or node
        ("worker_lost") is gone: resubmit if its retry policy names ``cause`` and has
        attempts left, else fail."""
        retry = job.spec.retry
        if cause in retry.on and job.attempt <= retry.max_retries \
                and not job.cancel_requested:
            with contextlib.suppress(InvalidJobTransition):
                self.store.transition(job.id, JobState.PENDING,
                                      f"{why} Retrying (attempt {job.attempt + 1} of "
                                      f"{retry.max_retries + 1}).")
            return
        self._end(job, JobState.CANCELLED if job.cancel_requested else JobState.FAILED, why)

    # queued jobs ---------------------------------------------------------------------------

    def _cluster_capacity(self) -> Capacity | None:
        """The cluster's capacity now and at most (``CLOWDER_ML_RAY_NODE_TYPES``), cached for
        ``RESOURCES_TTL_S``; None when Ray does not answer."""
        now = time.monotonic()
        if self._capacity is not None and now - self._capacity[0] < RESOURCES_TTL_S:
            return self._capacity[1]
        if self.backend is None:
            return None
        try:
            cap = capacity(self.backend.nodes(), self.settings.ray_node_types)
        except ClowderMLError:
            return None
        self._capacity = (now, cap)
        return cap

    def _dispatch(self, backend: RayJobsBackend) -> None:
        queue = self.store.pending()
        running = Counter(j.owner_id for j in self.store.active())
        limit = self.settings.max_running_jobs_per_user
        for job in queue:
            cluster = self._cluster_capacity()
            if cluster is not None:
                try:
                    check_feasible(job.spec, cluster)
                except ResourcesUnsatisfiable as exc:
                    self._end(job, JobState.FAILED, exc.message)
                    continue
            if running[job.owner_id] >= limit:
                self._set_waiting(job, f"{running[job.owner_id]} of your jobs are running "
                                       f"(limit {limit})")
                continue
            try:
                self._submit(backend, job)
            except EngineUnavailable:
                self._set_waiting(job, "the Ray cluster is not reachable")
                return
            running[job.owner_id] += 1

    def _submit(self, backend: RayJobsBackend, job: JobRecord) -> None:
        sid, spec = submission_id(job), job.spec
        token = self.store.claim_submission(job.id, sid, spec.timeout_s)
        if token is None:
            return  # cancelled meanwhile
        threads = str(threads_for(spec.resources.cpus))
        env = {
            **self.settings.job_env,
            "CLOWDER_ML_API_URL": self._api_url(),
            "CLOWDER_ML_JOB_ID": job.id,
            "CLOWDER_ML_JOB_TOKEN": token,
            # Ray would give the job one thread per reserved CPU only for its own workers;
            # these make numpy/PyTorch in the runner use exactly what the job reserved.
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "CLOWDER_ML_JOB_CPUS": f"{spec.resources.cpus:g}",
            "CLOWDER_ML_JOB_GPUS": f"{spec.resources.gpus:g}",
        }
        shared = self._shared_dir()
        if shared is not None:
            env["CLOWDER_ML_SHARED_DIR"] = shared
        if self.settings.extra_tasks:
            env["CLOWDER_ML_EXTRA_TASKS"] = json.dumps(self.settings.extra_tasks)
        python = self.settings.job_python or (sys.executable if self.cluster is not None
                                              and self.cluster.embedded else "python")
        try:
            # Data-parallel jobs: the Ray Train workers reserve the CPUs/GPUs, not the
            # entrypoint (see Resources), or they could never all be placed.
            backend.submit(sid, [python, "-m", RUNNER_MODULE], env=env,
                           num_cpus=spec.resources.entrypoint_cpus(),
                           num_gpus=spec.resources.entrypoint_gpus() or None,
                           memory_bytes=spec.resources.memory_bytes)
            message = f"submitted to Ray as {sid}"
        except AlreadyExists:
            message = f"found on Ray as {sid} (submitted before a server restart)"
        try:
            self.store.transition(job.id, JobState.SUBMITTED, message)
        except InvalidJobTransition:  # cancelled while we submitted: stop it now
            if self.store.state(job.id) is JobState.CANCELLED:
                self._stop(backend, sid, "stopping it on Ray (cancelled)", job.id)

    def _shared_dir(self) -> str | None:
        """Where jobs keep checkpoints, as the Ray nodes see it: ``job_shared_dir``, or for
        the embedded head (same machine) ``<data>/shared``. A remote cluster never gets a
        path of the server's; without ``job_shared_dir`` its jobs checkpoint in their own
        work folder (a lost node then restarts training from the beginning)."""
        if self.settings.job_shared_dir is not None:
            return str(self.settings.job_shared_dir)
        if self.cluster is not None and self.cluster.embedded is not None:
            return str(self.settings.resolved_data_dir / "shared")
        return None

    def _api_url(self) -> str:
        url = self.settings.job_api_url or self.settings.public_url
        if not url:
            raise EngineUnavailable("The server does not know its own URL for runners.",
                                    "Set CLOWDER_ML_JOB_API_URL.")
        return url.rstrip("/")


def _lost_worker(st: RayJobStatus) -> str:
    """One line on how a job's process or node was lost (see ``RayJobStatus.lost_worker``)."""
    if st.error_type == "JOB_SUPERVISOR_ACTOR_DIED":
        return "The node running the job was lost (its Ray job supervisor died)."
    return (f"The job's process was killed (exit code {st.exit_code}: SIGKILL, e.g. out of "
            "memory or its pod removed).")


def _ray_failure(st: RayJobStatus) -> str:
    """One line on why Ray says the job failed (its message can hold a whole log)."""
    first = (st.message or "").strip().splitlines()[0] if st.message else ""
    if st.exit_code not in (None, 0):
        return f"The job's process exited with code {st.exit_code} before reporting a " \
               f"result." + (f" Ray: {first[:300]}" if first and "exit code" not in first
                             else "")
    return f"Ray reports the job failed: {first[:300] or 'no reason given'}."
