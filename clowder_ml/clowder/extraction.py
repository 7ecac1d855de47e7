"""One Clowder extraction request carried out: import, submit, watch, write back.

:meth:`Extractions.handle` is safe to call again for the same request (a redelivered
message, a listener restarted mid-job): the request's record (``services.clowder_links``)
says how far an earlier delivery got, so the job is submitted once, each result is written
into Clowder once, and a request already answered only has its final status repeated.

What reaches Clowder:

* statuses on the request's reply queue: STARTED on receipt, PROCESSING for each event of
  the job (and its progress, at most every ``progress_every_s``), then SUCCEEDED or ERROR
  with the job's reason;
* on success, in the Clowder dataset: ``clowder-ml-predictions-<job>.csv`` when the job
  predicted, ``clowder-ml-model-<name>-v<N>.zip`` (the safetensors folder with its model
  card) when it trained, and one JSON-LD metadata document with the job, task, params,
  metrics, model, predictions and lineage.

The key Clowder sent is used for these calls only; it is never stored, logged, or given to
the job (whose runner holds its own job-scoped token, see ``docs/clowder.md``).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from clowder_ml.clowder.export import (
    WRITTEN_PREFIX,
    model_metadata,
    model_zip_name,
    write_model_zip,
)
from clowder_ml.clowder.extractor_info import extractor_name, metadata_context
from clowder_ml.clowder.importer import import_request, sources_of
from clowder_ml.clowder.messages import ExtractionRequest
from clowder_ml.clowder.rest import ClowderApi
from clowder_ml.clowder.statuses import Status
from clowder_ml.db.models import ClowderRequest, Job, ModelVersion, User
from clowder_ml.db.session import Database
from clowder_ml.engine.spec import InputRef, JobSpec
from clowder_ml.engine.states import JobState
from clowder_ml.errors import ClowderMLError
from clowder_ml.registry import models
from clowder_ml.services import clowder_links, jobs
from clowder_ml.services.platform import Platform
from clowder_ml.tasks.registry import TaskDef

log = logging.getLogger(__name__)

StatusFn = Callable[[Status, str], None]


class Interrupted(Exception):
    """The listener is stopping: leave the message unacknowledged (it comes back)."""


class LeaseLost(Exception):
    """Another delivery of the same request took it over (this one stalled past its lease);
    that delivery answers Clowder, so this one gives up quietly."""


class _LeaseKeeper:
    """Renews a delivery's lease on its request every quarter of ``ttl_s`` until stopped;
    ``lost`` is set when the lease turned out to be someone else's."""

    def __init__(self, db: Database, request_id: int, owner: str, ttl_s: float) -> None:
        self.db, self.request_id, self.owner, self.ttl_s = db, request_id, owner, ttl_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"clowder-lease-{request_id}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                if not clowder_links.renew_lease(self.db, self.request_id, self.owner,
                                                 self.ttl_s):
                    self.lost.set()
                    return
            except Exception:  # a database hiccup: the lease may still hold; try again
                log.warning("could not renew the lease on Clowder request %s",
                            self.request_id, exc_info=True)

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Extractions:
    """Carries out requests against one Clowder instance (``clowder_url``, the operator's
    setting: the ``host`` a message names is not trusted to choose where keys are sent)."""

    platform: Platform
    clowder_url: str
    version: str
    poll_s: float = 1.0
    progress_every_s: float = 10.0
    # How long a delivery's claim on a request outlives its last renewal: a listener killed
    # mid-job holds its requests this long before a redelivery takes them over.
    lease_s: float = 30.0
    transport: Any = None  # an httpx transport for tests; None: the network

    def handle(self, request: ExtractionRequest, task: TaskDef, status: StatusFn,
               stop: threading.Event) -> None:
        """Carry out ``request`` with ``task``, sending statuses through ``status``.

        Returns once the request is answered (SUCCEEDED or ERROR sent, results written).
        Raises ``Interrupted`` when ``stop`` is set first, ``ClowderUnreachable`` when
        Clowder cannot be reached (both: the message should be delivered again), and
        ``LeaseLost`` when another delivery of the request took it over.

        Deliveries of one request take turns: each works under a lease on the request's
        record, so a duplicate waits for the first (and then finds the request answered)
        instead of submitting a second job."""
        db = self.platform.db
        taken = clowder_links.take_request(db, self.clowder_url, request.job_id,
                                           extractor_name(task.name), request.dataset_id)
        owner = uuid.uuid4().hex
        while not clowder_links.acquire_lease(db, taken.id, owner, self.lease_s):
            log.info("[%s] another delivery is working on the request; waiting",
                     request.job_id)
            if stop.wait(self.poll_s):
                raise Interrupted
        lease = _LeaseKeeper(db, taken.id, owner, self.lease_s)
        try:
            req = clowder_links.get_request(db, taken.id)  # as the last holder left it
            if req.done:
                status(Status(req.final_status or Status.SUCCEEDED),
                       req.final_message or f"Already answered (clowder-ml job {req.job_id}).")
                return
            state, message = self._answer(request, task, req, status, stop, lease)
            clowder_links.mark_done(db, req.id, state.value, message)
            status(state, message)
        finally:
            lease.stop()
            clowder_links.release_lease(db, taken.id, owner)

    def _answer(self, request: ExtractionRequest, task: TaskDef, req: ClowderRequest,
                status: StatusFn, stop: threading.Event, lease: _LeaseKeeper
                ) -> tuple[Status, str]:
        """Submit (or resume watching) the job, write its results back; the final status."""
        with ClowderApi(self.clowder_url, request.secret_key.get_secret_value(),
                        transport=self.transport) as api:
            try:
                resumed = req.job_id is not None
                if not resumed:
                    status(Status.STARTED, f"clowder-ml {task.name} received the request.")
                    req = self._submit(api, request, task, req, status, lease)
                else:
                    status(Status.PROCESSING, f"Resumed watching clowder-ml job {req.job_id}.")
                job = self._watch(req, status, stop, lease, resumed)
                if JobState(job.state) is not JobState.SUCCEEDED:
                    return Status.ERROR, (f"clowder-ml job {job.id} {job.state}: "
                                          f"{job.reason or 'no reason recorded'}")
                self._write_back(api, request, task, req, job, status)
                return Status.SUCCEEDED, (f"clowder-ml job {job.id} succeeded"
                                          + _summary(job.result or {}))
            except ClowderMLError as exc:
                if exc.status == 503:  # Clowder or this server is away: try again later
                    raise
                return Status.ERROR, str(exc)

    # steps -------------------------------------------------------------------------------

    def _user(self, api: ClowderApi) -> User:
        me = api.profile()
        email = str(me.get("email") or "")
        uid = str(me.get("id") or email)
        if not uid:
            raise ClowderMLError("Clowder's profile of the key's user has no id or email.")
        return clowder_links.account_user(self.platform.db, self.clowder_url, uid, email)

    def _submit(self, api: ClowderApi, request: ExtractionRequest, task: TaskDef,
                req: ClowderRequest, status: StatusFn, lease: _LeaseKeeper
                ) -> ClowderRequest:
        user = self._user(api)
        task.parse_params(request.parameters)  # bad params: say so before downloading
        imported = import_request(self.platform, api, user, request)
        status(Status.PROCESSING, f"Imported {len(imported.sources)} file(s) as "
               f"{imported.dataset.name} v{imported.version.number} "
               f"({imported.downloaded} downloaded).")
        spec = JobSpec(task=task.name, params=request.parameters,
                       inputs=[InputRef(kind="dataset", ref=imported.dataset.id,
                                        version=imported.version.number)])
        lease.check()  # the import may have been long: still ours?
        with self.platform.db.session() as s:
            fresh = s.get(User, user.id)
            assert fresh is not None
            job = jobs.submit(s, fresh, spec, self.platform.tasks)
            job_id = job.id
        self.platform.wake_dispatcher()
        status(Status.PROCESSING, f"Submitted clowder-ml job {job_id}.")
        return clowder_links.attach_job(self.platform.db, req.id, job_id)

    def _watch(self, req: ClowderRequest, status: StatusFn, stop: threading.Event,
               lease: _LeaseKeeper, resumed: bool) -> Job:
        """Relay the job's events until it ends; the ended job (detached)."""
        assert req.job_id is not None
        seen: int | None = None
        last_progress: tuple[Any, float] = (None, 0.0)
        while True:
            with self.platform.db.session() as s:
                job = s.get(Job, req.job_id)
                if job is None:
                    raise ClowderMLError(f"clowder-ml job {req.job_id} was deleted.")
                events = jobs.events(s, job)
                s.expunge(job)
            if seen is None:  # a resumed watch does not repeat what Clowder already has
                seen = len(events) if resumed else 0
            for ev in events[seen:]:
                status(Status.PROCESSING, f"{ev.state}: {ev.message}")
            seen = len(events)
            if JobState(job.state).is_terminal():
                return job
            progress = job.progress
            now = time.monotonic()
            if progress and progress != last_progress[0] and \
                    now - last_progress[1] >= self.progress_every_s:
                status(Status.PROCESSING, _progress_text(progress))
                last_progress = (progress, now)
            if stop.wait(self.poll_s):
                raise Interrupted
            lease.check()

    def _write_back(self, api: ClowderApi, request: ExtractionRequest, task: TaskDef,
                    req: ClowderRequest, job: Job, status: StatusFn) -> None:
        result = dict(job.result or {})
        present = {str(f.get("name")): f for f in api.dataset_files(request.dataset_id)
                   if str(f.get("name", "")).startswith(WRITTEN_PREFIX)}
        written: dict[str, dict[str, Any]] = {}
        if isinstance(result.get("predictions"), dict):
            name = f"{WRITTEN_PREFIX}predictions-{job.id}.csv"
            pred = result["predictions"]
            written["predictions"] = self._upload_once(
                api, request, req, "predictions", name, present,
                lambda tmp: Path(self.platform.blobs.path(str(pred["sha256"]))))
            status(Status.PROCESSING, f"Wrote {name} to the Clowder dataset.")
        if isinstance(result.get("model"), dict):
            m = result["model"]
            name = model_zip_name(str(m["name"]), int(m["version"]))
            written["model"] = self._upload_once(
                api, request, req, "model", name, present,
                lambda tmp: self._model_zip(job, tmp / name))
            status(Status.PROCESSING, f"Wrote {name} to the Clowder dataset.")
        if "metadata" not in req.written_back:
            api.add_dataset_metadata(
                request.dataset_id, self._metadata(request, task, job, result, written),
                [metadata_context(task.name)],
                {"name": extractor_name(task.name), "version": self.version,
                 "description": task.summary})
            clowder_links.mark_written(self.platform.db, req.id, "metadata")

    def _upload_once(self, api: ClowderApi, request: ExtractionRequest, req: ClowderRequest,
                     item: str, name: str, present: dict[str, dict[str, Any]],
                     local: Callable[[Path], Path]) -> dict[str, Any]:
        """Upload a result as ``name`` unless Clowder has it already (an earlier delivery
        uploaded it and was stopped before recording so)."""
        if name not in present:
            with tempfile.TemporaryDirectory(dir=self.platform.settings.tmp_dir) as tmp:
                out = api.upload(request.dataset_id, local(Path(tmp)), name)
        else:
            out = present[name]
        clowder_links.mark_written(self.platform.db, req.id, item)
        return {"file_id": out.get("id"), "name": name, "bytes": out.get("bytes")}

    def _model_zip(self, job: Job, dest: Path) -> Path:
        with self.platform.db.session() as s:
            return write_model_zip(self.platform, s, _model_version(s, job), dest)

    def _metadata(self, request: ExtractionRequest, task: TaskDef, job: Job,
                  result: dict[str, Any], written: dict[str, dict[str, Any]]
                  ) -> dict[str, Any]:
        """The JSON-LD content written on the Clowder dataset for a finished job."""
        spec = job.spec
        dataset_in = next((i for i in spec.get("inputs", []) if i.get("kind") == "dataset"),
                          None)
        with self.platform.db.session() as s:
            owner = s.get(User, job.owner_id)
            assert owner is not None
            model = (model_metadata(s, owner, _model_version(s, job))
                     if isinstance(result.get("model"), dict) else None)
        sources = (sources_of(self.platform, dataset_in["ref"], int(dataset_in["version"]))
                   if dataset_in else [])
        return {
            "job": {"id": job.id, "state": job.state, "created": job.created_at.isoformat(),
                    "ended": job.ended_at.isoformat() if job.ended_at else None,
                    "clowder_job_id": request.job_id},
            "task": task.name,
            "params": spec.get("params", {}),
            "metrics": result.get("metrics") or {k: v for k, v in result.items()
                                                 if isinstance(v, int | float)},
            "model": {**model, **written.get("model", {})} if model else None,
            "predictions": ({**result["predictions"], **written.get("predictions", {})}
                            if isinstance(result.get("predictions"), dict) else None),
            "lineage": {"clowder_dataset_id": request.dataset_id, "clowder_files": sources,
                        "dataset": dataset_in},
        }


def _model_version(s: Session, job: Job) -> ModelVersion:
    """The model version job ``job`` registered (its result names it)."""
    owner = s.get(User, job.owner_id)
    assert owner is not None
    return models.resolve(s, owner, str((job.result or {})["model"]["ref"]))


def _progress_text(progress: dict[str, Any]) -> str:
    done, total, msg = progress.get("done"), progress.get("total"), progress.get("message")
    where = f"{done:g}/{total:g}" if isinstance(done, int | float) and isinstance(
        total, int | float) and total else ""
    return " ".join(x for x in ("progress", where, str(msg or "")) if x)


def _summary(result: dict[str, Any]) -> str:
    metrics = result.get("metrics")
    if isinstance(metrics, dict) and metrics:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in list(metrics.items())[:4])
        return f": {shown}."
    return "."
