"""Jobs: submit, list, show, cancel, and watch (events, logs, metrics, WebSocket)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import PurePosixPath
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect, status
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse

from clowder_ml.api.deps import PlatformDep, UserDep, current_user_ws
from clowder_ml.api.fields import NO_NUL_PATTERN, FilePathPath, IdPath
from clowder_ml.api.job_schemas import JobEventOut, MetricOut, OutputOut
from clowder_ml.api.responses import NAMES_RESOURCE, READS_DATASET, READS_MODEL, errors
from clowder_ml.db.models import User
from clowder_ml.engine.spec import JobSpec
from clowder_ml.engine.states import JobState
from clowder_ml.errors import ClowderMLError, NotFound, PermissionDenied, UnusableContent
from clowder_ml.services import job_runs, jobs
from clowder_ml.services.job_views import JobOut
from clowder_ml.services.platform import Platform

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])
# A submission names a task (404 when there is none of that name) and its inputs (datasets
# and models it must be able to read, a dataset with files; write access where the task
# adds to the dataset).
SUBMITS = errors(*READS_DATASET, *READS_MODEL, PermissionDenied, UnusableContent)
JOB = errors(*NAMES_RESOURCE)
# How often followers look for new log bytes, metrics and state (the DB is the only channel
# between the runner's reports and the watchers, so this works with any number of servers).
FOLLOW_POLL_S = 0.25
MAX_METRIC_ID = 2**31 - 1  # metric ids are 32-bit integers in the database


def _view(platform: Platform, user: User, job_id: str) -> JobOut:
    with platform.db.session() as s:
        return job_runs.describe(s, platform.settings, jobs.get(s, user, job_id))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut,
             responses=SUBMITS)
def submit(spec: JobSpec, user: UserDep, platform: PlatformDep) -> JobOut:
    """Record a job; the dispatcher hands it to Ray as soon as the user has a free slot."""
    with platform.db.session() as s:
        job = jobs.submit(s, user, spec, platform.tasks)
        s.flush()
        out = job_runs.describe(s, platform.settings, job)
    platform.wake_dispatcher()
    return out


@router.get("", response_model=list[JobOut])
def list_jobs(user: UserDep, platform: PlatformDep,
              state: Annotated[JobState | None, Query()] = None) -> list[JobOut]:
    with platform.db.session() as s:
        return [job_runs.describe(s, platform.settings, j)
                for j in jobs.list_visible(s, user, state)]


@router.get("/{job_id}", response_model=JobOut, responses=JOB)
def show(job_id: IdPath, user: UserDep, platform: PlatformDep) -> JobOut:
    return _view(platform, user, job_id)


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
             responses=JOB)
def cancel(job_id: IdPath, user: UserDep, platform: PlatformDep) -> JobOut:
    """Stop the job; it becomes CANCELLED once Ray has stopped its processes."""
    jobs.request_cancel(platform.db, user, job_id)
    platform.wake_dispatcher()
    return _view(platform, user, job_id)


@router.get("/{job_id}/events", response_model=list[JobEventOut], responses=JOB)
def events(job_id: IdPath, user: UserDep, platform: PlatformDep) -> list[JobEventOut]:
    with platform.db.session() as s:
        return [JobEventOut.model_validate(e) for e in jobs.events(s, jobs.get(s, user, job_id))]


@router.get("/{job_id}/metrics", response_model=list[MetricOut], responses=JOB)
def metrics(job_id: IdPath, user: UserDep, platform: PlatformDep,
            name: Annotated[str | None, Query(max_length=128, pattern=NO_NUL_PATTERN)] = None,
            after: Annotated[int, Query(ge=0, le=MAX_METRIC_ID)] = 0) -> list[MetricOut]:
    """Metric points with id > ``after`` (pass the last id seen to get only new ones)."""
    with platform.db.session() as s:
        job = jobs.get(s, user, job_id)
        return [MetricOut.model_validate(m) for m in job_runs.metrics(s, job, name, after)]


@router.get("/{job_id}/outputs", response_model=list[OutputOut], responses=JOB)
def outputs(job_id: IdPath, user: UserDep, platform: PlatformDep) -> list[OutputOut]:
    with platform.db.session() as s:
        return [OutputOut.model_validate(o) for o in job_runs.outputs(s, jobs.get(s, user,
                                                                               job_id))]


@router.get("/{job_id}/outputs/{path:path}", response_class=FileResponse,
            responses={200: {"content": {"*/*": {
                "schema": {"type": "string", "format": "binary"}}}}, **JOB})
def output_file(job_id: IdPath, path: FilePathPath, user: UserDep, platform: PlatformDep,
                ) -> FileResponse:
    with platform.db.session() as s:
        row = job_runs.get_output(s, jobs.get(s, user, job_id), path)
    blob = platform.blobs.path(row.sha256)
    if not blob.is_file():
        raise NotFound(f"The stored content of output {path!r} is missing.")
    return FileResponse(blob, filename=PurePosixPath(row.path).name)


def _log_state(platform: Platform, user: User, job_id: str) -> tuple[int, bool]:
    """(log bytes stored, job is terminal) — what a follower needs each poll."""
    with platform.db.session() as s:
        job = jobs.get(s, user, job_id)
        return job.log_size, JobState(job.state).is_terminal()


async def _follow_log(platform: Platform, user: User, job_id: str, offset: int
                      ) -> AsyncIterator[bytes]:
    """Log bytes from ``offset`` as they arrive; ends once the job is terminal and drained."""
    while True:
        size, done = await to_thread.run_sync(_log_state, platform, user, job_id)
        while offset < size:
            data = await to_thread.run_sync(job_runs.read_log, platform.settings, job_id,
                                            offset, min(size - offset, 1 << 20))
            if not data:
                break
            offset += len(data)
            yield data
        if done:
            return
        await asyncio.sleep(FOLLOW_POLL_S)


@router.get("/{job_id}/logs", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "headers": {"X-Log-Size": {
                                 "description": "Bytes of log stored so far",
                                 "required": True, "schema": {"type": "integer"}}}},
                       **JOB})
async def logs(job_id: IdPath, user: UserDep, platform: PlatformDep,
               offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
               follow: bool = False) -> StreamingResponse:
    """The job's log (stdout and stderr of the runner and the task) from byte ``offset``.

    With ``follow=true`` the response stays open and streams new lines until the job ends;
    a client that loses the connection resumes with ``offset`` = bytes received.
    """
    size, _ = await to_thread.run_sync(_log_state, platform, user, job_id)
    headers = {"X-Log-Size": str(size), "Cache-Control": "no-store"}
    if follow:
        return StreamingResponse(_follow_log(platform, user, job_id, offset),
                                 media_type="text/plain; charset=utf-8", headers=headers)
    data = await to_thread.run_sync(job_runs.read_log, platform.settings, job_id, offset,
                                    max(0, size - offset))
    return StreamingResponse(iter([data]), media_type="text/plain; charset=utf-8",
                             headers=headers)


def _snapshot(platform: Platform, user: User, job_id: str, after: int
              ) -> tuple[JobOut, int, list[MetricOut]]:
    with platform.db.session() as s:
        job = jobs.get(s, user, job_id)
        points = [MetricOut.model_validate(m) for m in job_runs.metrics(s, job, None, after)]
        return job_runs.describe(s, platform.settings, job), job.log_size, points


@router.websocket("/{job_id}/ws")
async def watch(websocket: WebSocket, job_id: str) -> None:
    """Live job: ``{"type": "job"}`` on every change, ``log`` chunks, ``metrics`` points, then
    ``end``. Authenticate with the session cookie, a bearer header or ``?token=``."""
    platform: Platform = websocket.app.state.platform
    await websocket.accept()
    try:
        user = await to_thread.run_sync(current_user_ws, platform, websocket)
        await _stream(websocket, platform, user, job_id)
    except ClowderMLError as exc:
        await websocket.send_json({"type": "error", "error": exc.to_dict()})
        await websocket.close(code=4000 + min(exc.status, 999) % 1000)
    except WebSocketDisconnect:
        return


async def _stream(ws: WebSocket, platform: Platform, user: User, job_id: str) -> None:
    last_job: dict[str, Any] | None = None
    offset, after = 0, 0
    while True:
        job, size, points = await to_thread.run_sync(_snapshot, platform, user, job_id, after)
        if size > offset:
            data = await to_thread.run_sync(job_runs.read_log, platform.settings, job_id,
                                            offset, min(size - offset, 1 << 20))
            offset += len(data)
            await ws.send_json({"type": "log", "data": data.decode("utf-8", "replace")})
        if points:
            after = points[-1].id
            await ws.send_json({"type": "metrics",
                                "points": [json.loads(p.model_dump_json()) for p in points]})
        view = json.loads(job.model_dump_json())
        if view != last_job:
            last_job = view
            await ws.send_json({"type": "job", "job": view})
        if JobState(job.state).is_terminal() and offset >= size and not points:
            await ws.send_json({"type": "end", "job": view})
            await ws.close()
            return
        await asyncio.sleep(FOLLOW_POLL_S)


