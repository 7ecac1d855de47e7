"""The runner's side of the API: only a job token gets in, and only to its own job."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from clowder_ml.api.deps import PlatformDep
from clowder_ml.api.fields import FilePathPath
from clowder_ml.api.job_schemas import FinishAck, OutputOut, ReportAck, RunnerFinish, RunnerReport
from clowder_ml.api.responses import NAMES_RESOURCE, errors
from clowder_ml.db.models import Job
from clowder_ml.errors import AuthenticationRequired, NotFound, StorageError, StorageFull
from clowder_ml.services import job_runs, job_tokens
from clowder_ml.services.job_views import RunnerJob
from clowder_ml.services.paths import normalize_path

router = APIRouter(prefix="/api/v1/runner", tags=["runner"])
_bearer = HTTPBearer(auto_error=False, description="Job token (CLOWDER_ML_JOB_TOKEN)")
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]


def current_job(platform: PlatformDep,
                creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Job:
    """The job whose live token was sent; 401 for anything else (user tokens included)."""
    if creds is None:
        raise AuthenticationRequired("A job token is required.",
                                     "The runner reads it from CLOWDER_ML_JOB_TOKEN.")
    with platform.db.session() as s:
        job = job_tokens.resolve(s, creds.credentials)
        s.expunge(job)
    return job


JobDep = Annotated[Job, Depends(current_job)]


@router.get("/job", response_model=RunnerJob)
def runner_job(job: JobDep, platform: PlatformDep) -> RunnerJob:
    """The job's spec and its inputs' file manifests."""
    with platform.db.session() as s:
        return job_runs.runner_job(s, job)


@router.get("/blobs/{sha256}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}},
                       **errors(*NAMES_RESOURCE)})
def input_blob(sha256: Sha256, job: JobDep, platform: PlatformDep) -> FileResponse:
    """An input file's content by digest; any digest outside the job's inputs is 404."""
    with platform.db.session() as s:
        allowed = job_runs.can_read_blob(s, job, sha256)
    path = platform.blobs.path(sha256)
    if not allowed or not path.is_file():
        raise NotFound(f"No input blob {sha256} for this job.")
    return FileResponse(path, media_type="application/octet-stream")


@router.post("/report", response_model=ReportAck)
def report(body: RunnerReport, job: JobDep, platform: PlatformDep) -> ReportAck:
    cancel, log_offset = job_runs.record_report(platform.settings, platform.db, job,
                                               body.to_report())
    return ReportAck(cancel_requested=cancel, log_offset=log_offset)


@router.put("/outputs/{path:path}", response_model=OutputOut,
            responses=errors(StorageFull, StorageError),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
async def put_output(path: FilePathPath, request: Request, job: JobDep,
                     platform: PlatformDep) -> OutputOut:
    """Store one output file, streamed to a blob (any size; content-addressed)."""
    normalize_path(path)  # refuse a bad path before reading the body
    with platform.blobs.writer() as writer:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) >= 1 << 20:  # disk writes in a thread, a MiB at a time
                await to_thread.run_sync(writer.write, bytes(buf))
                buf.clear()
        await to_thread.run_sync(writer.write, bytes(buf))
        info = await to_thread.run_sync(writer.commit)
    row = await to_thread.run_sync(job_runs.record_output, platform.db, job, path, info)
    return OutputOut.model_validate(row)


@router.post("/finish", response_model=FinishAck)
def finish(body: RunnerFinish, job: JobDep, platform: PlatformDep) -> FinishAck:
    """SUCCEEDED with the result, or FAILED with a one-line reason; the token ends here."""
    done = job_runs.finish(platform, job, body.status, body.result, body.reason)
    platform.wake_dispatcher()
    return FinishAck(state=done.state)
