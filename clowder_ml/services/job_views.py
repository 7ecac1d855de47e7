"""What the services show of a job: the API's view of it and what the runner is sent.

Plain response data (pydantic models, so the routers can return them as they are); the
request models of the same endpoints stay in :mod:`clowder_ml.api.job_schemas`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class JobOut(BaseModel):
    id: str
    task: str
    owner: str
    state: str
    reason: str | None
    waiting_for: str | None
    queue_position: int | None
    attempt: int
    cancel_requested: bool
    spec: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    log_tail: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    updated_at: datetime


class RunnerFile(BaseModel):
    path: str
    sha256: str
    size: int


class RunnerInput(BaseModel):
    kind: str
    ref: str
    name: str = Field(description="owner:name, for messages")
    version: int | None
    mount: str | None
    files: list[RunnerFile]


class RunnerJob(BaseModel):
    id: str
    task: str
    attempt: int
    spec: dict[str, Any]
    inputs: list[RunnerInput]
